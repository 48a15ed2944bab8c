"""Build the 10-animal Caltech-256 subset (train/valid/test folders) that the transfer-learning tutorial uses."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from petclf.core import log
from petclf.core.atomic import atomic_path
from petclf.core.errors import DataError, UsageError
from petclf.data.images import IMAGE_EXTENSIONS

__all__ = ["CALTECH10_CLASSES", "prepare_caltech10"]

CALTECH10_CLASSES = ("bear", "chimp", "giraffe", "gorilla", "llama", "ostrich", "porcupine", "skunk",
                     "triceratops", "zebra")
_FOLDER = re.compile(r"^\d+\.(?P<name>[a-z0-9_-]+?)(-101)?$", re.IGNORECASE)


def _categories(src: Path) -> Path:
    """The folder holding the category folders: ``src/256_ObjectCategories`` or ``src`` itself."""
    for candidate in (src / "256_ObjectCategories", src):
        if candidate.is_dir() and any(_FOLDER.match(d.name) for d in candidate.iterdir() if d.is_dir()):
            return candidate
    raise DataError(f"no Caltech-256 class folders (like 009.bear) in {src}: pass the folder that holds "
                    "256_ObjectCategories/ or the category folders themselves.")


def _place(src: Path, dst: Path) -> None:
    """Copy the regular file ``src`` to ``dst``, whole or not at all; an existing copy is kept."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    # A hard link left by an older petclf shares the source's bytes: replace it with a copy.
    if dst.exists() and not os.path.samefile(src, dst):
        return
    # A copy, never a link: editing or deleting the subset must not touch the download.
    with atomic_path(dst) as tmp:
        shutil.copy2(src, tmp, follow_symlinks=False)


def prepare_caltech10(src: str | Path, dst: str | Path, *, n_train: int = 60, n_valid: int = 10) -> dict[str, int]:
    """Split the 10 animal classes of Caltech-256 into ``dst/{train,valid,test}/<class>/``.

    The first ``n_train`` images of each class (by file name) go to train, the next ``n_valid``
    to valid, the rest to test — 600/100/409 files with the real data. Returns the counts.
    Regular files are copied; symlinked files and category folders are skipped (with a warning),
    so nothing from outside ``src`` ends up in ``dst``.

    Example: ``prepare_caltech10("downloads/caltech256", "data/caltech10")`` → ``{'train': 600, …}``.
    """
    dst = Path(dst)
    if dst.is_file():
        raise UsageError(f"{dst} is a file: expected a folder to write train/, valid/ and test/ into.")
    categories = _categories(Path(src))
    folders: dict[str, Path] = {}
    linked_folders: list[str] = []
    for d in sorted(categories.iterdir()):
        match = _FOLDER.match(d.name)
        if not (d.is_dir() and match and match.group("name").lower() in CALTECH10_CLASSES):
            continue
        if d.is_symlink():
            linked_folders.append(d.name)
        else:
            folders[match.group("name").lower()] = d
    missing = [c for c in CALTECH10_CLASSES if c not in folders]
    if missing:
        note = f" ({', '.join(linked_folders)}: symlinks, which are not followed)" if linked_folders else ""
        raise DataError(f"Caltech-256 classes {', '.join(missing)} are missing from {categories}{note}.")
    files: dict[str, list[Path]] = {}
    linked_files = 0
    for name in CALTECH10_CLASSES:
        with os.scandir(folders[name]) as entries:
            images = [e for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS]
        linked_files += sum(e.is_symlink() for e in images)
        files[name] = sorted(Path(e.path) for e in images if e.is_file(follow_symlinks=False))
        if len(files[name]) <= n_train + n_valid:
            raise DataError(f"class {name} has {len(files[name])} images; need more than {n_train + n_valid}.")
    if linked_files or linked_folders:
        log.warn(f"skipped {linked_files} symlinked files and {len(linked_folders)} symlinked class folders in "
                 f"{categories}: only regular files inside the source are copied, so nothing from elsewhere "
                 f"ends up in {dst}.")
    counts = {"train": 0, "valid": 0, "test": 0}
    for name in CALTECH10_CLASSES:
        for i, file in enumerate(files[name]):
            split = "train" if i < n_train else "valid" if i < n_train + n_valid else "test"
            _place(file, dst / split / name / file.name)
            counts[split] += 1
    return counts
