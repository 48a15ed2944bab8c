"""prepare_caltech10 copies regular files from inside the source only, never linking them."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from petclf.data.caltech import CALTECH10_CLASSES, prepare_caltech10
from petclf.core.errors import DataError, UsageError

FOLDERS = {"bear": "009.bear", "chimp": "038.chimp", "giraffe": "084.giraffe", "gorilla": "090.gorilla",
           "llama": "134.llama-101", "ostrich": "151.ostrich", "porcupine": "164.porcupine",
           "skunk": "186.skunk", "triceratops": "228.triceratops", "zebra": "250.zebra"}
SPLIT = dict(n_train=2, n_valid=1)  # 4 files a class: 2 train, 1 valid, 1 test


def make_caltech(src: Path, *, n_per_class: int = 4) -> Path:
    """A fake 256_ObjectCategories/ with the ten classes (the bytes need not decode: nothing reads them)."""
    for k, folder in enumerate(FOLDERS.values()):
        (src / folder).mkdir(parents=True)
        for i in range(n_per_class):
            (src / folder / f"{k:03d}_{i:04d}.jpg").write_bytes(f"jpeg {k} {i}".encode())
    return src


def test_output_files_are_copies_not_links(tmp_path):
    src = make_caltech(tmp_path / "256_ObjectCategories")
    counts = prepare_caltech10(tmp_path, tmp_path / "c10", **SPLIT)
    assert counts == {"train": 20, "valid": 10, "test": 10}
    for out in (tmp_path / "c10").rglob("*.jpg"):
        source = src / FOLDERS[out.parent.name] / out.name
        assert out.stat().st_nlink == 1 and out.stat().st_ino != source.stat().st_ino
        assert not out.is_symlink() and out.read_bytes() == source.read_bytes()
    copy = tmp_path / "c10" / "train" / "bear" / "000_0000.jpg"
    copy.write_bytes(b"edited")
    assert (src / "009.bear" / "000_0000.jpg").read_bytes() == b"jpeg 0 0"


def test_hard_link_from_an_older_run_is_replaced_by_a_copy(tmp_path):
    src = make_caltech(tmp_path / "256_ObjectCategories")
    old = tmp_path / "c10" / "train" / "bear" / "000_0000.jpg"
    old.parent.mkdir(parents=True)
    os.link(src / "009.bear" / "000_0000.jpg", old)
    prepare_caltech10(tmp_path, tmp_path / "c10", **SPLIT)
    assert old.stat().st_nlink == 1 and (src / "009.bear" / "000_0000.jpg").stat().st_nlink == 1


def test_symlinked_files_from_outside_are_not_copied(tmp_path, capfd):
    src = make_caltech(tmp_path / "src")
    secret = tmp_path / "elsewhere" / "secret.jpg"
    secret.parent.mkdir()
    secret.write_bytes(b"not part of the dataset")
    (src / "009.bear" / "000_0000a.jpg").symlink_to(secret)  # sorts among the train files
    counts = prepare_caltech10(src, tmp_path / "c10", **SPLIT)
    assert counts == {"train": 20, "valid": 10, "test": 10}
    copied = {p.name for p in (tmp_path / "c10").rglob("*")}
    assert "000_0000a.jpg" not in copied and "secret.jpg" not in copied
    assert "skipped 1 symlinked files and 0 symlinked class folders" in capfd.readouterr().err


def test_symlinked_class_folder_is_not_followed(tmp_path, capfd):
    src = make_caltech(tmp_path / "src")
    outside = tmp_path / "elsewhere" / "250.zebra"
    outside.parent.mkdir()
    (src / "250.zebra").rename(outside)
    (src / "250.zebra").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DataError, match=r"zebra are missing .*250\.zebra: symlinks, which are not followed"):
        prepare_caltech10(src, tmp_path / "c10", **SPLIT)
    assert not (tmp_path / "c10").exists()


def test_destination_that_is_a_file_is_refused_before_copying(tmp_path):
    make_caltech(tmp_path / "src")
    dst = tmp_path / "c10"
    dst.write_text("not a folder")
    with pytest.raises(UsageError, match=r"c10 is a file: expected a folder to write train/, valid/ and test/ into"):
        prepare_caltech10(tmp_path / "src", dst, **SPLIT)
    assert dst.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c10", "src"]


def test_every_class_lands_in_each_split(tmp_path):
    make_caltech(tmp_path / "src", n_per_class=5)
    prepare_caltech10(tmp_path / "src", tmp_path / "c10", **SPLIT)
    for split, n in (("train", 2), ("valid", 1), ("test", 2)):
        folders = sorted((tmp_path / "c10" / split).iterdir())
        assert [f.name for f in folders] == sorted(CALTECH10_CLASSES)
        assert all(len(list(f.iterdir())) == n for f in folders)
