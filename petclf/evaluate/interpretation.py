"""Where a classifier is wrong: predictions computed once, reports as cheap views of them.

No fastai here: a saved model is judged through ``runtime.Predictor`` (``petclf report`` stays
light). ``interpret(learn)``, the one entry point that takes a fastai ``Learner``, lives beside
the learner in ``petclf.learn.judge``.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from petclf.core import log
from petclf.core.defaults import DEFAULT_SEED, DEFAULT_VALID_PCT, SINGLE_LABEL
from petclf.core.errors import DataError, UsageError
from petclf.evaluate.multilabel import MultiLabelInterpretation
from petclf.evaluate.plots import image_grid
from petclf.data.scan import check_folder
from petclf.data.table import TableFormat
from petclf.runtime.modeldir import read_meta
from petclf.runtime.predict import Predictor

__all__ = ["AnyInterpretation", "Interpretation", "MultiLabelInterpretation", "interpret_files", "interpret_saved"]

_EPS = 1e-12


@dataclass(frozen=True)
class Interpretation:
    """Class probabilities, targets and items of one split; every report below is computed from these.

    Example::

        interp = Interpretation.from_arrays(probs, targets, classes=["cat", "dog"])
        interp.confusion_matrix()
    """

    probs: np.ndarray = field(repr=False)  # (n, n_classes) probabilities
    targets: np.ndarray = field(repr=False)  # (n,) class indices
    classes: tuple[str, ...]
    items: tuple[str, ...] = field(default=(), repr=False)  # file paths, in the same order
    split: str = "valid"
    skipped: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (path, reason): files that could not be read
    task = SINGLE_LABEL

    @classmethod
    def from_arrays(cls, probs, targets, *, classes: Sequence[str], items: Sequence[str] = (),
                    split: str = "valid", skipped: Sequence[tuple[str, str]] = ()) -> "Interpretation":
        probs = np.asarray(probs, dtype=np.float64)
        targets = np.asarray(targets, dtype=np.int64)
        if probs.ndim != 2 or probs.shape[1] != len(classes) or len(targets) != len(probs):
            raise UsageError(f"expected probs of shape (n, {len(classes)}) and n targets; "
                             f"got {probs.shape} and {targets.shape}.")
        if items and len(items) != len(probs):
            raise UsageError(f"expected {len(probs)} items, got {len(items)}.")
        return cls(probs=probs, targets=targets, classes=tuple(classes), items=tuple(map(str, items)), split=split,
                   skipped=tuple((str(p), str(r)) for p, r in skipped))

    @cached_property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @cached_property
    def losses(self) -> np.ndarray:
        """Cross-entropy of each item: −log p(actual class)."""
        return -np.log(np.clip(self.probs[np.arange(len(self.targets)), self.targets], _EPS, 1.0))

    def confusion_matrix(self, *, normalize: bool = False) -> pd.DataFrame:
        """Counts (or row shares with ``normalize``): rows are actual classes, columns predicted."""
        counts = confusion_matrix(self.targets, self.preds, labels=np.arange(len(self.classes)))
        frame = pd.DataFrame(counts, index=list(self.classes), columns=list(self.classes))
        frame.index.name, frame.columns.name = "actual", "predicted"
        if normalize:
            frame = frame.div(frame.sum(axis=1).replace(0, 1), axis=0)
        return frame

    def most_confused(self, min_val: int = 1) -> pd.DataFrame:
        """(actual, predicted, count) for wrong pairs seen at least ``min_val`` times, largest first."""
        cm = self.confusion_matrix().to_numpy()
        rows = [(self.classes[a], self.classes[p], int(cm[a, p]))
                for a in range(len(self.classes)) for p in range(len(self.classes))
                if a != p and cm[a, p] >= min_val]
        rows.sort(key=lambda r: (-r[2], r[0], r[1]))
        return pd.DataFrame(rows, columns=["actual", "predicted", "count"])

    def top_losses(self, k: int = 9) -> pd.DataFrame:
        """The ``k`` items with the largest loss, with both the predicted and the actual class's probability."""
        order = np.argsort(-self.losses, kind="stable")[:k]
        preds, idx = self.preds, np.arange(len(self.targets))
        return pd.DataFrame({
            "path": [self.items[i] if self.items else "" for i in order],
            "actual": [self.classes[self.targets[i]] for i in order],
            "predicted": [self.classes[preds[i]] for i in order],
            "loss": self.losses[order],
            "prob_predicted": self.probs[idx[order], preds[order]],
            "prob_actual": self.probs[idx[order], self.targets[order]],
        })

    def per_class(self) -> pd.DataFrame:
        """Precision, recall, F1, support and accuracy per class, then macro and weighted averages.

        A class's accuracy is the share of its images classified correctly (the CIFAR-10
        tutorial's "accuracy of each class"), which equals its recall.
        """
        # zero_division=0: a class never predicted (or absent) scores 0, not a warning and NaN.
        precision, recall, f1, support = precision_recall_fscore_support(
            self.targets, self.preds, labels=np.arange(len(self.classes)), average=None, zero_division=0)
        frame = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1,
                              "support": support.astype(int), "accuracy": recall}, index=list(self.classes))
        weights = support / max(support.sum(), 1)
        cols = ["precision", "recall", "f1", "accuracy"]
        macro = {c: frame[c].mean() for c in cols} | {"support": int(support.sum())}
        weighted = {c: float((frame[c] * weights).sum()) for c in cols} | {"support": int(support.sum())}
        frame.loc["macro avg"] = macro
        frame.loc["weighted avg"] = weighted
        frame.index.name = "class"
        return frame.astype({"support": int})

    def metrics(self) -> dict:
        """Accuracy, error rate, balanced accuracy, macro-F1, top-k accuracy (k=5 with more than 5 classes),
        log loss and counts.

        Balanced accuracy is the mean recall of the classes present in this split, and macro-F1
        the mean F1 of the classes present or predicted: both weigh a class of 8 images as much
        as one of 800, which plain accuracy does not.
        """
        n = len(self.targets)
        correct = int((self.preds == self.targets).sum())
        nan = float("nan")
        result = {"split": self.split, "task": SINGLE_LABEL, "n": n, "n_classes": len(self.classes),
                  "correct": correct,
                  "accuracy": correct / n if n else nan,
                  "error_rate": 1 - correct / n if n else nan,
                  # scikit-learn averages over the classes present (balanced accuracy) and present or
                  # predicted (macro-F1, labels left out), as documented above.
                  "balanced_accuracy": _balanced_accuracy(self.targets, self.preds) if n else nan,
                  "f1_macro": _f1_macro(self.targets, self.preds) if n else nan,
                  # Ours, not sklearn.metrics.log_loss: the per-item losses are needed for top_losses anyway, and
                  # log_loss renormalises rows that do not sum to 1 (a calibrated or TTA-averaged model's need not
                  # be exact); tests/evaluate/test_interpret.py checks the two agree on proper probabilities.
                  "log_loss": float(self.losses.mean()) if n else nan}
        if len(self.classes) > 5:
            # Ours, not sklearn's top_k_accuracy_score: on tied probabilities that one ranks the higher class index
            # first, so its top-1 could disagree with argmax (preds, the confusion matrix). Untied, they agree
            # (tests/evaluate/test_interpret.py).
            top5 = np.argsort(-self.probs, axis=1, kind="stable")[:, :5]
            result["top5_accuracy"] = float((top5 == self.targets[:, None]).any(axis=1).mean()) if n else nan
        return result

    def plot_confusion_matrix(self, *, normalize: bool = False) -> Figure:
        """A confusion-matrix figure that stays readable from 2 to a few hundred classes."""
        cm = self.confusion_matrix(normalize=normalize)
        n = len(self.classes)
        side = min(max(5.0, 0.28 * n + 2.5), 60.0)
        fig = Figure(figsize=(side, side))
        ax = fig.add_subplot()
        ax.imshow(cm.to_numpy(), cmap="Blues")
        font = max(3.0, min(10.0, 260.0 / max(n, 1)))
        # Class names are drawn as typed: '$' would otherwise start matplotlib's math mode (and can fail to parse).
        ax.set_xticks(range(n), labels=list(self.classes), rotation=90, fontsize=font, parse_math=False)
        ax.set_yticks(range(n), labels=list(self.classes), fontsize=font, parse_math=False)
        if n <= 40:
            top = cm.to_numpy().max() or 1
            for (a, p), v in np.ndenumerate(cm.to_numpy()):
                text = f"{v:.2f}" if normalize else str(int(v))
                ax.text(p, a, text, ha="center", va="center", fontsize=font,
                        color="white" if v > top / 2 else "black")
        ax.set(xlabel="predicted", ylabel="actual")
        ax.set_title(f"confusion matrix ({self.split}{', normalised' if normalize else ''})", parse_math=False)
        return fig

    def plot_top_losses(self, k: int = 9) -> Figure:
        """Image grid of the worst items, each titled predicted/actual/loss/probability of the prediction."""
        worst = self.top_losses(k)
        titles = [f"{r.predicted}/{r.actual}\nloss {r.loss:.2f}, p {r.prob_predicted:.2f}" for r in worst.itertuples()]
        return image_grid(list(worst.path), titles,
                          suptitle="top losses: predicted/actual, loss, probability of the prediction")


