from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from petclf import Predictor, load_model, quick_learner, register_arch, save_model, train
from petclf.core.errors import UsageError
from petclf.runtime.network import build_network, classifier_head

from ..conftest import TINY

ROOT = Path(__file__).resolve().parents[2]


def tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 5))


def test_head_has_fastais_parameter_names():
    names = list(classifier_head(512, 7).state_dict())
    assert names[:2] == ["2.weight", "2.bias"] and names[-1] == "8.weight"
    assert classifier_head(512, 7)[-1].weight.shape == (7, 512)


def test_a_registered_architecture_trains_and_loads_by_name(pets_dir, tmp_path):
    register_arch("tiny_cnn_for_tests", tiny_cnn, replace=True)
    learn = quick_learner(pets_dir, **{**TINY, "arch": "tiny_cnn_for_tests"})
    train(learn, epochs=1, lr=1e-2, progress=False)
    model_dir = save_model(learn, tmp_path / "m")
    assert load_model(model_dir).meta["arch"] == {"name": "tiny_cnn_for_tests", "source": "registered", "n_out": 3,
                                                  "head": "fastai-default"}
    image = str(pets_dir / "pug_1.jpg")
    expected = Predictor(model_dir, device="cpu", precision="fp32").logits([image])
    # Another process registers the same name and loads the directory without arch=.
    code = ("import torch\nfrom torch import nn\nfrom petclf import Predictor, register_arch\n"
            "from tests.runtime.test_network import tiny_cnn\n"
            "register_arch('tiny_cnn_for_tests', tiny_cnn)\n"
            "import json\n"
            f"print(json.dumps(Predictor({str(model_dir)!r}, device='cpu', precision='fp32').logits([{image!r}]).tolist()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert torch.allclose(torch.tensor(json.loads(proc.stdout)), expected, atol=1e-5)


def test_an_unregistered_name_says_how_to_register_it():
    with pytest.raises(UsageError, match=r"register_arch\('nobody_registered_this'"):
        build_network("nobody_registered_this", "registered", 3)


def test_registering_a_taken_name_needs_replace():
    register_arch("taken_for_tests", tiny_cnn, replace=True)
    with pytest.raises(UsageError, match="replace=True"):
        register_arch("taken_for_tests", lambda: tiny_cnn())
