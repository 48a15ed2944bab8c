"""What a heat map costs: seconds per image for ``Explainer.explain_pixels`` against ``Predictor`` on one image.

Usage:  python benchmarks/explain_cost.py [--arch resnet34] [--size 224] [--runs 10] [--quick]

Builds an untrained model directory of ``--arch`` (torchvision or timm; the weights do not change the cost),
then times on the CPU, after one warm-up each: ``Predictor.logits`` of one image (prediction's own path:
fused, channels-last, bf16 where it pays), and ``Explainer.explain_pixels`` of the same image for its
predicted class (a no-grad forward for the probabilities, then one float32 forward and backward),
and for two classes at once (the report draws the predicted and the actual class). Prints one JSON line.
``--quick`` runs resnet18 at 64 px, 2 runs, to check that it works.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from petclf.data.pipeline import make_pipeline  # noqa: E402
from petclf.runtime.explain import Explainer  # noqa: E402
from petclf.runtime.modeldir import write_model_dir  # noqa: E402
from petclf.runtime.network import build_network  # noqa: E402
from petclf.runtime.predict import Predictor  # noqa: E402


def _model_dir(directory: Path, arch: str, size: int) -> Path:
    import torchvision  # noqa: PLC0415

    source = "torchvision" if arch in torchvision.models.list_models() else "timm"
    net = build_network(arch, source, 10)
    pipeline = make_pipeline(size=size)
    meta = {"arch": {"name": arch, "source": source, "n_out": 10, "head": "fastai-default"},
            "classes": [f"c{i}" for i in range(10)],
            "preprocessing": {"size": size, "presize": pipeline.presize, "augment": pipeline.augment,
                              "mean": list(pipeline.mean), "std": list(pipeline.std)},
            "precision": "fp32", "versions": {"torch": torch.__version__}}
    return write_model_dir(directory, net.state_dict(), meta)


def _median_s(work, runs: int) -> float:
    work()  # warm-up: kernels chosen, memory allocated
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.arch, args.size, args.runs = "resnet18", 64, 2
    with tempfile.TemporaryDirectory() as tmp:
        model = _model_dir(Path(tmp) / "model", args.arch, args.size)
        predictor = Predictor(model, device="cpu")
        explainer = Explainer(model, device="cpu")
        presize = predictor.pipeline.presize
        pixels = np.random.default_rng(0).integers(0, 256, (presize, presize, 3), dtype=np.uint8)
        batch = torch.from_numpy(pixels[None])

        def predict() -> None:
            with torch.inference_mode():
                predictor.scores(batch)

        result = {"arch": args.arch, "size": args.size, "threads": torch.get_num_threads(),
                  "predict_s": _median_s(predict, args.runs),
                  "explain_s": _median_s(lambda: explainer.explain_pixels(pixels), args.runs),
                  "explain_2_classes_s": _median_s(lambda: explainer.explain_pixels(pixels, topk=2), args.runs),
                  "precision_predict": predictor.precision}
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
