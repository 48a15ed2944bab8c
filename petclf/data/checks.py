"""Whether labelled images can train a classifier: enough classes, validation images, labels seen in training."""
from __future__ import annotations

import pandas as pd

from petclf.core import log
from petclf.core.errors import DataError
from petclf.data.dataset import LabelledImages

__all__ = ["check_dataset", "drop_unknown_labels", "refuse_unseen_labels"]


def check_dataset(dataset: LabelledImages) -> None:
    """Refuse a dataset that cannot train a classifier (no images, one class, no validation images)."""
    if dataset.count("train") == 0:
        raise DataError(f"no training images found in {dataset.root} ({dataset.layout} layout).")
    if len(dataset.classes) < 2 and not dataset.multi_label:
        hint = ("the label column (--label-col)" if dataset.layout == "csv"
                else "the folder layout or the label pattern (--label-pat)")
        raise DataError(
            f"found a single class ({', '.join(dataset.classes)}) in {dataset.root}: a classifier needs at "
            f"least 2. Check {hint}."
        )
    if dataset.multi_label and len(dataset.classes) < 2:
        raise DataError(f"every training image carries the same single label ({', '.join(dataset.classes)}): "
                        "a multi-label classifier needs at least 2 labels. Check the label column and --label-delim.")
    if dataset.count("valid") == 0:
        raise DataError(
            f"no validation images in {dataset.root}: raise valid_pct above 0 or add images to valid/."
        )


def refuse_unseen_labels(frame: pd.DataFrame, column: str) -> None:
    """A multi-label model cannot learn a label no training image carries; dropping it would change targets."""
    seen = {label for labels in frame.label[frame.split == "train"] for label in labels}
    unseen = sorted({label for labels in frame.label[frame.split != "train"] for label in labels} - seen)
    if unseen:
        raise DataError(f"labels {', '.join(map(repr, unseen[:10]))} appear in valid/test rows but in no training "
                        f"row, so the model cannot learn them: mark some of their images as training in the "
                        f"{column!r} column, or remove those labels.")


def drop_unknown_labels(frame: pd.DataFrame) -> pd.DataFrame:
    known = set(frame.loc[frame.split == "train", "label"])
    unknown = frame[~frame.label.isin(known)]
    if len(unknown):
        names = sorted(unknown.label.unique())
        log.warn(f"classes {', '.join(names[:10])} appear only outside train/ ({len(unknown)} images); "
                 "they are left out because the model cannot learn them.")
    return frame[frame.label.isin(known)].reset_index(drop=True)
