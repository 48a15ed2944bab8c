"""Tiny stand-ins for the tutorials' datasets, built from scikit-learn's digits, for `--smoke` runs."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from petclf.data.digits import DIGIT_NAMES, write_digits


def work_dir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"petclf-{name}-smoke-"))


def pets_like(root: Path, n: int = 240) -> Path:
    """Pets file names: ``seven_12.jpg`` in one folder."""
    return write_digits(root / "images", size=32, limit=n)


def class_folders(root: Path, names: list[str], *, digits: list[int], n: int = 400) -> dict[str, list[Path]]:
    """Digits ``digits`` renamed as classes ``names``; returns the files of each class."""
    source = write_digits(root / "_digits", size=32, layout="classes", limit=n)
    return {name: sorted((source / DIGIT_NAMES[d]).glob("*.jpg")) for name, d in zip(names, digits)}


def split_tree(root: Path, files: dict[str, list[Path]], splits: dict[str, float]) -> Path:
    """Copy each class's files into ``root/<split>/<class>/`` by the given shares."""
    for name, paths in files.items():
        start = 0
        for i, (split, share) in enumerate(splits.items()):
            stop = len(paths) if i == len(splits) - 1 else start + int(len(paths) * share)
            for p in paths[start:stop]:
                (root / split / name).mkdir(parents=True, exist_ok=True)
                shutil.copy(p, root / split / name / p.name)
            start = stop
    return root


def split_classes(name: str, classes: list[str], splits: dict[str, float]) -> Path:
    """A fresh ``<split>/<class>/`` tree of digits (one digit per class) in a new work folder."""
    work = work_dir(name)
    files = class_folders(work, classes, digits=list(range(len(classes))))
    return split_tree(work / name, files, splits)


def caltech256_like(root: Path) -> Path:
    """A Caltech-256-shaped tree (``256_ObjectCategories/009.bear/…``) with 72 images per animal class."""
    folders = ["009.bear", "038.chimp", "084.giraffe", "090.gorilla", "134.llama-101", "151.ostrich",
               "164.porcupine", "186.skunk", "228.triceratops", "250.zebra"]
    source = write_digits(root / "_digits", size=32, layout="classes")
    for folder, digit in zip(folders, DIGIT_NAMES):
        target = root / "256_ObjectCategories" / folder
        target.mkdir(parents=True, exist_ok=True)
        for p in sorted((source / digit).glob("*.jpg"))[:72]:
            shutil.copy(p, target / p.name)
    return root
