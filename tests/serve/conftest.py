"""A tiny model directory written without fastai, images made from numbers, and a real uvicorn server on a free port."""
from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from petclf.data.pipeline import make_pipeline
from petclf.runtime.modeldir import write_model_dir
from petclf.runtime.network import build_network

from ..web import ThreadServer

# One class name is HTML: the page must show it as text, never run it.
CLASSES = ("cat", "dog", "fish", "<b>owl</b>")
SIZE = 32  # presize 48: a forward of a batch costs milliseconds on two cores


def make_model_dir(directory: Path, *, classes=CLASSES, size: int = SIZE, seed: int = 0,
                   summary: dict | None = None, extra: dict | None = None) -> Path:
    """An untrained resnet18 saved as `save_model` saves one (petclf.json as it writes it), without fastai;
    ``extra`` adds fields to petclf.json (a multi-label task and its thresholds)."""
    torch.manual_seed(seed)
    net = build_network("resnet18", "torchvision", len(classes)).eval()
    pipeline = make_pipeline(size=size)
    meta = {
        "arch": {"name": "resnet18", "source": "torchvision", "n_out": len(classes), "head": "fastai-default"},
        "classes": list(classes),
        "preprocessing": {"size": pipeline.size, "presize": pipeline.presize, "augment": pipeline.augment,
                          "mean": list(pipeline.mean), "std": list(pipeline.std)},
        "data": {"layout": "classes", "label_pat": None, "valid_pct": 0.2, "seed": 42},
        "precision": "fp32",
        "versions": {"petclf": "0.1.0", "torch": torch.__version__},
        "summary": summary if summary is not None else {"error_rate": 0.125, "accuracy": 0.875, "n_valid": 40},
        **(extra or {}),
    }
    return write_model_dir(directory, net.state_dict(), meta)


def image_bytes(seed: int, *, size: tuple[int, int] = (60, 44), fmt: str = "PNG") -> bytes:
    """A distinct noisy image per seed, encoded."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("serve") / "pets")


@pytest.fixture(scope="module")
def server(model_dir):
    """The app serving ``model_dir`` at fp32 (the same scores as Predictor at fp32 for any batch)."""
    from petclf.serve import ServeOptions, app

    options = ServeOptions(precision="fp32", max_body_mb=2, max_images=16, timeout_s=20, access_log=False)
    running = ThreadServer(app([model_dir], options=options)).start()
    yield running
    running.stop()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
