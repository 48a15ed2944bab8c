from __future__ import annotations

import pytest
import torch

from petclf.runtime.device import pick_device, pick_precision
from petclf.core.errors import UsageError


def test_explicit_cpu_device():
    assert pick_device("cpu") == torch.device("cpu")


def test_unknown_device_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown device"):
        pick_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_says_so():
    with pytest.raises(UsageError, match="no CUDA GPU"):
        pick_device("cuda")


def test_precision_choices_on_cpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr("petclf.runtime.device.cpu_has_fast_bf16", lambda: True)
    assert pick_precision("auto", cpu) == "bf16"
    monkeypatch.setattr("petclf.runtime.device.cpu_has_fast_bf16", lambda: False)
    assert pick_precision("auto", cpu) == "fp32"
    assert pick_precision("bf16", cpu) == "bf16"
    with pytest.raises(UsageError, match="fp16"):
        pick_precision("fp16", cpu)
    with pytest.raises(UsageError, match="unknown precision"):
        pick_precision("int8", cpu)
