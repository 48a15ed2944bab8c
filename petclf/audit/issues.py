"""Label issues from out-of-sample probabilities, by cleanlab's confident learning (not re-implemented here)."""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["find_label_issues", "overlapping_classes"]


def find_label_issues(frame: pd.DataFrame, codes: np.ndarray, probs: np.ndarray, classes: tuple[str, ...]) -> pd.DataFrame:
    """The images cleanlab flags as probably mislabelled, most likely wrong first.

    Columns: ``row`` (in ``frame``), ``path``, ``split``, ``given``, ``suggested`` (the most likely
    class out of sample), ``score`` (1 − the probability of the given label: cleanlab's
    self-confidence, flipped so that higher is worse), ``p_given``, ``p_suggested``.

    Example: ``find_label_issues(dataset.frame, codes, oof.probs, oof.classes).head()``.
    """
    from cleanlab.filter import find_label_issues as cleanlab_issues  # noqa: PLC0415 - optional dependency

    rows = cleanlab_issues(labels=codes, pred_probs=probs, return_indices_ranked_by="self_confidence")
    rows = np.asarray(rows, dtype=int)
    suggested = probs.argmax(1)
    return pd.DataFrame({
        "row": rows,
        "path": frame.path.to_numpy()[rows],
        "split": frame.split.to_numpy()[rows],
        "given": [classes[c] for c in codes[rows]],
        "suggested": [classes[c] for c in suggested[rows]],
        "score": 1.0 - probs[rows, codes[rows]],
        "p_given": probs[rows, codes[rows]],
        "p_suggested": probs[rows, suggested[rows]],
    })


def overlapping_classes(codes: np.ndarray, probs: np.ndarray, classes: tuple[str, ...], *, top: int = 10) -> pd.DataFrame:
    """The class pairs that overlap most (cleanlab's ``find_overlapping_classes``): ``class_a``, ``class_b``,
    ``images`` (estimated to carry one label but belong to the other), ``joint_probability``."""
    from cleanlab.dataset import find_overlapping_classes  # noqa: PLC0415

    pairs = find_overlapping_classes(labels=codes, pred_probs=probs)
    out = pd.DataFrame({
        "class_a": [classes[int(a)] for a in pairs["Class Index A"]],
        "class_b": [classes[int(b)] for b in pairs["Class Index B"]],
        "images": pairs["Num Overlapping Examples"].astype(int).to_numpy(),
        "joint_probability": pairs["Joint Probability"].to_numpy(),
    })
    return out[out.images > 0].head(top).reset_index(drop=True)
