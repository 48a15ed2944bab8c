"""Export a model directory for other runtimes: ONNX with the preprocessing inside the graph.

The ONNX graph carries its own preprocessing: a client feeds RGB pixels (uint8, or floats in
0..255) of shape ``(N, presize, presize, 3)`` — the image resized so its shorter side is
``presize`` and centre-cropped — and gets class scores (``logits``; a multi-label model gives
each label's sigmoid probability instead, as ``probabilities``). Dtype conversion, the resize to
``size`` and the normalisation happen inside the graph, exactly as in validation.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from petclf.core.defaults import DEFAULT_THRESHOLD, MULTI_LABEL, SINGLE_LABEL
from petclf.core.errors import PetclfError, UsageError
from petclf.data.images import Presizer
from petclf.data.pipeline import Pipeline
from petclf.runtime.modeldir import META_FILE, WEIGHTS_FILE, load_model
from petclf.runtime.preprocess import PixelClassifier

__all__ = ["HASH_KEY", "export_onnx", "model_hash", "onnx_input"]

#: Metadata key of an exported graph naming the model files it was made from.
HASH_KEY = "petclf.model_sha256"
# Raised when the export changes in a way that makes cached graphs wrong (inputs, outputs, opset).
_GRAPH_VERSION = "1"


def onnx_input(image: str | Path | Image.Image, pipeline: Pipeline, *, dtype: str = "uint8") -> np.ndarray:
    """The (1, presize, presize, 3) array an exported model expects for one image (a client's job).

    Example: ``session.run(None, {"pixels": onnx_input("cat.jpg", pipeline)})``.
    """
    pixels = Presizer(pipeline.presize)(image)
    return pixels[None].astype(np.uint8 if dtype == "uint8" else np.float32)


def model_hash(model_dir: str | Path) -> str:
    """SHA-256 of a model directory's weights and petclf.json (what an exported graph is made from).

    Example: ``model_hash("runs/pets/model")`` → ``'3f1c…'``.
    """
    digest = hashlib.sha256(_GRAPH_VERSION.encode())
    for name in (WEIGHTS_FILE, META_FILE):
        with open(Path(model_dir) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def export_onnx(model_dir: str | Path, out: str | Path, *, dtype: str = "uint8", opset: int = 18) -> Path:
    """Write ``model_dir``'s network as ONNX with preprocessing inside and a dynamic batch dimension.

    Example: ``export_onnx("runs/pets/model", "pets.onnx")`` → ``Path('pets.onnx')``.
    """
    if dtype not in ("uint8", "float32"):
        raise UsageError(f"dtype must be 'uint8' or 'float32'. Received: dtype={dtype!r}.")
    try:
        import onnxscript  # noqa: F401, PLC0415 - the exporter's dependency
    except ImportError:
        raise UsageError("ONNX export needs the onnx extras: pip install 'petclf[onnx]'.") from None
    loaded = load_model(model_dir)
    multi_label = loaded.meta.get("task") == MULTI_LABEL
    wrapper = PixelClassifier(loaded.model, loaded.pipeline).eval()
    if multi_label:
        wrapper = nn.Sequential(wrapper, nn.Sigmoid()).eval()
    p = loaded.pipeline.presize
    example = torch.zeros(2, p, p, 3, dtype=torch.uint8 if dtype == "uint8" else torch.float32)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        program = torch.onnx.export(wrapper, (example,), dynamo=True, input_names=["pixels"],
                                    output_names=["probabilities" if multi_label else "logits"],
                                    dynamic_shapes=({0: batch},), opset_version=opset, verbose=False)
    except Exception as err:  # the exporter raises many kinds; the user needs the reason, not the stack
        raise PetclfError(f"ONNX export of {loaded.meta['arch']['name']} failed: {str(err).splitlines()[0]}") from None
    info = {"classes": json.dumps(list(loaded.classes)), "size": str(loaded.pipeline.size),
            "presize": str(p), "input": f"RGB pixels (N, {p}, {p}, 3) {dtype}, 0..255, shorter side resized "
                                       f"to {p} then centre-cropped",
            "task": loaded.meta.get("task", SINGLE_LABEL)}
    # Which model files the graph comes from: backends refuse a graph whose model changed since.
    info[HASH_KEY.removeprefix("petclf.")] = model_hash(model_dir)
    if multi_label:
        thresholds = loaded.meta.get("thresholds") or [DEFAULT_THRESHOLD] * len(loaded.classes)
        info["thresholds"] = json.dumps([float(t) for t in thresholds])
    program.model.metadata_props.update({f"petclf.{key}": value for key, value in info.items()})
    program.save(str(out))  # one write, metadata included
    return out
