"""Drawing a random train/valid split that every class (or label) survives, repeatable by its seed."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

__all__ = ["random_split", "random_split_multi"]


def random_split(frame: pd.DataFrame, *, valid_pct: float, seed: int) -> pd.DataFrame:
    """Split each class apart so small classes still reach the validation set (stratified)."""
    rng = np.random.default_rng(seed)
    split = np.array(["train"] * len(frame), dtype=object)
    for _, index in frame.groupby("label").indices.items():
        n_valid = int(round(len(index) * valid_pct))
        if len(index) >= 2 and valid_pct > 0:
            n_valid = min(max(n_valid, 1), len(index) - 1)
        split[rng.permutation(index)[:n_valid]] = "valid"
    return frame.assign(split=split)


def random_split_multi(frame: pd.DataFrame, *, valid_pct: float, seed: int) -> pd.DataFrame:
    """Hold out ``valid_pct`` of images at random, never the last training image of a label."""
    rng = np.random.default_rng(seed)
    left = Counter(label for labels in frame.label for label in labels)
    target, chosen = int(round(len(frame) * valid_pct)), []
    for i in rng.permutation(len(frame)):
        if len(chosen) >= target:
            break
        labels = frame.label.iat[i]
        if all(left[label] > 1 for label in labels):
            chosen.append(i)
            left.subtract(labels)
    split = np.array(["train"] * len(frame), dtype=object)
    split[chosen] = "valid"
    return frame.assign(split=split)
