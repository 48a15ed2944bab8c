"""Find labelled images in a folder (three layouts) or a table, and split them into train, valid and test.

Layouts:

* ``pets``: one flat folder of ``<label>_<n>.<ext>`` files; the label comes from the file
  name by a regular expression (Oxford-IIIT Pets).
* ``folders``: ``train/``, ``valid/`` (or ``val/``) and optional ``test/``, each with one
  sub-folder per class (Caltech-10); with ``train/`` and ``test/`` only (CIFAR-10), valid is
  drawn from ``train/``.
* ``classes``: one sub-folder per class and no split folders.
* ``csv``: a CSV/TSV file (or a DataFrame) of file names and labels, one or several per image
  (see ``petclf.data.table``).

The Oxford-IIIT Pet archive as downloaded (``images/`` beside ``annotations/``) is read as the
pets layout of its ``images/`` folder; with ``layout="auto"``, sub-folders that hold photos,
masks or annotations rather than one class each are refused with a hint instead of trained on.

This module reads each layout into a LabelledImages; its parts live beside it: ``listing`` (a folder's files),
``detection`` (which layout), ``label_pattern`` (labels from names, a stranger's pattern under a time limit),
``splits`` (random splits), ``saved_split`` (a run's split kept), ``checks`` (can it train), ``dataset``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from petclf.core import log
from petclf.core.defaults import DEFAULT_SEED, DEFAULT_VALID_PCT, LAYOUTS, MAX_SEED
from petclf.core.errors import DataError, UsageError, require_between, require_fraction
from petclf.data.checks import check_dataset, drop_unknown_labels, refuse_unseen_labels
from petclf.data.dataset import LabelledImages
from petclf.data.detection import VALID_NAMES, detect_folder, detect_layout, explicit_folder, refuse_non_classes
from petclf.data.label_pattern import (DEFAULT_LABEL_PAT, UNTRUSTED_PATTERN_TIMEOUT_S, compile_label_pattern,
                                       match_labels)
from petclf.data.listing import Listing, class_dirs, existing_dir, list_images
from petclf.data.saved_split import keep_split, split_record
from petclf.data.splits import random_split, random_split_multi
from petclf.data.table import TableFormat, is_table, read_table

# The names users import from here, wherever they live now.
__all__ = [
    "DEFAULT_LABEL_PAT",
    "UNTRUSTED_PATTERN_TIMEOUT_S",
    "LabelledImages",
    "check_dataset",
    "find_dataset",
    "detect_layout",
    "keep_split",
    "split_record",
]


def _pets_frame(path: Path, label_pat: str, *, listing: Listing | None = None,
                trusted: bool = True) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Rows (path, label) from the file names directly in ``path``, and the files passed over.

    ``listing`` is ``list_images(path, recurse=False)`` when the caller has it already; an untrusted
    ``label_pat`` is matched in a child process with a time limit.
    """
    pattern = compile_label_pattern(label_pat)
    files, skipped = listing if listing is not None else list_images(path, recurse=False)
    skipped = list(skipped)
    if not files:
        raise DataError(f"no images directly in {path}: the pets layout reads labels from the names of the files "
                        "in one folder. For images in class subfolders use layout='classes' / --layout classes.")
    names = [file.name for file in files]
    labels = match_labels(pattern, names, trusted=trusted, folder=path)
    rows, unmatched = [], []
    for file, label in zip(files, labels):
        if label:
            rows.append((str(file), label))
        else:
            unmatched.append(file.name)
            skipped.append((str(file), f"file name does not match the label pattern {label_pat!r}"))
    if not rows:
        raise DataError(
            f"label pattern {label_pat!r} matched none of the {len(files)} file names in {path} "
            f"(e.g. {', '.join(unmatched[:3])}): expected names like 'great_pyrenees_12.jpg', "
            "or pass label_pat= / --label-pat with a regex whose first group is the label."
        )
    if unmatched:
        log.warn(
            f"label pattern {label_pat!r} did not match {len(unmatched)} of {len(files)} file names; "
            f"they are left out (e.g. {', '.join(unmatched[:5])})."
        )
    return pd.DataFrame(rows, columns=["path", "label"]), skipped


