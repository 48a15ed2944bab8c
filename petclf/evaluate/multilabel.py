"""Where a multi-label classifier is wrong: label probabilities computed once, reports as views of them.

A label is predicted when its probability reaches its threshold. ``choose_thresholds`` picks the
thresholds on the validation set: one for every label (the best micro-F1) or one per label.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score

from petclf.core.defaults import MULTI_LABEL, THRESHOLD_MODES
from petclf.core.errors import UsageError
from petclf.core.options import require_threshold
from petclf.evaluate.plots import image_grid

__all__ = ["MIN_POSITIVES_PER_LABEL", "THRESHOLD_GRID", "MultiLabelInterpretation", "choose_thresholds"]

_EPS = 1e-12
#: Thresholds tried when choosing on the validation set.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
#: 'per-label' thresholds need this many validation images with the label; rarer labels keep the global one.
MIN_POSITIVES_PER_LABEL = 5


# F1 from counts, by hand: choose_thresholds scores ~90 thresholds × every label from one set of counts per threshold,
# which sklearn's f1_score would recount from the (n, labels) masks each time. The figures equal scikit-learn's
# (tests/evaluate/test_multilabel_metrics.py).
def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(tp, dtype=np.float64), where=denom > 0)


def _best(scores: np.ndarray) -> float:
    """The grid threshold with the highest score; among equal scores the one nearest 0.5."""
    top = scores.max()
    candidates = THRESHOLD_GRID[np.isclose(scores, top)]
    return float(candidates[np.argmin(np.abs(candidates - 0.5))])


def choose_thresholds(probs, targets, *, mode: str | float = "auto") -> list[float]:
    """Decision thresholds, one per label, chosen on validation ``probs`` and ``targets`` (both (n, labels)).

    ``mode``: 'auto' — one threshold for every label, the one with the best micro-F1;
    'per-label' — each label's own best F1 (labels with fewer than ``MIN_POSITIVES_PER_LABEL``
    positives keep the global one); a number — that threshold for every label.

    Example: ``choose_thresholds(interp.probs, interp.targets)`` → ``[0.42, 0.42, …]``.
    """
    require_threshold(mode)
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets).astype(bool)
    n_labels = probs.shape[1]
    if not isinstance(mode, str):
        return [float(mode)] * n_labels
    tp = np.empty((len(THRESHOLD_GRID), n_labels))
    fp, fn = np.empty_like(tp), np.empty_like(tp)
    for k, t in enumerate(THRESHOLD_GRID):  # one pass per threshold: memory stays at one (n, labels) mask
        predicted = probs >= t
        tp[k] = (predicted & targets).sum(0)
        fp[k] = (predicted & ~targets).sum(0)
        fn[k] = (~predicted & targets).sum(0)
    overall = _best(_f1(tp.sum(1), fp.sum(1), fn.sum(1)))
    if mode == "auto":
        return [overall] * n_labels
    per_label_f1 = _f1(tp, fp, fn)
    positives = targets.sum(0)
    return [_best(per_label_f1[:, j]) if positives[j] >= MIN_POSITIVES_PER_LABEL else overall
            for j in range(n_labels)]


@dataclass(frozen=True)
class MultiLabelInterpretation:
    """Label probabilities, 0/1 targets and thresholds of one split; every report is computed from these.

    Example::

        interp = MultiLabelInterpretation.from_arrays(probs, targets, classes=["cat", "dog"])
        interp.metrics()["f1_micro"]
    """

    probs: np.ndarray = field(repr=False)  # (n, labels) probabilities, a sigmoid each
    targets: np.ndarray = field(repr=False)  # (n, labels) 0/1
    classes: tuple[str, ...]
    thresholds: tuple[float, ...] = field(repr=False)
    items: tuple[str, ...] = field(default=(), repr=False)
    split: str = "valid"
    skipped: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    task = MULTI_LABEL

    @classmethod
    def from_arrays(cls, probs, targets, *, classes: Sequence[str], thresholds: Sequence[float] | None = None,
                    items: Sequence[str] = (), split: str = "valid",
                    skipped: Sequence[tuple[str, str]] = ()) -> "MultiLabelInterpretation":
        probs = np.asarray(probs, dtype=np.float64)
        targets = np.asarray(targets).astype(np.int8)
        if probs.ndim != 2 or probs.shape != targets.shape or probs.shape[1] != len(classes):
            raise UsageError(f"expected probs and targets of shape (n, {len(classes)}); "
                             f"got {probs.shape} and {targets.shape}.")
        if items and len(items) != len(probs):
            raise UsageError(f"expected {len(probs)} items, got {len(items)}.")
        thresholds = tuple(float(t) for t in (thresholds if thresholds is not None else [0.5] * len(classes)))
        if len(thresholds) != len(classes):
            raise UsageError(f"expected {len(classes)} thresholds, got {len(thresholds)}.")
        return cls(probs=probs, targets=targets, classes=tuple(classes), thresholds=thresholds,
                   items=tuple(map(str, items)), split=split, skipped=tuple((str(p), str(r)) for p, r in skipped))

    def with_thresholds(self, thresholds: Sequence[float]) -> "MultiLabelInterpretation":
        """The same predictions judged at other thresholds (one per label)."""
        if len(thresholds) != len(self.classes):
            raise UsageError(f"expected {len(self.classes)} thresholds, got {len(thresholds)}.")
        return replace(self, thresholds=tuple(float(t) for t in thresholds))

    @cached_property
    def preds(self) -> np.ndarray:
        """(n, labels) bool: each label at or over its threshold."""
        return self.probs >= np.asarray(self.thresholds)[None, :]

    @cached_property
    def losses(self) -> np.ndarray:
        """Binary cross-entropy of each item, averaged over its labels."""
        p = np.clip(self.probs, _EPS, 1 - _EPS)
        return -(self.targets * np.log(p) + (1 - self.targets) * np.log(1 - p)).mean(axis=1)

    def _counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        truth = self.targets.astype(bool)
        return ((self.preds & truth).sum(0).astype(np.float64), (self.preds & ~truth).sum(0).astype(np.float64),
                (~self.preds & truth).sum(0).astype(np.float64))

    def _average_precision(self) -> np.ndarray:
        """AP per label; NaN for a label without positives in this split."""
        return np.array([average_precision_score(self.targets[:, j], self.probs[:, j]) if self.targets[:, j].any()
                         else np.nan for j in range(len(self.classes))])

    def threshold_label(self) -> float | str:
        """The threshold when all labels share one, else 'per-label'."""
        return self.thresholds[0] if len(set(self.thresholds)) == 1 else THRESHOLD_MODES[1]

    def metrics(self) -> dict:
        """accuracy_multi (labels right, at the thresholds), exact match, micro- and macro-F1, mAP, log loss."""
        n = len(self.targets)
        tp, fp, fn = self._counts()
        ap = self._average_precision()
        present = (self.targets.sum(0) > 0) | (self.preds.sum(0) > 0)
        per_label_f1 = _f1(tp, fp, fn)
        nan = float("nan")
        return {
            "split": self.split, "task": MULTI_LABEL, "n": n, "n_labels": len(self.classes),
            "threshold": self.threshold_label(),
            "accuracy_multi": float((self.preds == self.targets.astype(bool)).mean()) if n else nan,
            "exact_match": float((self.preds == self.targets.astype(bool)).all(axis=1).mean()) if n else nan,
            "f1_micro": float(_f1(tp.sum(), fp.sum(), fn.sum())) if n else nan,
            "f1_macro": float(per_label_f1[present].mean()) if present.any() else nan,
            "map": float(np.nanmean(ap)) if not np.isnan(ap).all() else nan,
            "log_loss": float(self.losses.mean()) if n else nan,
        }

    def per_label(self) -> pd.DataFrame:
        """Precision, recall, F1, average precision, support and threshold per label, then macro and micro averages."""
        tp, fp, fn = self._counts()
        precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
        recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
        frame = pd.DataFrame({"precision": precision, "recall": recall, "f1": _f1(tp, fp, fn),
                              "ap": self._average_precision(), "support": (tp + fn).astype(int),
                              "threshold": self.thresholds}, index=list(self.classes))
        cols = ["precision", "recall", "f1", "ap"]
        frame.loc["macro avg"] = {c: frame[c].mean() for c in cols} | {"support": int((tp + fn).sum()),
                                                                        "threshold": np.nan}
        micro_p = tp.sum() / max(tp.sum() + fp.sum(), 1)
        micro_r = tp.sum() / max(tp.sum() + fn.sum(), 1)
        frame.loc["micro avg"] = {"precision": micro_p, "recall": micro_r,
                                  "f1": float(_f1(tp.sum(), fp.sum(), fn.sum())), "ap": np.nan,
                                  "support": int((tp + fn).sum()), "threshold": np.nan}
        frame.index.name = "label"
        return frame.astype({"support": int})

    def most_missed(self, k: int = 10) -> pd.DataFrame:
        """Labels most often missed (given but not predicted): label, missed, support, share missed."""
        _, _, fn = self._counts()
        support = self.targets.sum(0)
        frame = pd.DataFrame({"label": list(self.classes), "missed": fn.astype(int), "support": support.astype(int),
                              "share": np.divide(fn, support, out=np.zeros_like(fn), where=support > 0)})
        return frame[frame.missed > 0].sort_values(["missed", "label"], ascending=[False, True]).head(k) \
            .reset_index(drop=True)

    def most_added(self, k: int = 10) -> pd.DataFrame:
        """Labels most often added (predicted but not given): label, added, predicted, share of predictions wrong."""
        _, fp, _ = self._counts()
        predicted = self.preds.sum(0).astype(np.float64)
        frame = pd.DataFrame({"label": list(self.classes), "added": fp.astype(int), "predicted": predicted.astype(int),
                              "share": np.divide(fp, predicted, out=np.zeros_like(fp), where=predicted > 0)})
        return frame[frame.added > 0].sort_values(["added", "label"], ascending=[False, True]).head(k) \
            .reset_index(drop=True)

    def _names(self, mask: np.ndarray) -> str:
        return " ".join(c for c, on in zip(self.classes, mask) if on) or "(none)"

    def worst(self, k: int = 9) -> np.ndarray:
        """Indices of the ``k`` items with the largest loss, largest first (the rows of ``top_losses``)."""
        return np.argsort(-self.losses, kind="stable")[:k]

    def top_losses(self, k: int = 9) -> pd.DataFrame:
        """The ``k`` items with the largest loss: given and predicted label sets, what was missed and added."""
        order = self.worst(k)
        truth = self.targets.astype(bool)
        return pd.DataFrame({
            "path": [self.items[i] if self.items else "" for i in order],
            "given": [self._names(truth[i]) for i in order],
            "predicted": [self._names(self.preds[i]) for i in order],
            "missed": [self._names(truth[i] & ~self.preds[i]) for i in order],
            "added": [self._names(self.preds[i] & ~truth[i]) for i in order],
            "loss": self.losses[order],
        })

    def plot_top_losses(self, k: int = 9) -> Figure:
        """Image grid of the worst items, each titled with its given and predicted labels."""
        worst = self.top_losses(k)
        titles = [f"given: {r.given}\npredicted: {r.predicted}\nloss {r.loss:.2f}" for r in worst.itertuples()]
        return image_grid(list(worst.path), titles, suptitle="top losses: given and predicted labels", fontsize=8)
