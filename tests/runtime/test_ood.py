from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from petclf.core.errors import ModelFileError, UsageError
from petclf.runtime.network import classifier_head
from petclf.runtime.ood import (OOD_KINDS, features_at, fit_ood_score, load_ood_score, split_network,
                                threshold_at_acceptance)

D, C = 16, 3


def _auroc(inside: torch.Tensor, foreign: torch.Tensor) -> float:
    """Share of (in, foreign) pairs ranked the right way (ties count half)."""
    diff = foreign[:, None] - inside[None, :]
    return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())


def _clusters(n: int, seed: int, *, shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three classes around 4·e_c, or (shift > 0) one foreign cluster around shift·e_10; logits from a head that
    scores each class by its direction, so a foreign image's logits are all near 0."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (n,), generator=gen)
    centres = torch.zeros(n, D)
    if shift:
        centres[:, 10] = shift
    else:
        centres[torch.arange(n), labels] = 4.0
    features = centres + 0.5 * torch.randn(n, D, generator=gen)
    weight = torch.eye(C, D) * 2.0
    return features, features @ weight.T, labels


@pytest.fixture(scope="module")
def data():
    return {"train": _clusters(600, 0), "valid": _clusters(300, 1), "foreign": _clusters(100, 2, shift=4.0)}


@pytest.fixture(scope="module", params=OOD_KINDS)
def score(request, data):
    f, z, y = data["train"]
    return fit_ood_score(request.param, features=f, logits=z, labels=y)


def test_each_kind_scores_a_shifted_cluster_above_the_training_classes(score, data):
    inside = score(*data["valid"][:2])
    foreign = score(*data["foreign"][:2])
    assert inside.shape == (300,) and inside.dtype == torch.float32
    assert _auroc(inside, foreign) > 0.99, score.kind
    limit = threshold_at_acceptance(inside, 0.95)
    assert (foreign > limit).float().mean() > 0.95  # flagged 'unknown' at 95% acceptance


def test_scores_round_trip_through_safetensors(score, data, tmp_path):
    path = tmp_path / "ood.safetensors"
    save_file(score.tensors(), str(path))
    again = load_ood_score(score.kind, load_file(str(path)), feature_dim=D, classes=C)
    f, z, _ = data["valid"]
    assert torch.equal(again(f, z), score(f, z))


def test_onnx_export_matches_torch(score, data, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="ONNX extras not installed (pip install petclf[onnx])")
    pytest.importorskip("onnxscript")
    f, z, _ = data["train"]
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(score.eval(), (f[:4], z[:4]), dynamo=True, input_names=["features", "logits"],
                                output_names=["ood"], dynamic_shapes=({0: batch}, {0: batch}), verbose=False)
    program.save(str(tmp_path / "ood.onnx"))
    session = ort.InferenceSession(str(tmp_path / "ood.onnx"), providers=["CPUExecutionProvider"])
    fv, zv, _ = data["valid"]
    (got,) = session.run(None, {"features": fv.numpy(), "logits": zv.numpy()})
    np.testing.assert_allclose(got, score(fv, zv).numpy(), atol=1e-5, rtol=1e-5)


def test_msp_and_energy_store_nothing_and_distances_store_their_fit(data):
    f, z, y = data["train"]
    assert fit_ood_score("msp", features=f, logits=z, labels=y).tensors() == {}
    assert fit_ood_score("energy", features=f, logits=z, labels=y).tensors() == {}
    maha = fit_ood_score("mahalanobis", features=f, logits=z, labels=y).tensors()
    assert maha["transform"].shape == (D, D) and maha["means"].shape == (C, D)
    knn = fit_ood_score("knn", features=f, logits=z, labels=y, k=7).tensors()
    assert knn["bank"].shape == (600, D) and int(knn["k"]) == 7


def test_knn_bank_is_subsampled_to_its_byte_budget_in_float16(data):
    f, z, y = data["train"]
    half = fit_ood_score("knn", features=f, logits=z, labels=y, max_bytes=100 * D * 2).tensors()["bank"]
    assert half.shape == (100, D) and half.dtype == torch.float16
    full = fit_ood_score("knn", features=f, logits=z, labels=y, max_bytes=100 * D * 4, half=False)
    assert full.tensors()["bank"].shape == (100, D) and full.tensors()["bank"].dtype == torch.float32
    exact = fit_ood_score("knn", features=f, logits=z, labels=y, half=False)(*data["valid"][:2])
    rounded = fit_ood_score("knn", features=f, logits=z, labels=y)(*data["valid"][:2])
    torch.testing.assert_close(rounded, exact, atol=2e-3, rtol=0)  # float16 moves a cosine by ~1e-3 at most


def test_knn_ranks_as_cleanlab_out_of_distribution(data):
    cleanlab = pytest.importorskip("cleanlab.outlier", reason="cleanlab comes with the audit extra")
    f, z, y = data["train"]
    probe = torch.cat([data["valid"][0][:100], data["foreign"][0][:50]])
    ours = fit_ood_score("knn", features=f, logits=z, labels=y, k=10, half=False)(probe, z[:150]).numpy()
    ood = cleanlab.OutOfDistribution(params={"k": 10})
    ood.fit(features=f.numpy(), verbose=False)
    theirs = -ood.score(features=probe.numpy())  # cleanlab: higher = more typical
    np.testing.assert_array_equal(np.argsort(ours, kind="stable"), np.argsort(theirs, kind="stable"))


@pytest.mark.parametrize("kind, tensors, message", [
    ("knn", {"bank": torch.zeros(5, D + 1), "k": torch.tensor(2)}, "shape"),
    ("knn", {"bank": torch.zeros(5, D), "k": torch.tensor(9)}, "k is 9"),
    ("knn", {"bank": torch.zeros(5, D), "k": torch.tensor(2.0)}, "int64"),
    ("knn", {"bank": torch.zeros(5, D, dtype=torch.int32), "k": torch.tensor(2)}, "float32"),
    ("knn", {"bank": torch.full((5, D), float("nan")), "k": torch.tensor(2)}, "NaN"),
    ("knn", {"bank": torch.zeros(10**7, 1), "k": torch.tensor(2)}, "rows"),
    ("knn", {"bank": torch.zeros(5, D)}, "needs the tensors"),
    ("mahalanobis", {"transform": torch.zeros(D, D), "means": torch.zeros(C + 1, D)}, "classes × features"),
    ("mahalanobis", {"transform": torch.zeros(D, 4), "means": torch.zeros(C, D)}, "features × features"),
    ("msp", {"extra": torch.zeros(1)}, "needs the tensors"),
    ("gaussian", {}, "unknown out-of-distribution score"),
])
def test_load_refuses_what_does_not_fit_the_model(kind, tensors, message):
    with pytest.raises(ModelFileError, match=message):
        load_ood_score(kind, tensors, feature_dim=D, classes=C)


def test_fit_refuses_unknown_kinds_and_mismatched_rows(data):
    f, z, y = data["train"]
    with pytest.raises(UsageError, match="choose one of"):
        fit_ood_score("odin", features=f, logits=z, labels=y)
    with pytest.raises(UsageError, match="same N"):
        fit_ood_score("knn", features=f[:10], logits=z, labels=y)


def test_threshold_at_acceptance_is_the_quantile_of_in_distribution_scores():
    scores = torch.randperm(100).float() + 1  # 1..100 shuffled
    assert threshold_at_acceptance(scores, 0.95) == 95.0
    assert threshold_at_acceptance(scores, 1.0) == 100.0
    assert threshold_at_acceptance(scores, 0.951) == 96.0  # at least the share asked for is accepted
    odd = torch.rand(37)
    for accept in (0.5, 0.9, 0.99):
        assert (odd <= threshold_at_acceptance(odd, accept)).float().mean() >= accept
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(UsageError, match="share"):
            threshold_at_acceptance(scores, bad)


def test_split_network_gives_the_last_linear_and_what_feeds_it():
    body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    model = nn.Sequential(body, classifier_head(8, 4)).eval()
    features, linear = split_network(model)
    x = torch.rand(2, 3, 16, 16)
    assert linear.out_features == 4 and features(x).shape == (2, linear.in_features)
    torch.testing.assert_close(linear(features(x)), model(x))
    pooled, rest = split_network(model, at="pooled")
    assert pooled(x).shape == (2, 16)  # fastai's concatenated max and average pooling of 8 channels
    torch.testing.assert_close(rest(pooled(x)), model(x))
    assert features_at("knn") == "pooled" and features_at("msp") == "linear"
    with pytest.raises(UsageError, match="Sequential\\(body, head\\)"):
        split_network(nn.Linear(3, 4))
    with pytest.raises(UsageError, match="at must be"):
        split_network(model, at="body")


def test_network_outputs_skip_the_files_predictor_skips(tmp_path, monkeypatch):
    """The OOD fit reads images as Predictor.iter_readable does: the same files kept (a file that is gone, not an
    image, or over PIL's decompression-bomb limit is left out, not fatal) and the same logits for them."""
    from PIL import Image

    from petclf.runtime.modeldir import load_model
    from petclf.runtime.predict import Predictor
    from petclf.runtime.trust import network_outputs

    from ..serve.conftest import image_bytes, make_model_dir

    model = make_model_dir(tmp_path / "m")
    good = []
    for k in range(3):
        good.append(tmp_path / f"{k}.png")
        good[-1].write_bytes(image_bytes(k))
    (tmp_path / "text.png").write_text("not an image")
    Image.new("RGB", (300, 200)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # 60,000 px: over twice the limit, PIL refuses to open it
    images = [good[0], tmp_path / "gone.png", good[1], tmp_path / "text.png", tmp_path / "bomb.png", good[2]]
    loaded = load_model(model)
    _, logits, kept = network_outputs(loaded.model, loaded.pipeline, images, bs=4)  # two batches
    assert kept == [0, 2, 5]
    (batch,) = Predictor(model, device="cpu", precision="fp32").iter_readable(images, bs=8)
    assert batch.items == [images[k] for k in kept]
    assert torch.allclose(logits, batch.logits, atol=1e-3)
