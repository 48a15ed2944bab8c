"""A run's split kept as plain data, so that a resumed run trains and validates on the same files."""
from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pandas as pd

from petclf.core import log
from petclf.core.errors import DataError
from petclf.data.dataset import LabelledImages

__all__ = ["keep_split", "split_record"]


def split_record(dataset: LabelledImages) -> dict:
    """The split of ``dataset`` as plain data (file paths relative to its root), to fix it for a run's life.

    Example: ``json.dumps(split_record(ds))``; ``keep_split(find_dataset(root), record)`` gives it back.
    """
    root = str(dataset.root)
    files = {os.path.relpath(p, root): s for p, s in zip(dataset.frame.path, dataset.frame.split)}
    return {"root": root, "files": files}


def keep_split(dataset: LabelledImages, record: dict) -> LabelledImages:
    """``dataset`` with the split of ``record`` (from ``split_record``): a resumed run trains and validates on the
    same files as before, whatever random split the folder would give now.

    Files gone since then and files added since then are left out, each with a reason in ``skipped``.

    Example: ``keep_split(find_dataset("pets/images"), json.loads(Path("runs/pets/split.json").read_text()))``.
    """
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or not all(s in ("train", "valid", "test") for s in files.values()):
        raise DataError("the stored split of this run is damaged: delete split.json and the checkpoints in the out "
                        "dir to start over.")
    frame = dataset.frame
    rel = [os.path.relpath(p, dataset.root) for p in frame.path]
    known = np.array([r in files for r in rel], dtype=bool)
    new = frame[~known]
    present = set(rel)
    gone = [(str(dataset.root / r), "gone since the run started (it was in its split)") for r in files
            if r not in present]
    added = [(p, "added since the run started: a fresh run (another --out) uses it") for p in new.path]
    if gone or added:
        log.warn(f"the run keeps its split: {len(gone)} files are gone and {len(added)} are new since it started; "
                 "both are left out (skipped.csv)")
    kept = frame[known].assign(split=[files[r] for r, k in zip(rel, known) if k]).reset_index(drop=True)
    skipped = pd.concat([dataset.skipped, pd.DataFrame(gone + added, columns=["path", "reason"])], ignore_index=True)
    return replace(dataset, frame=kept, skipped=skipped)
