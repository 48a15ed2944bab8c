"""Export a model directory to the formats devices run: ONNX, OpenVINO IR, TFLite (LiteRT) and Core ML.

Every target is converted from the same module as the ONNX export (``export_wrapper``: raw pixels
in, dtype conversion, resize to ``size`` and normalisation inside), so each gets the ONNX graph's
preprocessing and outputs. What a client feeds each one:

- **onnx** (``.onnx``): ``pixels`` (N, presize, presize, 3) uint8 (or float32 0..255), RGB, the image's
  shorter side resized to presize and centre-cropped (``onnx_input`` does it); dynamic batch. Facts in
  the graph's metadata (``petclf.classes``, ``petclf.size``, ...).
- **openvino** (``.xml`` + ``.bin``): converted from that ONNX graph with ``openvino.convert_model``, so the
  same input, outputs and dynamic batch; weights kept fp32 (``compress_to_fp16=False``: answers within
  1e-4 of PyTorch). Facts in the IR's ``rt_info`` under ``petclf``.
- **tflite** (``.tflite`` + ``.tflite.json``): converted with litert-torch; input ``pixels`` (1, presize,
  presize, 3) uint8 or float32, batch of one (as phones run it). TFLite has no free-form metadata here,
  so the facts go to the JSON file beside it.
- **coreml** (``.mlpackage``): converted with coremltools from ``torch.export``; input ``image``, a Core
  ML image (RGB, presize × presize; iOS's Vision does the shorter-side resize and centre crop with
  ``imageCropAndScaleOption = .centerCrop``, with its own resampling), batch of one, computed in fp32.
  Facts in ``user_defined_metadata``. Conversion and the spec work on Linux; running it needs macOS/iOS.

Multi-label models output ``probabilities`` (each label's sigmoid) instead of ``logits``, in every format.
"""
from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from petclf.core.errors import PetclfError, UsageError
from petclf.runtime.export import example_pixels, export_metadata, export_onnx, export_wrapper
from petclf.runtime.modeldir import LoadedModel, load_model

__all__ = ["EXTRAS", "FORMATS", "export_coreml", "export_model", "export_openvino", "export_tflite", "written_bytes"]

#: Export formats, each with the pip extra that installs its converter.
EXTRAS = {"onnx": "onnx", "openvino": "openvino", "tflite": "tflite", "coreml": "coreml"}
FORMATS = tuple(EXTRAS)
#: The module each format's converter imports (its absence names the extra to install).
_CONVERTERS = {"onnx": "onnxscript", "openvino": "openvino", "tflite": "litert_torch", "coreml": "coremltools"}


def export_model(model_dir: str | Path, out: str | Path, *, format: str, dtype: str = "uint8") -> Path:  # noqa: A002
    """Write ``model_dir``'s network in ``format`` (one of ``FORMATS``) to ``out``; returns the written path.

    Example: ``export_model("runs/pets/model", "pets.xml", format="openvino")`` → ``Path('pets.xml')``.
    """
    writers: dict[str, Callable[..., Path]] = {"onnx": export_onnx, "openvino": export_openvino,
                                               "tflite": export_tflite, "coreml": export_coreml}
    if format not in writers:
        raise UsageError(f"unknown export format {format!r}: expected one of {', '.join(FORMATS)}.")
    if dtype not in ("uint8", "float32"):
        raise UsageError(f"dtype must be 'uint8' or 'float32'. Received: dtype={dtype!r}.")
    if format == "coreml":
        if dtype != "uint8":
            raise UsageError("a Core ML export takes a Core ML image (no --dtype choice): leave --dtype out.")
        return export_coreml(model_dir, out)
    return writers[format](model_dir, out, dtype=dtype)


def written_bytes(path: str | Path) -> int:
    """Bytes an export wrote at ``path``: the file, an OpenVINO ``.xml`` with its ``.bin``, or a whole ``.mlpackage``.

    Example: ``written_bytes("pets.xml")`` → the size of ``pets.xml`` plus ``pets.bin``.
    """
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    extra = path.with_suffix(".bin") if path.suffix == ".xml" else Path(f"{path}.json")
    return path.stat().st_size + (extra.stat().st_size if extra.is_file() else 0)


def _require(format: str) -> None:  # noqa: A002
    """Import the converter of ``format`` or say which extra installs it (a UsageError: exit 2 from the CLI)."""
    try:
        __import__(_CONVERTERS[format])
    except ImportError:
        hint = " (in its own environment: see README, 'Model files and export')" if format == "tflite" else ""
        raise UsageError(f"exporting to {format} needs its converter ({_CONVERTERS[format]}), which is not "
                         f"installed: pip install 'petclf[{EXTRAS[format]}]'{hint}.") from None