# Either, where the task is checked before task-specific tables; what both offer is InterpretationLike
# (petclf.evaluate.protocol).
AnyInterpretation = Interpretation | MultiLabelInterpretation


def _balanced_accuracy(targets: np.ndarray, preds: np.ndarray) -> float:
    with _expected_gaps():
        return float(balanced_accuracy_score(targets, preds))


def _f1_macro(targets: np.ndarray, preds: np.ndarray) -> float:
    with _expected_gaps():
        return float(f1_score(targets, preds, average="macro", zero_division=0))


@contextlib.contextmanager
def _expected_gaps() -> Iterator[None]:
    """scikit-learn's warnings about classes a split lacks, which the averages above handle as documented."""
    with warnings.catch_warnings():
        # A class predicted but absent from the split, or a split of one class (new data, `--split all`), is expected;
        # the warnings would only alarm the reader of a report.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true", category=UserWarning)
        warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
        yield


def interpret_saved(model_dir: str | Path, data: str | Path, *, split: str = "valid", bs: int = 64,
                    layout: str | None = None, label_pat: str | None = None,
                    images: str | Path | None = None) -> AnyInterpretation:
    """Predict a split of ``data`` with a saved model directory and return an ``Interpretation``.

    The split is rebuilt as in training (same layout, label pattern, ``valid_pct`` and seed);
    ``split="all"`` takes every labelled image, for a folder the model has never seen.
    ``layout`` and ``label_pat`` override what the model directory says; a table (csv layout) is
    read with the columns and label delimiter the model was trained with, its file names relative
    to ``images`` (default: the table's folder). A label pattern read from the model directory
    runs under a time limit, since the file may come from anyone.

    Example: ``interpret_saved("runs/caltech/model", "data/caltech10", split="test").metrics()``.
    """
    if split not in ("valid", "test", "all"):
        raise UsageError(f"split must be 'valid', 'test' or 'all'. Received: split={split!r}.")
    info = read_meta(model_dir).get("data") or {}
    pattern = label_pat if label_pat is not None else info.get("label_pat")
    table = TableFormat.from_fields({**info, "images": images})
    options = dict(label_pat=pattern, trusted_pattern=label_pat is not None or pattern is None,
                   valid_pct=info.get("valid_pct", DEFAULT_VALID_PCT), seed=info.get("seed", DEFAULT_SEED),
                   trainable=False, table=table)
    # Unreadable files are left out, as in training. A table is recognised by its file, whatever the model says.
    stored = info.get("layout") if info.get("layout") != "csv" else None
    dataset = check_folder(data, layout=layout or stored or "auto", **options).dataset
    frame = dataset.frame if split == "all" else dataset.frame[dataset.frame.split == split]
    if frame.empty:
        raise UsageError(f"{data} has no {split} images" + (" (a test split needs a test/ folder)." if split == "test" else "."))
    return interpret_files(Predictor(model_dir), list(frame.path), list(frame.label), split=split, bs=bs)