def _class_frame(folder: Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    rows, skipped = [], []
    for d in class_dirs(folder):
        images, junk = list_images(d, recurse=True)
        rows += [(str(f), d.name) for f in images]
        skipped += junk
    return pd.DataFrame(rows, columns=["path", "label"]), skipped


def _table_dataset(source, *, table: TableFormat, valid_pct: float, seed: int) -> LabelledImages:
    """The csv layout: rows of a table file or DataFrame, split by its split column or at random."""
    rows = read_table(source, spec=table)
    frame = rows.frame
    if not rows.has_split:
        split = random_split_multi if rows.multi_label else random_split
        frame = split(frame, valid_pct=valid_pct, seed=seed)
    elif rows.multi_label:
        refuse_unseen_labels(frame, rows.spec.valid_col)
    else:
        frame = drop_unknown_labels(frame)
    return LabelledImages(frame=frame.reset_index(drop=True), layout="csv", root=rows.root,
                   skipped=pd.DataFrame(rows.skipped, columns=["path", "reason"]), multi_label=rows.multi_label,
                   table=rows.spec)


def _folder_split_frame(path: Path, *, valid_pct: float, seed: int) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    valid_dir = next((path / v for v in VALID_NAMES if (path / v).is_dir()), None)
    folders = {"train": path / "train", "valid": valid_dir, "test": path / "test"}
    parts, skipped = [], []
    for split, folder in folders.items():
        if folder is None or not folder.is_dir():
            continue
        frame, junk = _class_frame(folder)
        if split == "train" and valid_dir is None:
            # train/ and test/ only (CIFAR-10): hold out valid_pct of train/ for validation.
            frame = random_split(frame, valid_pct=valid_pct, seed=seed)
        else:
            frame = frame.assign(split=split)
        parts.append(frame)
        skipped += junk
    return pd.concat(parts, ignore_index=True), skipped


def find_dataset(path: Path | str | pd.DataFrame, *, layout: str = "auto", label_pat: str | None = None,
                 valid_pct: float = DEFAULT_VALID_PCT, seed: int = DEFAULT_SEED, trainable: bool = True,
                 trusted_pattern: bool = True, table: TableFormat | None = None) -> LabelledImages:
    """Find labelled images in a folder or a table (``path``) and split them into train/valid(/test).

    A CSV/TSV file or a DataFrame is read as the csv layout, with ``table`` saying how (columns,
    image folder, label delimiter; see ``petclf.data.table``).

    With ``trainable`` (the default) a folder that cannot train a classifier (one class, no
    validation images) is refused; evaluation passes ``trainable=False``.

    ``trusted_pattern=False`` marks ``label_pat`` as coming from elsewhere (a model file): it is
    then matched in a child process and refused when it takes more than
    ``UNTRUSTED_PATTERN_TIMEOUT_S`` seconds.

    With ``layout="auto"``, the Oxford-IIIT Pet archive (``images/`` beside ``annotations/``)
    gives the pets layout of its ``images/`` folder (the LabelledImages's root), and class folders that
    look like photo, mask or annotation folders are refused with a hint.

    Example: ``find_dataset("pets/images").describe()`` →
    ``'pets layout, 37 classes, 5912 train, 1478 valid images'``.
    """
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}: expected one of {', '.join(LAYOUTS)}.")
    require_fraction(valid_pct=valid_pct)
    require_between(0, MAX_SEED, seed=seed)
    if layout == "csv" or (layout == "auto" and is_table(path)):
        dataset = _table_dataset(path, table=table or TableFormat(), valid_pct=valid_pct, seed=seed)
        if trainable:
            check_dataset(dataset)
        return dataset
    if isinstance(path, pd.DataFrame):
        raise UsageError(f"a DataFrame is read as layout 'csv'. Received: layout={layout!r}.")
    found = detect_folder(existing_dir(path)) if layout == "auto" else explicit_folder(existing_dir(path), layout)
    chosen, root = found.layout, found.root
    if chosen == "pets":
        frame, skipped = _pets_frame(root, label_pat or DEFAULT_LABEL_PAT, listing=found.listing,
                                     trusted=trusted_pattern or label_pat is None)
        frame = random_split(frame, valid_pct=valid_pct, seed=seed)
    elif chosen == "classes":
        frame, skipped = _class_frame(root)
        if frame.empty:
            raise DataError(f"no images in sub-folders of {root}: the classes layout reads one sub-folder per class. "
                            "For a flat folder of <label>_<n>.jpg files use --layout pets (or auto).")
        if layout == "auto":  # an explicit layout='classes' is the user's word that these are classes
            refuse_non_classes(root, frame)
        frame = random_split(frame, valid_pct=valid_pct, seed=seed)
    else:
        if not (root / "train").is_dir():
            raise DataError(f"layout 'folders' needs a {root}/train sub-folder, with valid/ (or val/) and/or test/.")
        frame, skipped = _folder_split_frame(root, valid_pct=valid_pct, seed=seed)
        frame = drop_unknown_labels(frame)
    dataset = LabelledImages(frame=frame.reset_index(drop=True), layout=chosen, root=root,
                      skipped=pd.DataFrame(skipped, columns=["path", "reason"]))
    if trainable:
        check_dataset(dataset)
    return dataset
