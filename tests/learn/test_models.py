from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from petclf.core.errors import UsageError, WeightsUnavailableError
from petclf.learn.models import build_model, read_state_dict


def test_unknown_arch_lists_close_names():
    with pytest.raises(UsageError, match="Did you mean.*resnet34"):
        build_model("resnet43", 3, pretrained=False)


def test_from_scratch_resnet_has_three_layer_groups():
    built = build_model("resnet18", 5, pretrained=False)
    assert len(built.splitter(built.model)) == 3
    assert built.model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert built.spec.source == "torchvision"


def test_offline_pretrained_names_cache_file_and_both_fixes(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("resnet18", 3, pretrained=True)
    message = str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "weights=PATH" in message and "pretrained=False" in message


def test_local_weights_file_is_loaded_into_the_body(tmp_path):
    source = torchvision.models.resnet18(weights=None)
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    built = build_model("resnet18", 4, pretrained=True, weights=tmp_path / "r18.pth")
    assert torch.equal(built.model[0][0].weight, source.conv1.weight)


def test_local_weights_for_another_arch_are_refused(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(UsageError, match="do not fit|wrong shapes"):
        build_model("resnet34", 4, weights=tmp_path / "r18.pth")


class _Marker:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_weights_file_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"conv1.weight": torch.zeros(1), "evil": _Marker(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(UsageError, match="run code"):
        read_state_dict(tmp_path / "evil.pth")
    assert not marker.exists()


def test_a_module_is_used_whole_as_the_classifier():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    built = build_model(net, 3)
    assert built.model is net and built.spec.source == "custom"


def test_timm_model_by_name():
    pytest.importorskip("timm", reason="timm is optional (pip install petclf[timm])")
    built = build_model("resnet10t", 3, pretrained=False)
    assert built.spec.source == "timm"
    assert built.model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
