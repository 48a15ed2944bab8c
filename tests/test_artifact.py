from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from petclf import Predictor, load_model, quick_learner, save_model, train
from petclf.errors import UsageError
from petclf.images import read_rgb

from .conftest import TINY


@pytest.fixture(scope="module")
def trained(pets_dir, tmp_path_factory):
    learn = quick_learner(pets_dir, precision="fp32", **TINY)
    train(learn, epochs=1, lr=1e-2, progress=False)
    model_dir = save_model(learn, tmp_path_factory.mktemp("model") / "m", summary={"note": "test"})
    return learn, model_dir


def test_model_dir_holds_safetensors_and_json(trained):
    _, model_dir = trained
    meta = json.loads((model_dir / "petclf.json").read_text())
    assert meta["format_version"] == 1 and meta["arch"]["name"] == "resnet18"
    assert meta["classes"] == ["Egyptian_Mau", "american_pit_bull_terrier", "pug"]
    assert meta["preprocessing"]["size"] == 32 and "torch" in meta["versions"]
    assert meta["summary"] == {"note": "test"}
    assert (model_dir / "model.safetensors").read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle


def _assert_predictor_matches_validation(learn, model_dir) -> None:
    """The Predictor's logits for the validation files equal the learner's own validation logits."""
    learn.model.eval()
    with learn.no_bar():
        logits, _ = learn.get_preds(ds_idx=1, act=lambda x: x)
    files = list(learn.dls.valid.items.path)
    ours = Predictor(model_dir, device="cpu", precision="fp32").logits(files)
    assert torch.allclose(ours, logits.as_subclass(torch.Tensor), atol=1e-4)


def test_predictor_logits_match_get_preds(trained):
    _assert_predictor_matches_validation(*trained)


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory):
    """800×600 JPEGs with detail at every scale: large enough (≥ 2 × a 48 px presize) to be read reduced."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    for k, label in enumerate(("cat", "dog", "fox")):
        for i in range(4):
            pixels = rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)
            pixels[..., k] = 220
            Image.fromarray(pixels).save(root / f"{label}_{i}.jpg", quality=90)
    return root


def test_large_jpeg_is_read_at_the_smallest_scale_that_keeps_the_presize(photos_dir):
    path = photos_dir / "cat_0.jpg"
    assert read_rgb(path).size == (800, 600)
    assert read_rgb(path, min_side=48).size == (100, 75)  # 1/8: the shorter side stays ≥ 48
    assert read_rgb(path, min_side=200).size == (400, 300)  # 1/2: 1/4 would give 150 < 200
    assert read_rgb(path, min_side=400).size == (800, 600)  # under 2 ×: decoded whole


@pytest.mark.parametrize("cache", [True, False], ids=["image-cache", "no-image-cache"])
def test_predictor_reads_large_photos_as_training_does(photos_dir, tmp_path, cache):
    learn = quick_learner(photos_dir, precision="fp32", cache=cache, **{**TINY, "bs": 4})
    _assert_predictor_matches_validation(learn, save_model(learn, tmp_path / "m"))


def test_round_trip_gives_identical_predictions(trained, pets_dir):
    learn, model_dir = trained
    files = sorted(pets_dir.glob("*.jpg"))[:6]
    first = Predictor(model_dir, device="cpu", precision="fp32").predict_batch(files, bs=4)
    second = Predictor(model_dir, device="cpu", precision="fp32").predict_batch(files, bs=6)
    assert [t[0][0] for t in first] == [t[0][0] for t in second]
    assert np.allclose([[p for _, p in t] for t in first], [[p for _, p in t] for t in second], atol=1e-6)
    learn.model.eval()
    with learn.no_bar():
        probs, _ = learn.get_preds(dl=learn.dls.test_dl(files))
    assert [learn.dls.vocab[i] for i in probs.argmax(1)] == [t[0][0] for t in first]
    assert all(len(top) == 3 and abs(sum(p for _, p in top) - 1) < 1e-5 for top in first)


def test_loads_in_a_fresh_process_without_network(trained, pets_dir):
    _, model_dir = trained
    code = ("import sys, socket\n"
            "def refuse(*a, **k): raise OSError('network disabled in this test')\n"
            "socket.socket.connect = refuse\n"
            "from petclf import Predictor\n"
            f"print(Predictor({str(model_dir)!r}).predict({str(pets_dir / 'pug_1.jpg')!r}, topk=1)[0][0])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in {"Egyptian_Mau", "american_pit_bull_terrier", "pug"}


def test_not_a_model_dir_is_explained(tmp_path):
    with pytest.raises(UsageError, match="not a petclf model directory"):
        load_model(tmp_path)
