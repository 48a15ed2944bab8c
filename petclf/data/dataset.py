"""The labelled images ``find_dataset`` returns: one row per file with its label and split."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from petclf.data.table import TableFormat

__all__ = ["LabelledImages"]


@dataclass(frozen=True)
class LabelledImages:
    """Labelled image files: one row per file with columns ``path``, ``label``, ``split``.

    In a multi-label dataset each ``label`` is a tuple of labels; otherwise it is one string.
    """

    frame: pd.DataFrame = field(repr=False)
    layout: str
    root: Path
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "reason"]), repr=False)
    multi_label: bool = False
    table: TableFormat | None = None  # how a table was read (the columns used), for the csv layout

    @property
    def classes(self) -> list[str]:
        return sorted(self.class_counts("train").index)

    def class_counts(self, split: str = "train") -> pd.Series:
        """Images per class in ``split``, largest first (multi-label: images carrying each label).

        Example: ``find_dataset("digits").class_counts()["seven"]`` → ``144``.
        """
        labels = self.frame.loc[self.frame.split == split, "label"]
        if self.multi_label:
            labels = labels.explode()
        return labels.value_counts()

    def count(self, split: str) -> int:
        return int((self.frame.split == split).sum())

    def describe(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in ("train", "valid", "test") if self.count(s)]
        kind = "labels (multi-label)" if self.multi_label else "classes"
        return f"{self.layout} layout, {len(self.classes)} {kind}, " + ", ".join(parts) + " images"