def _failed(format: str, loaded: LoadedModel, err: Exception) -> PetclfError:  # noqa: A002
    """The converters raise many kinds: the user needs the reason, not the stack."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return PetclfError(f"{format} export of {loaded.meta['arch']['name']} failed: {first[:300]}")


def export_openvino(model_dir: str | Path, out: str | Path, *, dtype: str = "uint8") -> Path:
    """Write OpenVINO IR (``out`` as ``.xml``, weights in the ``.bin`` beside it) converted from the ONNX export.

    Compile it with ``{"INFERENCE_PRECISION_HINT": "f32"}`` for PyTorch's answers: on CPUs with bf16 units
    OpenVINO otherwise computes in bf16.

    Example: ``export_openvino("runs/pets/model", "pets.xml")``; then
    ``openvino.Core().compile_model("pets.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({"pixels": px})``
    with ``px = onnx_input("cat.jpg", pipeline)``.
    """
    _require("onnx")
    _require("openvino")
    import openvino as ov  # noqa: PLC0415 - an optional extra

    loaded = load_model(model_dir)
    out = Path(out).with_suffix(".xml")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model_dir, Path(tmp) / "model.onnx", dtype=dtype)
        try:
            model = ov.convert_model(str(onnx_path))
        except Exception as err:  # noqa: BLE001
            raise _failed("openvino", loaded, err) from None
    outputs = [output.get_any_name() for output in model.outputs]
    for key, value in export_metadata(loaded, outputs=outputs, dtype=dtype).items():
        model.set_rt_info(value, ["petclf", key])
    # fp32 weights: fp16 halves the file but moved the logits of a one-epoch resnet18 by 0.018 (fp32: 1.4e-5).
    ov.save_model(model, str(out), compress_to_fp16=False)
    return out


def export_tflite(model_dir: str | Path, out: str | Path, *, dtype: str = "uint8") -> Path:
    """Write a TFLite (LiteRT) model converted with litert-torch, and its facts as JSON beside it (``OUT.json``).

    Example: ``export_tflite("runs/pets/model", "pets.tflite")``; then with ``ai_edge_litert``'s
    ``Interpreter("pets.tflite")``, set ``pixels`` to ``onnx_input("cat.jpg", pipeline)`` and invoke.
    """
    _require("tflite")
    import litert_torch  # noqa: PLC0415 - an optional extra, installed in its own environment

    loaded, wrapper, outputs = export_wrapper(model_dir)
    example = example_pixels(loaded.pipeline, batch=1, dtype=dtype)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        edge = litert_torch.convert(_Named(_global_max_pools(wrapper), outputs).eval(),
                                    sample_kwargs={"pixels": example})
        edge.export(str(out))
    except Exception as err:  # noqa: BLE001
        raise _failed("tflite", loaded, err) from None
    info = export_metadata(loaded, outputs=outputs, dtype=dtype)
    info["input"] = info["input"].replace("(N,", "(1,")
    Path(f"{out}.json").write_text(json.dumps(info, indent=1) + "\n")
    return out


def export_coreml(model_dir: str | Path, out: str | Path) -> Path:
    """Write a Core ML ``.mlpackage`` (image input, fp32) converted with coremltools from ``torch.export``.

    Conversion and the spec are checked on Linux; predicting with it needs macOS or iOS (Core ML's runtime).

    Example: ``export_coreml("runs/pets/model", "Pets.mlpackage")``; on a Mac,
    ``coremltools.models.MLModel("Pets.mlpackage").predict({"image": pil_image_presized})["logits"]``.
    """
    _require("coreml")
    import coremltools as ct  # noqa: PLC0415 - an optional extra

    loaded, wrapper, outputs = export_wrapper(model_dir)
    p = loaded.pipeline.presize
    example = torch.rand(1, 3, p, p) * 255
    out = Path(out)
    if out.suffix != ".mlpackage":
        out = out.with_name(out.name + ".mlpackage")
    try:
        program = torch.export.export(_ChannelsFirst(wrapper).eval(), (example,)).run_decompositions({})
        # Core ML images reach the network as floats 0..255 (scale 1, bias 0): the wrapper's own input range.
        mlmodel = ct.convert(program, inputs=[ct.ImageType(name="image", shape=(1, 3, p, p),
                                                           color_layout=ct.colorlayout.RGB)],
                             outputs=[ct.TensorType(name=name) for name in outputs], convert_to="mlprogram",
                             compute_precision=ct.precision.FLOAT32,
                             minimum_deployment_target=ct.target.iOS16)
    except Exception as err:  # noqa: BLE001
        raise _failed("coreml", loaded, err) from None
    info = export_metadata(loaded, outputs=outputs)
    info["input"] = (f"Core ML image 'image', RGB, {p}x{p}: the photo's shorter side resized to {p} "
                     "and centre-cropped (Vision: imageCropAndScaleOption = .centerCrop)")
    mlmodel.user_defined_metadata.update({f"petclf.{key}": value for key, value in info.items()})
    mlmodel.short_description = f"petclf {loaded.meta['arch']['name']}: {len(loaded.classes)} classes"
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    mlmodel.save(str(out))
    return out


def _global_max_pools(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose ``AdaptiveMaxPool2d(1)`` layers (the head's ``ConcatPool2d``) are ``_GlobalMax``:
    the same values, and litert-torch has no lowering for ``adaptive_max_pool2d``."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.AdaptiveMaxPool2d) and child.output_size in (1, (1, 1)):
                setattr(parent, name, _GlobalMax())
    return module


class _GlobalMax(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3), keepdim=True)


class _Named(nn.Module):
    """The wrapper's outputs as a dict, so that converters which name outputs by dict keys use the ONNX names."""

    def __init__(self, inner: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.inner, self.names = inner, names

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.inner(pixels)
        return dict(zip(self.names, out if isinstance(out, (tuple, list)) else (out,)))


class _ChannelsFirst(nn.Module):
    """(N, 3, H, W) image in (Core ML's image layout) → the wrapper's (N, H, W, 3) pixels."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.inner(image.permute(0, 2, 3, 1))
