"""Whether bf16 pays on this CPU for a given network, measured once and remembered.

A CPU flag says bf16 *can* run natively, not that it is faster: on an AMD EPYC (Zen 4) bf16
autocast trains a resnet34 at 128 px about 1.8× faster than fp32, while on an Intel Xeon
with AVX512-BF16 but no AMX the same step is 1.35× *slower*. So 'auto' times a few
forward (and backward) passes of a copy of the network in both precisions and keeps the
faster. The answer is stored in the cache folder per CPU model, torch version, thread
count, network and image size, so only the first run with a new network pays the seconds.
"""
from __future__ import annotations

import copy
import platform
from functools import lru_cache
import time
from pathlib import Path

import torch
from torch import nn

from petclf.core import log
from petclf.core.atomic import read_json_or, write_json_atomic
from petclf.data.cachedir import cache_dir

__all__ = ["CALIBRATION_FILE", "bf16_pays", "cpuinfo_field"]

CALIBRATION_FILE = "precision.json"
#: bf16 must be this much faster to be chosen: a tie goes to fp32, which is the more accurate.
_MARGIN = 0.95
#: Images per timed batch and timed passes per precision (after one warm-up pass each).
_BATCH, _REPEATS = 8, 2


@lru_cache(maxsize=None)
def cpuinfo_field(name: str) -> str | None:
    """The first ``name : value`` of /proc/cpuinfo (``'flags'``, ``'model name'``), or None off Linux."""
    cpuinfo = Path("/proc/cpuinfo")
    if platform.system() != "Linux" or not cpuinfo.exists():
        return None
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.split(":", 1)[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return None


def _key(name: str, size: int, training: bool) -> str:
    mode = "train" if training else "infer"
    cpu = cpuinfo_field("model name") or platform.processor() or platform.machine()
    return f"{cpu}|torch {torch.__version__}|{torch.get_num_threads()} threads|{name}|{size}px|{mode}"


def _read(path: Path) -> dict:
    return read_json_or(path, {})


def _time_pass(model: nn.Module, x: torch.Tensor, *, bf16: bool, training: bool) -> float:
    start = time.perf_counter()
    if training:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        out.float().sum().backward()
    else:
        with torch.inference_mode():
            model(x)
    return time.perf_counter() - start


def _measure(model: nn.Module, size: int, *, training: bool) -> tuple[float, float]:
    """Best seconds per pass of a batch in fp32 and in bf16 (inference: bf16 weights, as the Predictor stores them)."""
    # A copy, so that the caller's weights, gradients and BatchNorm statistics stay untouched; the random
    # state is restored, so that a run trains the same whether or not it measured first.
    with torch.random.fork_rng(devices=[]):
        fp32 = copy.deepcopy(model).float().to(memory_format=torch.channels_last).train(training)
        bf16 = fp32 if training else copy.deepcopy(fp32).to(torch.bfloat16)
        x = torch.randn(_BATCH, 3, size, size).contiguous(memory_format=torch.channels_last)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(_REPEATS + 1):  # alternating, so that a slow moment of the machine hits both
            for use_bf16 in (False, True):
                net, inp = (bf16, x.to(torch.bfloat16)) if use_bf16 and not training else (fp32, x)
                times[use_bf16].append(_time_pass(net, inp, bf16=use_bf16, training=training))
    return min(times[False][1:]), min(times[True][1:])


def bf16_pays(model: nn.Module, *, size: int, training: bool) -> bool:
    """True when bf16 runs ``model`` on this CPU clearly faster than fp32 (measured the first time, then read).

    Example: ``bf16_pays(resnet18(), size=64, training=True)`` → ``False`` on an Intel Xeon without AMX.
    """
    # The network's class and parameter count tell architectures apart (fastai's are all Sequential).
    name = f"{type(model).__name__} of {sum(p.numel() for p in model.parameters())} parameters"
    path = cache_dir() / CALIBRATION_FILE
    key = _key(name, size, training)
    known = _read(path).get(key)
    if isinstance(known, dict) and isinstance(known.get("bf16_pays"), bool):
        return known["bf16_pays"]
    fp32, bf16 = _measure(model, size, training=training)
    pays = bf16 < _MARGIN * fp32
    log.info(f"precision: bf16 {'pays' if pays else 'does not pay'} on this CPU for {name} at {size} px "
             f"({'training' if training else 'inference'}: {bf16 / fp32:.2f}× fp32's time); remembered in {path}")
    try:  # another run may have stored answers meanwhile: keep theirs too
        write_json_atomic(path, {**_read(path), key: {"bf16_pays": pays, "fp32_s": round(fp32, 4),
                                                      "bf16_s": round(bf16, 4)}})
    except OSError:
        pass  # a read-only cache only means measuring again next time
    return pays
