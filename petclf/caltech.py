"""Build the 10-animal Caltech-256 subset (train/valid/test folders) that the transfer-learning tutorial uses."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from .data import IMAGE_EXTENSIONS
from .errors import DataError

__all__ = ["CALTECH10_CLASSES", "prepare_caltech10"]

CALTECH10_CLASSES = ("bear", "chimp", "giraffe", "gorilla", "llama", "ostrich", "porcupine", "skunk",
                     "triceratops", "zebra")
_FOLDER = re.compile(r"^\d+\.(?P<name>[a-z0-9_-]+?)(-101)?$", re.IGNORECASE)


def _categories(src: Path) -> Path:
    for candidate in (src / "256_ObjectCategories", src):
        if candidate.is_dir() and any(_FOLDER.match(d.name) for d in candidate.iterdir() if d.is_dir()):
            return candidate
    raise DataError(f"no Caltech-256 class folders (like 009.bear) in {src}: pass the folder that holds "
                    "256_ObjectCategories/ or the category folders themselves.")


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)  # no copy when both are on one disk
    except OSError:
        shutil.copy2(src, dst)


def prepare_caltech10(src: str | Path, dst: str | Path, *, n_train: int = 60, n_valid: int = 10) -> dict[str, int]:
    """Split the 10 animal classes of Caltech-256 into ``dst/{train,valid,test}/<class>/``.

    The first ``n_train`` images of each class (by file name) go to train, the next ``n_valid``
    to valid, the rest to test — 600/100/409 files with the real data. Returns the counts.

    Example: ``prepare_caltech10("downloads/caltech256", "data/caltech10")`` → ``{'train': 600, …}``.
    """
    categories = _categories(Path(src))
    folders = {}
    for d in categories.iterdir():
        match = _FOLDER.match(d.name)
        if d.is_dir() and match and match.group("name").lower() in CALTECH10_CLASSES:
            folders[match.group("name").lower()] = d
    missing = [c for c in CALTECH10_CLASSES if c not in folders]
    if missing:
        raise DataError(f"Caltech-256 classes {', '.join(missing)} are missing from {categories}.")
    counts = {"train": 0, "valid": 0, "test": 0}
    dst = Path(dst)
    for name in CALTECH10_CLASSES:
        files = sorted(f for f in folders[name].iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        if len(files) <= n_train + n_valid:
            raise DataError(f"class {name} has {len(files)} images; need more than {n_train + n_valid}.")
        for i, file in enumerate(files):
            split = "train" if i < n_train else "valid" if i < n_train + n_valid else "test"
            _place(file, dst / split / name / file.name)
            counts[split] += 1
    return counts
