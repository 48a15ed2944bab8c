"""What every interpretation of a split offers, single-label (``Interpretation``) or multi-label
(``MultiLabelInterpretation``): the report, the run's files and the audit rely on these members only, and reach the
task-specific tables (confusion matrix, per class; per label, most missed) after checking ``task``."""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["InterpretationLike"]


@runtime_checkable
class InterpretationLike(Protocol):
    """Predictions of one split judged against its labels.

    Example: ``def headline(interp: InterpretationLike) -> float: return interp.metrics()["log_loss"]``.
    """

    probs: np.ndarray  # (n, classes) probabilities: a softmax row, or a sigmoid per label
    targets: np.ndarray  # (n,) class indices, or (n, labels) 0/1
    classes: tuple[str, ...]
    items: tuple[str, ...]  # file paths, in the order of the rows
    split: str
    skipped: tuple[tuple[str, str], ...]  # (path, reason): files that could not be read
    task: str  # SINGLE_LABEL or MULTI_LABEL (petclf.core.defaults)

    @property
    def preds(self) -> np.ndarray:
        """The decisions: (n,) class indices, or (n, labels) bool at the thresholds."""

    @property
    def losses(self) -> np.ndarray:
        """(n,) each item's loss: cross-entropy, or binary cross-entropy averaged over its labels."""

    @classmethod
    def from_arrays(cls, probs, targets, *, classes: Sequence[str], items: Sequence[str] = (), split: str = "valid",
                    skipped: Sequence[tuple[str, str]] = ()) -> "InterpretationLike":
        """The interpretation of arrays of probabilities and targets (checked for shape)."""

    def metrics(self) -> dict:
        """Headline figures of the split, with ``split``, ``task`` and ``n`` among them."""

    def top_losses(self, k: int = 9) -> pd.DataFrame:
        """The ``k`` items with the highest loss, worst first."""

    def plot_top_losses(self, k: int = 9) -> Figure:
        """A grid of the ``k`` worst items with their labels and predictions."""
