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

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from petclf.core.atomic import atomic_path, write_json_atomic
from petclf.core.defaults import MULTI_LABEL
from petclf.core.errors import ModelFileError, UsageError
from petclf.core.safe_text import one_line
from petclf.data.pipeline import Pipeline
from petclf.runtime.modelcheck import FORMAT, FORMAT_VERSION, check_weights_header, read_meta_file
from petclf.runtime.network import build_network

__all__ = ["FORMAT_VERSION", "META_FILE", "WEIGHTS_FILE", "LoadedModel", "load_model", "read_meta", "read_tensors",
           "save_tensors", "write_model_dir"]

WEIGHTS_FILE = "model.safetensors"
META_FILE = "petclf.json"


@dataclass(frozen=True)
class LoadedModel:
    """A rebuilt network in eval mode with the facts needed to feed it and read its output."""

    model: nn.Module = field(repr=False)
    classes: tuple[str, ...]
    pipeline: Pipeline
    meta: dict = field(repr=False)

    @property
    def temperature(self) -> float:
        """The calibration temperature its probabilities are divided by (1 for a multi-label model or none stored)."""
        return 1.0 if self.meta.get("task") == MULTI_LABEL else float(self.meta.get("temperature", 1.0))


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``tensors`` (copied to the CPU) as a safetensors file of petclf's format, whole or not at all.

    Example: ``save_tensors(directory / WEIGHTS_FILE, model.state_dict())``.
    """
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates owner-only files; match ordinary files


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a model directory's safetensors file; a damaged file is a ``ModelFileError`` naming it.

    Example: ``read_tensors(directory / WEIGHTS_FILE)["0.0.weight"].shape``.
    """
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"cannot read {path} ({one_line(err)}); the model directory is damaged.") from None


def write_model_dir(directory: str | Path, state: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``state`` (tensors) and ``meta`` (petclf.json's content) as a model directory, each file whole.

    Example: ``write_model_dir("runs/pets/model", model.state_dict(), meta)``.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} is a file: expected a directory for the model.")
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(directory / WEIGHTS_FILE, state)
    write_json_atomic(directory / META_FILE, {"format": FORMAT, "format_version": FORMAT_VERSION, **meta})
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
    weights_path = directory / WEIGHTS_FILE
    model = _build_checked(info, arch, weights_path, meta_path=directory / META_FILE)
    state = read_tensors(weights_path)
    try:
        # assign: a network built on the meta device takes the loaded tensors as its own, with no second copy.
        model.load_state_dict(state, assign=True)
    except RuntimeError as err:
        raise ModelFileError(f"the weights in {directory} do not fit {info['name']} ({one_line(err)}).") from None
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):  # tensors the file does not hold
        model = build_network(info["name"], info["source"], info["n_out"], arch=arch)
        model.load_state_dict(state)
    model.float()  # assign keeps the file's dtype; weights saved in bf16 compute in fp32 like the rest
    pre = meta["preprocessing"]
    pipeline = Pipeline(size=pre["size"], presize=pre["presize"], augment=pre["augment"],
                        mean=tuple(float(v) for v in pre["mean"]), std=tuple(float(v) for v in pre["std"]))
    return LoadedModel(model=model.to(device).eval(), classes=tuple(meta["classes"]), pipeline=pipeline, meta=meta)


def _build_checked(info: dict, arch: Callable | nn.Module | None, weights_path: Path, *, meta_path: Path) -> nn.Module:
    """The network ``info`` describes, once the weights file's header matches it: on the meta device (no memory,
    no initialisation) where it can be built there, else on the CPU."""
    name, source, n_out = info["name"], info["source"], info["n_out"]

    def build() -> nn.Module:
        return build_network(name, source, n_out, arch=arch)

    try:
        # On the meta device the network has shapes but no storage, so a header check costs nothing.
        with torch.device("meta"):
            model = build()
    except UsageError as err:
        if source in ("custom", "registered"):
            raise  # the caller's own arch= (or its registration), not the file, is at fault
        raise ModelFileError(f"{meta_path}: field 'arch.name' ({name!r}) cannot be built here: {err}") from None
    except Exception:  # noqa: BLE001 - some layers lack meta kernels; n_out is bounded, so a real build is affordable
        model = build()
    check_weights_header(weights_path, model.state_dict(), arch=name, n_out=n_out)
    return model
