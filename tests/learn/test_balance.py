"""Skewed classes: the scan warns, --balance weights the loss or balances the sampler, reports show macro figures."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from petclf import quick_learner
from petclf.cli import main
from petclf.core.errors import UsageError
from petclf.data.layouts import find_dataset
from petclf.data.scan import check_folder
from petclf.evaluate.interpretation import Interpretation
from petclf.learn.task import class_weights

from ..conftest import COLOURS, TINY, make_image
from ..test_cli import TINY_ARGS

#: 24 red, 12 green, 4 blue training images: the largest class has 6x the smallest.
SKEW = {"red": 24, "green": 12, "blue": 4}


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    root = tmp_path_factory.mktemp("skewed")
    for k, (label, n) in enumerate(SKEW.items()):
        for i in range(n):
            make_image(root / "train" / label / f"{i}.png", COLOURS[label], seed=100 * k + i)
        for i in range(3):
            make_image(root / "valid" / label / f"{i}.png", COLOURS[label], seed=1000 + 100 * k + i)
    return root


def test_the_scan_warns_of_skewed_classes_and_check_prints_the_counts(skewed, capsys):
    report = check_folder(skewed)
    assert any("skewed classes" in w and "6.0x" in w for w in report.warnings)
    assert main(["check", str(skewed)]) == 0
    out = capsys.readouterr().out
    assert "red" in out and "24" in out and "warning  skewed classes" in out


def test_class_weights_give_every_class_the_same_total_weight(skewed):
    ds = find_dataset(skewed)
    weights = class_weights(ds)
    counts = ds.class_counts("train")
    totals = [float(w) * counts[c] for c, w in zip(ds.classes, weights)]
    assert np.allclose(totals, totals[0])
    assert float((weights * torch_counts(ds)).sum()) == pytest.approx(ds.count("train"))  # mean weight 1


def torch_counts(ds):
    import torch

    return torch.tensor([ds.class_counts("train")[c] for c in ds.classes], dtype=torch.float32)


def test_balance_weights_puts_class_weights_into_the_loss(skewed):
    learn = quick_learner(skewed, balance="weights", **TINY)
    weight = learn.loss_func.func.weight
    assert weight is not None and weight.shape == (3,)
    blue = learn.dls.vocab.o2i["blue"]
    assert float(weight[blue]) == pytest.approx(40 / (3 * 4))
    assert quick_learner(skewed, balance="none", **TINY).loss_func.func.weight is None
    default = quick_learner(skewed, **TINY).loss_func.func.weight  # the default is 'weights'
    assert default is not None and float(default[blue]) == pytest.approx(40 / (3 * 4))


def test_balance_sampler_draws_classes_about_equally(skewed):
    learn = quick_learner(skewed, balance="sampler", **TINY)
    vocab = learn.dls.vocab
    seen = Counter()
    for _ in range(10):
        for _, yb in learn.dls.train:
            seen.update(vocab[int(y)] for y in yb)
    shares = np.array([seen[c] for c in SKEW]) / sum(seen.values())
    assert np.all(np.abs(shares - 1 / 3) < 0.08), shares  # unbalanced it would be 0.6 / 0.3 / 0.1


def test_unknown_balance_is_refused_before_work(skewed):
    with pytest.raises(UsageError, match="unknown balance 'smote'"):
        quick_learner(skewed, balance="smote", **TINY)


def test_train_reports_balanced_figures(skewed, tmp_path):
    assert main(["train", str(skewed), "--balance", "weights", "--epochs", "1", "--lr", "1e-2", "--out",
                 str(tmp_path), *TINY_ARGS]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["balance"] == "weights" and summary["task"] == "single_label"
    for key in ("error_rate", "accuracy", "balanced_accuracy", "f1_macro"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert "recall" in (tmp_path / "per_class.csv").read_text().splitlines()[0]


def test_balanced_accuracy_and_macro_f1_see_a_neglected_small_class():
    # 8 'big' images all right, 2 'small' images both called 'big': 80% accuracy hides a class never found
    probs = np.array([[0.9, 0.1]] * 10)
    targets = np.array([0] * 8 + [1] * 2)
    m = Interpretation.from_arrays(probs, targets, classes=["big", "small"]).metrics()
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["f1_macro"] == pytest.approx((2 * 0.8 / 1.8) / 2)
