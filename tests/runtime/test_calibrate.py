"""precision='auto' on a CPU with bf16 instructions: timed once per network and size, then remembered."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from petclf.data.cachedir import cache_dir
from petclf.runtime import calibrate
from petclf.runtime.device import pick_precision


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 2))


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PETCLF_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("petclf.runtime.device.cpu_has_fast_bf16", lambda: True)
    return tmp_path


@pytest.mark.parametrize(("times", "expected"), [((1.0, 0.5), "bf16"), ((1.0, 1.3), "fp32"), ((1.0, 0.97), "fp32")])
def test_auto_takes_the_faster_precision_and_a_tie_goes_to_fp32(fresh_cache, monkeypatch, times, expected):
    monkeypatch.setattr(calibrate, "_measure", lambda *a, **k: times)
    cpu = torch.device("cpu")
    assert pick_precision("auto", cpu, model=_net(), size=16, training=True) == expected
    # Asked for explicitly, a precision is used as given.
    assert pick_precision("bf16", cpu, model=_net(), size=16, training=True) == "bf16"
    assert pick_precision("fp32", cpu, model=_net(), size=16, training=True) == "fp32"


def test_the_answer_is_remembered_per_network_size_and_mode(fresh_cache, monkeypatch):
    calls = []
    monkeypatch.setattr(calibrate, "_measure", lambda model, size, training: calls.append((size, training)) or (1.0, 0.5))
    net = _net()
    for _ in range(3):
        assert calibrate.bf16_pays(net, size=16, training=True)
    assert calls == [(16, True)]
    calibrate.bf16_pays(net, size=24, training=True)
    calibrate.bf16_pays(net, size=16, training=False)
    calibrate.bf16_pays(nn.Sequential(_net(), nn.Linear(2, 3)), size=16, training=True)  # another network
    assert calls == [(16, True), (24, True), (16, False), (16, True)]
    stored = json.loads((cache_dir() / calibrate.CALIBRATION_FILE).read_text())
    assert len(stored) == 4 and all(v["bf16_pays"] is True for v in stored.values())


def test_an_unreadable_store_is_measured_again(fresh_cache, monkeypatch):
    (fresh_cache / calibrate.CALIBRATION_FILE).write_text("{not json")
    monkeypatch.setattr(calibrate, "_measure", lambda *a, **k: (1.0, 2.0))
    assert calibrate.bf16_pays(_net(), size=16, training=True) is False
    assert json.loads((fresh_cache / calibrate.CALIBRATION_FILE).read_text())


def test_measuring_leaves_the_network_and_the_random_state_alone(fresh_cache):
    net = _net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(7)
    expected_draw = torch.rand(3)
    torch.manual_seed(7)
    for training in (True, False):
        assert isinstance(calibrate.bf16_pays(net, size=16, training=training), bool)
    assert torch.equal(torch.rand(3), expected_draw)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters()) and net.training
