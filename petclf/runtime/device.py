"""Pick the device and the numeric precision a run uses."""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from petclf.core.defaults import PRECISIONS
from petclf.core.errors import UsageError
from petclf.core.processes import local_rank, world_size
from petclf.runtime.calibrate import bf16_pays, cpuinfo_field

__all__ = ["pick_device", "pick_precision", "cpu_has_fast_bf16"]


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device`` if given, else CUDA, else Apple MPS, else the CPU.

    Example: ``pick_device()`` → ``device(type='cpu')`` on a laptop without a GPU.
    """
    if device is not None:
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise UsageError(
                f"unknown device {device!r}: expected 'cpu', 'cuda', 'cuda:N' or 'mps'. ({err})"
            ) from None
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise UsageError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu.")
        if chosen.type == "mps" and not _mps_available():
            raise UsageError("device 'mps' was asked for but Apple MPS is not available; use --device cpu.")
        return chosen
    if torch.cuda.is_available():
        if world_size() > 1:
            torch.cuda.set_device(local_rank())  # one GPU per launched process
        return torch.device("cuda", torch.cuda.current_device())
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX), read from the CPU flags.

    Example: ``cpu_has_fast_bf16()`` → ``True`` on an AMD EPYC Zen 4.
    """
    flags = cpuinfo_field("flags")
    # Without a flag list we cannot know; bf16 emulated in software is slower than fp32.
    return bool(flags and {"avx512_bf16", "amx_bf16"} & set(flags.split()))


def pick_precision(precision: str, device: torch.device, *, model: nn.Module | None = None, size: int = 224,
                   training: bool = False) -> str:
    """Resolve ``precision`` ('auto', 'fp32', 'bf16', 'fp16') for ``device`` to what will run.

    'auto' is bf16 on CUDA GPUs that support it, fp16 on older CUDA GPUs, and fp32 elsewhere,
    except on CPUs with native bf16: there it is bf16 when it is faster for ``model`` at ``size``
    px (timed once and remembered, see ``petclf.runtime.calibrate``), or, without a model, bf16.

    Example: ``pick_precision("auto", torch.device("cpu"), model=net, size=64, training=True)`` → ``'fp32'``
    on an Intel Xeon without AMX, ``'bf16'`` on an AMD EPYC Zen 4.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}.")
    if device.type == "cuda":
        if precision == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return precision
    if device.type == "cpu":
        if precision == "auto":
            if not cpu_has_fast_bf16():
                return "fp32"
            if model is None:
                return "bf16"
            return "bf16" if bf16_pays(model, size=size, training=training) else "fp32"
        if precision == "fp16":
            raise UsageError("precision 'fp16' is for CUDA GPUs; on a CPU use 'bf16' or 'fp32'.")
        return precision
    # MPS and other devices: autocast support varies, fp32 is the safe choice.
    return "fp32" if precision == "auto" else precision
