"""Export a model directory for other runtimes: ONNX with the preprocessing inside the graph.

The ONNX graph carries its own preprocessing: a client feeds RGB pixels (uint8, or floats in
0..255) of shape ``(N, presize, presize, 3)`` — the image resized so its shorter side is
``presize`` and centre-cropped — and gets class scores (``logits``; a multi-label model gives
each label's sigmoid probability instead, as ``probabilities``). Dtype conversion, the resize to
``size`` and the normalisation happen inside the graph, exactly as in validation.

A single-label model's graph also outputs ``probabilities`` (softmax of the logits divided by the
model's temperature, as ``Predictor`` computes them) and, when the model has an "unknown" detector,
``ood_score`` (N,) and ``unknown`` (N,) booleans (score over the stored threshold). ``logits`` stays
the first output, so clients that ask for it by name are unchanged. The temperature and the
threshold are also in the metadata (``petclf.temperature``, ``petclf.unknown``).
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
from petclf.runtime.modeldir import META_FILE, WEIGHTS_FILE, LoadedModel, load_model
from petclf.runtime.ood import features_at, split_network
from petclf.runtime.preprocess import PixelClassifier
from petclf.runtime.trust import OOD_FILE, ScoredNetwork, Unknown, load_unknown

__all__ = ["HASH_KEY", "example_pixels", "export_metadata", "export_onnx", "export_wrapper", "model_hash",
           "onnx_input"]

#: Metadata key of an exported graph naming the model files it was made from.
HASH_KEY = "petclf.model_sha256"
# Raised when the export changes in a way that makes cached graphs wrong (inputs, outputs, opset): 2 added the
# calibrated probabilities and the "unknown" detector's outputs.
_GRAPH_VERSION = "2"


def onnx_input(image: str | Path | Image.Image, pipeline: Pipeline, *, dtype: str = "uint8") -> np.ndarray:
    """The (1, presize, presize, 3) array an exported model expects for one image (a client's job).

    Example: ``session.run(None, {"pixels": onnx_input("cat.jpg", pipeline)})``.
    """
    pixels = Presizer(pipeline.presize)(image)
    return pixels[None].astype(np.uint8 if dtype == "uint8" else np.float32)


class _Calibrated(nn.Module):
    """Pixels in → logits, calibrated probabilities and (with a detector) the OOD score and the unknown flag."""

    def __init__(self, model: nn.Module, pipeline: Pipeline, *, temperature: float, detector: Unknown | None) -> None:
        super().__init__()
        if detector is not None:
            model = ScoredNetwork(*split_network(model, at=features_at(detector.score.kind)), detector.score)
        self.net = PixelClassifier(model, pipeline)
        self.temperature, self.detector = float(temperature), detector

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(pixels)
        if self.detector is None:
            return out, (out / self.temperature).softmax(dim=1)
        logits, score = out[:, :-1], out[:, -1]
        return logits, (logits / self.temperature).softmax(dim=1), score, score > self.detector.threshold


def model_hash(model_dir: str | Path) -> str:
    """SHA-256 of a model directory's weights, petclf.json and "unknown" detector (what a graph is made from).

    Example: ``model_hash("runs/pets/model")`` → ``'3f1c…'``.
    """
    digest = hashlib.sha256(_GRAPH_VERSION.encode())
    for name in (WEIGHTS_FILE, META_FILE, OOD_FILE):
        path = Path(model_dir) / name
        if name == OOD_FILE and not path.exists():
            continue
        with open(path, "rb") as f:
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
    loaded, wrapper, outputs = export_wrapper(model_dir)
    example = example_pixels(loaded.pipeline, batch=2, dtype=dtype)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        program = torch.onnx.export(wrapper, (example,), dynamo=True, input_names=["pixels"],
                                    output_names=outputs, dynamic_shapes=({0: batch},), opset_version=opset,
                                    verbose=False)
    except Exception as err:  # the exporter raises many kinds; the user needs the reason, not the stack
        raise PetclfError(f"ONNX export of {loaded.meta['arch']['name']} failed: {str(err).splitlines()[0]}") from None
    info = export_metadata(loaded, outputs=outputs, dtype=dtype)
    # Which model files the graph comes from: backends refuse a graph whose model changed since.
    info[HASH_KEY.removeprefix("petclf.")] = model_hash(model_dir)
    program.model.metadata_props.update({f"petclf.{key}": value for key, value in info.items()})
    program.save(str(out))  # one write, metadata included
    return out


def export_wrapper(model_dir: str | Path) -> tuple[LoadedModel, nn.Module, list[str]]:
    """The loaded model, the module every export target converts (pixels in, preprocessing inside) and its output
    names: a single-label model gives ``logits``, calibrated ``probabilities`` and, with an "unknown" detector,
    ``ood_score`` and ``unknown``; a multi-label model each label's ``probabilities``.

    Example: ``export_wrapper(d)`` → ``(LoadedModel(...), _Calibrated(...), ["logits", "probabilities"])``.
    """
    loaded = load_model(model_dir)
    if loaded.meta.get("task") == MULTI_LABEL:
        wrapper = nn.Sequential(PixelClassifier(loaded.model, loaded.pipeline), nn.Sigmoid()).eval()
        return loaded, wrapper, ["probabilities"]
    detector = load_unknown(model_dir, loaded.meta, loaded.model)
    wrapper = _Calibrated(loaded.model, loaded.pipeline, temperature=loaded.temperature,
                          detector=detector).eval()
    return loaded, wrapper, ["logits", "probabilities"] + (["ood_score", "unknown"] if detector is not None else [])


def example_pixels(pipeline: Pipeline, *, batch: int, dtype: str = "uint8") -> torch.Tensor:
    """Zero (batch, presize, presize, 3) pixels of the export's input type, to trace a wrapper with.

    Example: ``example_pixels(loaded.pipeline, batch=1).shape`` → ``torch.Size([1, 96, 96, 3])``.
    """
    p = pipeline.presize
    return torch.zeros(batch, p, p, 3, dtype=torch.uint8 if dtype == "uint8" else torch.float32)


def export_metadata(loaded: LoadedModel, *, outputs: list[str], dtype: str = "uint8") -> dict[str, str]:
    """The facts a client of an exported graph needs (classes, sizes, input, task), as strings for its metadata.

    Example: ``json.loads(export_metadata(loaded)["classes"])`` → ``["cat", "dog"]``.
    """
    p = loaded.pipeline.presize
    info = {"classes": json.dumps(list(loaded.classes)), "size": str(loaded.pipeline.size),
            "presize": str(p), "input": f"RGB pixels (N, {p}, {p}, 3) {dtype}, 0..255, shorter side resized "
                                       f"to {p} then centre-cropped",
            "task": loaded.meta.get("task", SINGLE_LABEL), "outputs": json.dumps(outputs)}
    if loaded.meta.get("task") != MULTI_LABEL:
        info["temperature"] = repr(loaded.temperature)
        if loaded.meta.get("unknown") is not None:
            unknown = loaded.meta["unknown"]
            info["unknown"] = json.dumps({"score": unknown["kind"], "threshold": unknown["threshold"],
                                          "accept": unknown["accept"]})
    if loaded.meta.get("task") == MULTI_LABEL:
        thresholds = loaded.meta.get("thresholds") or [DEFAULT_THRESHOLD] * len(loaded.classes)
        info["thresholds"] = json.dumps([float(t) for t in thresholds])
    return info
