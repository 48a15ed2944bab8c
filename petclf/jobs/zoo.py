"""Pretrained ImageNet models: top-5 predictions for images, and a side-by-side comparison of networks.

``compare`` needs no weights: parameters and GFLOPs are counted on the network, latency is
measured on it, and weight-file size and ImageNet error come from torchvision's weight metadata.
"""
from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
import torchvision
from matplotlib.figure import Figure
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from petclf.core.destinations import output_dir
from petclf.core.errors import UsageError, require_positive
from petclf.data.images import read_rgb
from petclf.evaluate.plots import save_figure
from petclf.learn.models import download_torchvision, read_state_dict, torchvision_arch_names
from petclf.runtime.predict import top_classes

__all__ = ["DEFAULT_COMPARE", "classify", "compare", "compare_to", "plot_compare", "write_compare"]

DEFAULT_COMPARE = ("alexnet", "vgg16", "googlenet", "resnet18", "resnet50", "resnet101", "resnext50_32x4d",
                   "densenet121", "mobilenet_v2", "shufflenet_v2_x1_0", "squeezenet1_0")


def _weights_enum(arch: str):
    if arch not in torchvision_arch_names():
        raise UsageError(f"{arch!r} is not a torchvision classification model; see torchvision.models.list_models().")
    try:
        return torchvision.models.get_model_weights(arch).DEFAULT
    except ValueError:
        raise UsageError(f"torchvision publishes no ImageNet weights for {arch}.") from None


def classify(images: Sequence[str | Path], *, arch: str = "resnet101", weights: str | Path | None = None,
             topk: int = 5) -> list[list[tuple[str, float]]]:
    """ImageNet top-``topk`` labels with probabilities for each image, from a pretrained torchvision model.

    Offline, pass ``weights=`` a local copy of the torchvision weight file.

    Example: ``classify(["dog.jpg"], arch="resnet101")[0][0]`` → ``('golden retriever', 0.87)``.
    """
    require_positive(topk=topk)
    meta = _weights_enum(arch)
    builder = torchvision.models.get_model_builder(arch)
    if weights is not None:
        model = builder(weights=None)
        model.load_state_dict(read_state_dict(weights))
    else:
        model = download_torchvision(arch, builder)
    model.eval()
    preprocess = meta.transforms()
    batch = torch.stack([preprocess(read_rgb(p)) for p in images])
    with torch.inference_mode():
        probs = model(batch).softmax(dim=1)
    return top_classes(probs, meta.meta["categories"], topk)


def _gflops(model: nn.Module) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    # torchvision's table counts multiply-adds; the counter counts a multiply and an add as two.
    return counter.get_total_flops() / 2 / 1e9


def _latency_ms(model: nn.Module, device: torch.device, runs: int) -> float:
    x = torch.zeros(1, 3, 224, 224, device=device)
    model = model.to(device)
    times = []
    with torch.inference_mode():
        for i in range(runs + 2):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:  # the first runs pay for allocation and kernel selection
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def compare(archs: Sequence[str] = DEFAULT_COMPARE, *, runs: int = 5) -> pd.DataFrame:
    """One row per architecture: parameters, weight-file MB, GFLOPs at 224 px, batch-1 CPU (and GPU)
    latency in ms, ImageNet top-1/top-5 error (%) of torchvision's default weights.

    Example: ``compare(["resnet18", "resnet50"], runs=3)[["arch", "params", "gflops"]]``.
    """
    require_positive(runs=runs)
    rows = []
    for arch in archs:
        meta = _weights_enum(arch)
        model = torchvision.models.get_model(arch, weights=None).eval()
        metrics = meta.meta.get("_metrics", {}).get("ImageNet-1K", {})
        row = {"arch": arch, "weights": str(meta).split(".")[-1],
               "params": sum(p.numel() for p in model.parameters()),
               "size_mb": meta.meta.get("_file_size", math.nan), "gflops": _gflops(model),
               "cpu_ms": _latency_ms(model, torch.device("cpu"), runs),
               "gpu_ms": _latency_ms(model, torch.device("cuda"), runs) if torch.cuda.is_available() else math.nan,
               "top1_err": 100 - metrics["acc@1"] if "acc@1" in metrics else math.nan,
               "top5_err": 100 - metrics["acc@5"] if "acc@5" in metrics else math.nan,
               "notes": "" if torch.cuda.is_available() else "gpu_ms: no CUDA GPU here"}
        if "acc@1" not in metrics:
            row["notes"] += "; no published ImageNet metrics"
        rows.append(row)
    return pd.DataFrame(rows)


def plot_compare(table: pd.DataFrame, path: str | Path) -> Path:
    """Bubble chart: x top-1 error, y CPU latency, bubble area ∝ weight-file size."""
    fig = Figure(figsize=(8, 6))
    ax = fig.add_subplot()
    sizes = table["size_mb"].fillna(10).clip(lower=5)
    ax.scatter(table["top1_err"], table["cpu_ms"], s=sizes * 4, alpha=0.5)
    for row in table.itertuples():
        ax.annotate(row.arch, (row.top1_err, row.cpu_ms), fontsize=8, ha="center")
    ax.set(xlabel="ImageNet top-1 error (%)", ylabel="CPU latency, batch 1 (ms)",
           title="error vs latency (bubble area: weight file size)")
    return save_figure(fig, path)


def write_compare(table: pd.DataFrame, out: str | Path) -> tuple[Path, Path]:
    """Write ``compare.csv`` and the bubble chart ``compare.png`` into ``out``; return both paths."""
    out = output_dir(out)
    table.to_csv(out / "compare.csv", index=False)
    return out / "compare.csv", plot_compare(table, out / "compare.png")


def compare_to(out: str | Path, archs: Sequence[str] = DEFAULT_COMPARE, *,
               runs: int = 5) -> tuple[pd.DataFrame, Path, Path]:
    """``compare`` then ``write_compare`` into ``out``, whose writability is checked before the measuring starts.

    Example: ``table, csv, chart = compare_to("petclf-compare", ["resnet18", "resnet50"])``.
    """
    output_dir(out)
    table = compare(archs, runs=runs)
    return (table, *write_compare(table, out))
