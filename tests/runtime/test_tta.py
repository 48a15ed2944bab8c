"""Flip test-time augmentation: ``Predictor(tta=True)`` averages the probabilities of an image and its mirror."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from petclf import Predictor
from petclf.data.pipeline import make_pipeline

CLASSES = ("cat", "dog", "fish", "owl", "fox")
PIPELINE = make_pipeline(size=16)  # presize 24: square images of that side are read unchanged


def left_right_net(seed: int = 0, scale: float = 1.0) -> nn.Module:
    """Scores that depend on where things are (a dense layer over the feature map), so a mirror changes them."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.Flatten(), nn.Linear(4 * 7 * 7, len(CLASSES)))
    with torch.no_grad():
        net[2].weight.mul_(scale)
    return net.eval()


def predictors(*, multi_label: bool = False, scale: float = 1.0) -> tuple[Predictor, Predictor]:
    """(plain, tta) predictors on copies of the same weights."""
    net = left_right_net(scale=scale)
    make = lambda tta: Predictor.from_network(copy.deepcopy(net), CLASSES, PIPELINE, device="cpu",  # noqa: E731
                                              precision="fp32", multi_label=multi_label, tta=tta)
    return make(False), make(True)


def save(pixels: np.ndarray, path: Path) -> str:
    Image.fromarray(pixels).save(path)  # PNG: lossless, so the mirror file holds exactly the mirrored pixels
    return str(path)


@pytest.fixture
def images(tmp_path) -> list[tuple[str, str]]:
    """(image, its mirror) file pairs of distinct noise images, presize × presize."""
    rng = np.random.default_rng(0)
    pairs = []
    for k in range(3):
        pixels = rng.integers(0, 256, size=(PIPELINE.presize, PIPELINE.presize, 3), dtype=np.uint8)
        pairs.append((save(pixels, tmp_path / f"img{k}.png"), save(pixels[:, ::-1], tmp_path / f"mirror{k}.png")))
    return pairs


def test_tta_is_off_by_default_and_stored():
    plain, tta = predictors()
    assert plain.tta is False and tta.tta is True
    assert Predictor.from_network(left_right_net(), CLASSES, PIPELINE, device="cpu").tta is False


@pytest.mark.parametrize("multi_label", [False, True])
def test_tta_probabilities_are_the_mean_of_the_image_and_its_mirror(images, multi_label):
    plain, tta = predictors(multi_label=multi_label)
    originals, mirrors = [a for a, _ in images], [b for _, b in images]
    expected = (plain.probabilities(plain.logits(originals)) + plain.probabilities(plain.logits(mirrors))) / 2
    got = tta.probabilities(tta.logits(originals))
    # The mirror really changes the scores, so the equality below is not trivially true.
    assert not torch.allclose(plain.probabilities(plain.logits(originals)), expected, atol=1e-3)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # An image and its mirror are the same input to a flip-averaged predictor.
    torch.testing.assert_close(tta.probabilities(tta.logits(mirrors)), got, atol=1e-5, rtol=0)


@pytest.mark.parametrize("multi_label", [False, True])
def test_an_image_that_is_its_own_mirror_gets_the_same_answer(tmp_path, multi_label):
    rng = np.random.default_rng(1)
    half = rng.integers(0, 256, size=(PIPELINE.presize, PIPELINE.presize // 2, 3), dtype=np.uint8)
    symmetric = save(np.concatenate([half, half[:, ::-1]], axis=1), tmp_path / "symmetric.png")
    plain, tta = predictors(multi_label=multi_label)
    torch.testing.assert_close(tta.probabilities(tta.logits([symmetric])),
                               plain.probabilities(plain.logits([symmetric])), atol=1e-5, rtol=0)
    assert tta.predict(symmetric, topk=2)[0][0] == plain.predict(symmetric, topk=2)[0][0]


@pytest.mark.parametrize("multi_label", [False, True])
def test_batched_paths_average_flips_as_logits_does(images, tmp_path, multi_label):
    _, tta = predictors(multi_label=multi_label)
    files = [f for pair in images for f in pair]  # 6 images, batches of 4 and 2
    expected = tta.logits(files)
    torch.testing.assert_close(torch.cat(list(tta.iter_logits(files, bs=4))), expected, atol=1e-5, rtol=0)
    readable = list(tta.iter_readable([files[0], str(tmp_path / "gone.png"), *files[1:]], bs=4))
    assert [f for b in readable for f, _ in b.failed] == [str(tmp_path / "gone.png")]
    torch.testing.assert_close(torch.cat([b.logits for b in readable]), expected, atol=1e-5, rtol=0)
    batch = tta.predict_batch(files, bs=4, topk=2)
    for row, one in zip(batch, tta.decide(expected, topk=2)):
        assert [label for label, _ in row] == [label for label, _ in one]
        assert [p for _, p in row] == pytest.approx([p for _, p in one], abs=1e-5)


@pytest.mark.parametrize("multi_label", [False, True])
def test_scores_keep_their_shape_dtype_and_stay_finite(images, multi_label):
    # Weights this large give probabilities of exactly 0 and 1: the scores must still be finite numbers.
    plain, tta = predictors(multi_label=multi_label, scale=1e4)
    files = [a for a, _ in images]
    got, reference = tta.logits(files), plain.logits(files)
    assert got.shape == reference.shape == (len(files), len(CLASSES))
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    assert torch.isfinite(got).all()
    for batch in tta.iter_logits(files, bs=2):
        assert batch.dtype == torch.float32 and batch.shape[1] == len(CLASSES)


def test_both_views_run_as_one_batch(images):
    _, tta = predictors()
    sizes = []
    tta.net.model.register_forward_hook(lambda module, args, out: sizes.append(args[0].shape[0]))
    tta.logits([a for a, _ in images])
    assert sizes == [2 * len(images)]