def interpret_files(predictor, paths: Sequence[str], labels: Sequence, *, split: str = "valid",
                    bs: int = 64) -> AnyInterpretation:
    """Predict labelled files with a ``Predictor`` and return an ``Interpretation`` in the files' order.

    For a multi-label predictor each label is a sequence of labels, and the result is a
    ``MultiLabelInterpretation`` at the predictor's thresholds.

    Example: ``interpret_files(Predictor(d), ["a/cat_1.jpg"], ["cat"], split="test").metrics()``.
    """
    if predictor.multi_label:
        return _interpret_label_sets(predictor, paths, labels, split=split, bs=bs)
    index = {c: i for i, c in enumerate(predictor.classes)}
    known = [(p, c) for p, c in zip(paths, labels) if c in index]
    if len(known) < len(paths):
        log.warn(f"{len(paths) - len(known)} {split} images have classes the model does not know; left out.")
    if not known:
        raise DataError(f"none of the {len(paths)} {split} images has a class the model knows "
                        f"({', '.join(predictor.classes[:10])}): check that the folder and the model belong together.")
    label_of = dict(known)
    probs, items, skipped = _predict_readable(predictor, [p for p, _ in known], split=split, bs=bs)
    return Interpretation.from_arrays(probs, [index[label_of[p]] for p in items],
                                      classes=predictor.classes, items=items, split=split, skipped=skipped)


