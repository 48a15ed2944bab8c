"""Temperature scaling of a single-label model's probabilities, and how well probabilities are calibrated.

A network trained with cross-entropy is usually over-confident: of the images it answers with
90% probability, fewer than 90% are right. Dividing the logits by one number T (the temperature)
fitted on the validation split fixes most of it without changing any answer (the order of the
logits stays). The fit is scikit-learn's ``CalibratedClassifierCV(method="temperature")`` over a
frozen pass-through estimator whose decision function is the logits themselves.

Two details make that estimator fit fixed logits cleanly: ``cv`` is one split whose test part is
every row (the estimator is frozen, so folds would only repeat the same predictions, and 5-fold
splitting refuses classes with fewer than 5 validation images), and a class absent from the
validation labels gets one all-zero row of weight 0 (scikit-learn encodes only the labels it sees,
and the logits have a column for every class).
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from petclf.core.defaults import ECE_BINS
from petclf.core.errors import UsageError

__all__ = ["MAX_TEMPERATURE", "MIN_TEMPERATURE", "expected_calibration_error", "fit_temperature", "reliability"]

#: Temperatures a model file may carry: outside these, probabilities are all 0/1 or all uniform.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0


def _pass_through(classes: int):
    """A scikit-learn classifier whose decision function is its input: the logits, already computed."""
    from sklearn.base import BaseEstimator, ClassifierMixin  # noqa: PLC0415 - sklearn only when fitting

    class LogitsEstimator(ClassifierMixin, BaseEstimator):
        def __init__(self, n_classes: int = 2) -> None:
            self.n_classes = n_classes

        def fit(self, X, y=None):  # noqa: N803 - scikit-learn's names
            self.classes_ = np.arange(self.n_classes)
            return self

        def decision_function(self, X):  # noqa: N803
            X = np.asarray(X)
            # scikit-learn takes a two-class decision as one column d and scales it as the logits (-d, d):
            # softmax([z0, z1] / T) is softmax([-d, d] / T) for d = (z1 - z0) / 2, exactly (a known T is
            # recovered: tests/runtime/test_temperature.py).
            return (X[:, 1] - X[:, 0]) / 2 if X.shape[1] == 2 else X

        def predict(self, X):  # noqa: N803
            return np.asarray(X).argmax(axis=1)

    return LogitsEstimator(classes)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T that minimises the log loss of ``softmax(logits / T)`` on (``logits``, ``labels``).

    ``logits`` is (n, classes), ``labels`` n class indices. Log-probabilities work as well as
    logits (softmax ignores a per-row constant). Example:
    ``fit_temperature(valid_logits, valid_targets)`` → ``1.7`` (an over-confident network).
    """
    from sklearn.calibration import CalibratedClassifierCV  # noqa: PLC0415
    from sklearn.frozen import FrozenEstimator  # noqa: PLC0415

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or logits.shape[1] < 2 or len(labels) != len(logits) or not len(labels):
        raise UsageError(f"expected (n, classes) logits and n labels; got {logits.shape} and {labels.shape}.")
    if not np.isfinite(logits).all():
        raise UsageError("the logits to fit a temperature on hold NaN or infinite values.")
    classes = logits.shape[1]
    missing = np.setdiff1d(np.arange(classes), labels)
    x = np.concatenate([logits, np.zeros((len(missing), classes))])
    y = np.concatenate([labels, missing])
    weight = np.concatenate([np.ones(len(labels)), np.zeros(len(missing))])
    every = np.arange(len(x))
    estimator = FrozenEstimator(_pass_through(classes).fit(x))
    with warnings.catch_warnings():
        # "FrozenEstimator does not accept sample_weight": right, and nothing of it is fitted.
        warnings.simplefilter("ignore", UserWarning)
        calibrated = CalibratedClassifierCV(estimator, method="temperature", cv=[(every, every)])
        calibrated.fit(x, y, sample_weight=weight)
    beta = float(calibrated.calibrated_classifiers_[0].calibrators[0].beta_)
    return float(min(max(1.0 / beta, MIN_TEMPERATURE), MAX_TEMPERATURE))


def _confidences(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    return probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(np.float64)


def confidence_bins(confidence: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """The bin (0 .. ``bins`` - 1) of each confidence: right-closed equal widths, as in Guo et al. (2017), so a
    confidence of exactly 1 falls in the last one.

    Example: ``confidence_bins(np.array([0.05, 0.5, 1.0]), 10)`` → ``array([0, 4, 9])``.
    """
    return np.clip(np.ceil(np.asarray(confidence) * bins).astype(int) - 1, 0, bins - 1)


def reliability(probs: np.ndarray, labels: np.ndarray, *, bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin (``bins`` equal widths over 0..1): images, mean confidence and accuracy (empty bins too).

    Example: ``reliability(probs, targets)[-1]`` → ``{'low': 0.933, 'high': 1.0, 'count': 412,
    'confidence': 0.991, 'accuracy': 0.985}``.
    """
    confidence, correct = _confidences(probs, labels)
    index = confidence_bins(confidence, bins)
    rows = []
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        rows.append({"low": b / bins, "high": (b + 1) / bins, "count": count,
                     "confidence": float(confidence[mask].mean()) if count else math.nan,
                     "accuracy": float(correct[mask].mean()) if count else math.nan})
    return rows


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, *, bins: int = ECE_BINS) -> float:
    """The expected calibration error: the image-weighted mean gap between confidence and accuracy per bin.

    Example: ``expected_calibration_error(interp.probs, interp.targets)`` → ``0.042``.
    """
    rows = reliability(probs, labels, bins=bins)
    total = sum(r["count"] for r in rows)
    if not total:
        return math.nan
    return float(sum(r["count"] * abs(r["confidence"] - r["accuracy"]) for r in rows if r["count"]) / total)
