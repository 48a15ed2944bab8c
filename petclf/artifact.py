"""Model directories: weights in safetensors, everything else in JSON; nothing is ever unpickled.

A model directory holds ``model.safetensors`` (tensors only) and ``petclf.json`` (format
version, architecture, classes, preprocessing, library versions, training summary), which
is all ``load_model`` needs to rebuild the network offline.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import fastai
import torch
import torchvision
from fastai.learner import Learner
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .atomic import atomic_path, write_json_atomic
from .data import Pipeline
from .errors import ModelFileError, UsageError
from .learner import run_spec
from .modelcheck import FORMAT, FORMAT_VERSION, check_weights_header, read_meta_file
from .models import BuiltModel, build_model

__all__ = ["FORMAT_VERSION", "LoadedModel", "save_model", "load_model", "read_meta"]

WEIGHTS_FILE = "model.safetensors"
META_FILE = "petclf.json"


@dataclass(frozen=True)
class LoadedModel:
    """A rebuilt network in eval mode with the facts needed to feed it and read its output."""

    model: nn.Module = field(repr=False)
    classes: tuple[str, ...]
    pipeline: Pipeline
    meta: dict = field(repr=False)


def _versions() -> dict[str, str]:
    from . import __version__  # noqa: PLC0415 - avoids an import cycle

    return {"petclf": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "fastai": fastai.__version__}


def save_model(learn: Learner, directory: str | Path, *, summary: dict | None = None) -> Path:
    """Write ``learn``'s network as a petclf model directory and return its path.

    Example: ``save_model(learn, "runs/pets/model")`` → ``Path('runs/pets/model')``.
    """
    spec = run_spec(learn)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} is a file: expected a directory for the model.")
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in learn.model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates owner-only files; match ordinary files
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": {"name": spec.arch.name, "source": spec.arch.source, "n_out": spec.arch.n_out,
                 "head": "fastai-default"},
        "classes": list(spec.classes),
        "preprocessing": {"size": spec.pipeline.size, "presize": spec.pipeline.presize,
                          "resize": "shorter side to presize, centre crop, then bilinear to size",
                          "augment": spec.pipeline.augment, "mean": list(spec.pipeline.mean),
                          "std": list(spec.pipeline.std), "input": "RGB, 0..1 floats before normalisation"},
        # No data path: a shared model file should not carry the trainer's directory layout.
        "data": {"layout": spec.layout, "label_pat": spec.label_pat, "valid_pct": spec.valid_pct,
                 "seed": spec.seed},
        "precision": spec.precision,
        "versions": _versions(),
        "summary": summary or {},
    }
    write_json_atomic(directory / META_FILE, meta)
    return directory


def read_meta(directory: str | Path) -> dict:
    """Read ``petclf.json`` of a model directory and check every field petclf uses (see ``petclf.modelcheck``).

    Example: ``read_meta("runs/pets/model")["preprocessing"]["size"]`` → ``224``.
    """
    directory = Path(directory)
    meta_path = directory / META_FILE
    if directory.is_file():
        raise UsageError(
            f"{directory} is a file, not a petclf model directory. If it is a fastai export.pkl or a torch "
            "pickle, loading it would run code stored in it: load it only if you trust its author, with "
            "petclf.export.load_pickled_learner(path, trust=True) or `petclf predict --trust-pickle`."
        )
    if not meta_path.is_file():
        raise UsageError(f"{directory} is not a petclf model directory: {META_FILE} is missing. "
                         "Pass the directory that `petclf train` wrote (its model/ sub-folder).")
    return read_meta_file(meta_path)


def load_model(directory: str | Path, *, arch: Callable | nn.Module | None = None,
               device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a saved network from a model directory, without network access or unpickling.

    ``arch`` is needed only for models trained with a custom callable or module. ``petclf.json``
    is checked field by field, and the weights file's header against the network it describes,
    before the network is built: a damaged or hostile directory costs neither memory nor time.

    Example: ``load_model("runs/pets/model").classes`` → ``('Abyssinian', 'Bengal', …)``.
    """
    directory = Path(directory)
    meta = read_meta(directory)
    info = meta["arch"]
    if info["source"] == "custom" and arch is None:
        raise UsageError(f"{directory} holds a custom architecture: pass the same arch= you trained with.")
    target = arch if info["source"] == "custom" else (
        ("timm/" + info["name"]) if info["source"] == "timm" else info["name"])
    weights_path = directory / WEIGHTS_FILE
    n_out = info["n_out"]
    built = _build_checked(target, n_out, weights_path, meta_path=directory / META_FILE, name=info["name"])
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"cannot read {weights_path} ({_one_line(err)}); the model directory is damaged.") from None
    try:
        built.model.load_state_dict(state)
    except RuntimeError as err:
        raise ModelFileError(f"the weights in {directory} do not fit {info['name']} ({_one_line(err)}).") from None
    model = built.model.to(device).eval()
    pre = meta["preprocessing"]
    pipeline = Pipeline(size=pre["size"], presize=pre["presize"], augment=pre["augment"],
                        mean=tuple(float(v) for v in pre["mean"]), std=tuple(float(v) for v in pre["std"]))
    return LoadedModel(model=model, classes=tuple(meta["classes"]), pipeline=pipeline, meta=meta)


def _one_line(err: object, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _build_checked(target: str | Callable | nn.Module, n_out: int, weights_path: Path, *, meta_path: Path,
                   name: str) -> BuiltModel:
    """Build the network for real only once the weights file's header matches it."""
    built = None
    try:
        # On the meta device the network has shapes but no storage, so a header check costs nothing.
        with torch.device("meta"):
            layout = build_model(target, n_out, pretrained=False).model.state_dict()
    except UsageError as err:
        if not isinstance(target, str):
            raise  # the caller's own arch=, not the file, is at fault
        raise ModelFileError(f"{meta_path}: field 'arch.name' ({name!r}) cannot be built here: {err}") from None
    except Exception:  # noqa: BLE001 - some layers lack meta kernels; n_out is bounded, so a real build is affordable
        built = build_model(target, n_out, pretrained=False)
        layout = built.model.state_dict()
    check_weights_header(weights_path, layout, arch=name, n_out=n_out)
    return built if built is not None else build_model(target, n_out, pretrained=False)