def _predict_readable(predictor, paths: list[str], *, split: str, bs: int) -> tuple[np.ndarray, list, list]:
    """Probabilities of the files that can be read, those files, and (path, reason) for the others."""
    probs, items, skipped = [], [], []
    # A file can vanish or be damaged after the scan (or mid-run): it is left out with its reason, not fatal.
    for batch in predictor.iter_readable(paths, bs=bs):
        probs.append(predictor.probabilities(batch.logits))
        items += batch.items
        skipped += [(str(item), reason) for item, reason in batch.failed]
    if skipped:
        log.warn(f"{len(skipped)} {split} images could not be read and are left out of the evaluation, e.g. "
                 f"{skipped[0][0]}: {skipped[0][1]}")
    if not items:
        raise DataError(f"none of the {len(paths)} {split} images could be read (e.g. {skipped[0][0]}: "
                        f"{skipped[0][1]}): check that the folder is still there.")
    return torch.cat(probs).numpy(), items, skipped


def _interpret_label_sets(predictor, paths: Sequence[str], labels: Sequence, *, split: str,
                          bs: int) -> MultiLabelInterpretation:
    index = {c: i for i, c in enumerate(predictor.classes)}
    unknown = sorted({label for row in labels for label in _as_set(row)} - set(index))
    if unknown:
        log.warn(f"labels {', '.join(unknown[:10])} of the {split} images are not among the model's labels; "
                 "they are left out of the figures.")
    target_of = {}
    for path, row in zip(paths, labels):
        target = np.zeros(len(index), dtype=np.int8)
        target[[index[label] for label in _as_set(row) if label in index]] = 1
        target_of[path] = target
    probs, items, skipped = _predict_readable(predictor, list(paths), split=split, bs=bs)
    return MultiLabelInterpretation.from_arrays(probs, np.stack([target_of[p] for p in items]),
                                                classes=predictor.classes, thresholds=predictor.thresholds,
                                                items=items, split=split, skipped=skipped)


def _as_set(labels) -> tuple[str, ...]:
    return (labels,) if isinstance(labels, str) else tuple(labels)
