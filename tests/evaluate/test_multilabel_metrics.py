"""Multi-label figures are counted by hand (one set of counts serves every threshold tried); they equal sklearn's."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from petclf.evaluate.multilabel import MultiLabelInterpretation


def test_multilabel_metrics_equal_scikit_learns():
    rng = np.random.default_rng(1)
    targets = (rng.random((80, 6)) < 0.3).astype(int)
    targets[:, 5] = 0  # a label absent from the split
    probs = np.clip(targets * 0.45 + rng.random((80, 6)) * 0.6, 0.01, 0.99)
    probs[:, 5] = 0.01  # and never predicted: left out of macro-F1, as sklearn's zero_division=nan does
    interp = MultiLabelInterpretation.from_arrays(probs, targets, classes=list("abcdef"), thresholds=[0.5] * 6)
    m, preds = interp.metrics(), (probs >= 0.5).astype(int)
    assert m["accuracy_multi"] == pytest.approx(1 - sk.hamming_loss(targets, preds))
    assert m["exact_match"] == pytest.approx(sk.accuracy_score(targets, preds))
    assert m["f1_micro"] == pytest.approx(sk.f1_score(targets, preds, average="micro"))
    assert m["f1_macro"] == pytest.approx(sk.f1_score(targets, preds, average="macro", zero_division=np.nan))
    expected_loss = np.mean([sk.log_loss(targets[:, j], probs[:, j], labels=[0, 1]) for j in range(6)])
    assert m["log_loss"] == pytest.approx(expected_loss)
    precision, recall, f1, support = sk.precision_recall_fscore_support(targets, preds, average=None, zero_division=0)
    table = interp.per_label()
    assert table.precision.iloc[:6].tolist() == pytest.approx(precision.tolist())
    assert table.recall.iloc[:6].tolist() == pytest.approx(recall.tolist())
    assert table.f1.iloc[:6].tolist() == pytest.approx(f1.tolist())
    assert table.support.iloc[:6].tolist() == support.tolist()
    assert table.loc["micro avg", "precision"] == pytest.approx(sk.precision_score(targets, preds, average="micro"))
