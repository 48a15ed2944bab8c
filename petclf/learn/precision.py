"""Mixed precision and memory layout as fastai callbacks.

fastai's own ``MixedPrecision`` enters CUDA autocast only, so on a CPU it changes nothing.
``CpuAutocast`` runs the forward pass under CPU bf16 autocast and hands fp32 predictions
to the loss, so losses and metrics stay in fp32.
"""
from __future__ import annotations

import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision

__all__ = ["CpuAutocast", "ChannelsLastCallback", "autocast_for", "autocast_of", "channels_last_for",
           "precision_callbacks"]


class CpuAutocast(Callback):
    """Forward pass under ``torch.autocast('cpu', bfloat16)``; loss computed in fp32."""

    order = 10

    def __init__(self) -> None:
        self._ctx: torch.autocast | None = None

    def before_batch(self) -> None:
        self._ctx = torch.autocast("cpu", dtype=torch.bfloat16)
        self._ctx.__enter__()

    def after_pred(self) -> None:
        self._leave()
        pred = self.learn.pred
        if isinstance(pred, torch.Tensor) and pred.is_floating_point():
            self.learn.pred = pred.float()

    # A cancelled batch never reaches after_pred; leave autocast there too.
    def after_batch(self) -> None:
        self._leave()

    def after_cancel_batch(self) -> None:
        self._leave()

    def _leave(self) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None


class ChannelsLastCallback(Callback):
    """Keep the model and each input batch in channels-last layout (faster convolutions)."""

    order = 5

    def before_fit(self) -> None:
        self.learn.model.to(memory_format=torch.channels_last)

    def before_batch(self) -> None:
        xb = self.learn.xb
        if xb and isinstance(xb[0], torch.Tensor) and xb[0].dim() == 4:
            self.learn.xb = (xb[0].contiguous(memory_format=torch.channels_last), *xb[1:])


def precision_callbacks(precision: str, device: torch.device) -> list[Callback]:
    """The callbacks that make a learner run at ``precision`` (already resolved) on ``device``.

    Example: ``precision_callbacks("bf16", torch.device("cpu"))`` → ``[ChannelsLastCallback(), CpuAutocast()]``.
    """
    if precision == "fp32":
        return [ChannelsLastCallback()] if device.type == "cpu" else []
    if device.type == "cpu":
        return [ChannelsLastCallback(), CpuAutocast()]
    if device.type == "cuda":
        return [ChannelsLastCallback(), MixedPrecision(amp_mode=precision)]
    return []


def channels_last_for(learn) -> bool:
    """True when ``learn`` trains in channels-last layout (its precision callbacks include ``ChannelsLastCallback``)."""
    return any(isinstance(cb, ChannelsLastCallback) for cb in learn.cbs)


def autocast_of(precision: str, device: torch.device) -> "torch.autocast":
    """The autocast context for a resolved ``precision`` on ``device`` (disabled for fp32, and on devices
    autocast does not serve here).

    Example: ``with autocast_of("bf16", torch.device("cpu")): body(xb)``.
    """
    if precision == "fp32" or device.type not in ("cpu", "cuda"):
        return torch.autocast("cpu", enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def autocast_for(learn) -> "torch.autocast":
    """The autocast context matching the precision callbacks on ``learn`` (disabled for fp32)."""
    if any(isinstance(cb, CpuAutocast) for cb in learn.cbs):
        return autocast_of("bf16", torch.device("cpu"))
    for cb in learn.cbs:
        if isinstance(cb, MixedPrecision):
            return autocast_of("bf16" if str(cb.amp_mode).lower().endswith("bf16") else "fp16", torch.device("cuda"))
    return autocast_of("fp32", torch.device("cpu"))
