from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
import torch

from petclf.data import label_pattern
from petclf.data.layouts import DEFAULT_LABEL_PAT, detect_layout, find_dataset
from petclf.data.pipeline import make_pipeline
from petclf.learn.loaders import make_dataloaders
from petclf.core.errors import DataError, UsageError

from ..conftest import make_image


@pytest.mark.parametrize("name, label", [
    ("american_pit_bull_terrier_12.jpg", "american_pit_bull_terrier"),
    ("Egyptian_Mau_3.jpg", "Egyptian_Mau"),
    ("pug_101.jpeg", "pug"),
])
def test_default_label_pattern_keeps_underscores_and_capitals(name, label):
    assert re.match(DEFAULT_LABEL_PAT, name).group(1) == label


def test_detects_each_layout(pets_dir, folders_dir, classes_dir):
    assert detect_layout(pets_dir) == "pets"
    assert detect_layout(folders_dir) == "folders"
    assert detect_layout(classes_dir) == "classes"


def test_pets_layout_labels_and_stratified_split(pets_dir):
    ds = find_dataset(pets_dir, valid_pct=0.2, seed=1)
    assert ds.layout == "pets"
    assert ds.classes == ["Egyptian_Mau", "american_pit_bull_terrier", "pug"]
    valid = ds.frame[ds.frame.split == "valid"]
    assert valid.label.value_counts().to_dict() == {c: 2 for c in ds.classes}
    again = find_dataset(pets_dir, valid_pct=0.2, seed=1)
    assert list(again.frame.split) == list(ds.frame.split)
    other = find_dataset(pets_dir, valid_pct=0.2, seed=2)
    assert list(other.frame.split) != list(ds.frame.split)


def test_folder_splits_keep_test_images_apart(folders_dir):
    ds = find_dataset(folders_dir)
    assert (ds.count("train"), ds.count("valid"), ds.count("test")) == (24, 9, 12)
    dls = make_dataloaders(ds, make_pipeline(size=32), bs=4, device=torch.device("cpu"))
    assert len(dls.loaders) == 3
    xb, yb = dls[2].one_batch()
    assert xb.shape == (4, 3, 32, 32)


def test_val_folder_name_is_accepted(tmp_path, folders_dir):
    shutil.copytree(folders_dir / "train", tmp_path / "train")
    shutil.copytree(folders_dir / "valid", tmp_path / "val")
    assert find_dataset(tmp_path).count("valid") == 9


def test_class_folders_are_split_randomly(classes_dir):
    ds = find_dataset(classes_dir, valid_pct=0.5)
    assert ds.layout == "classes" and ds.count("valid") == 9 and ds.count("test") == 0


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_dataset(tmp_path / "nope")


def test_folder_without_images_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no images found"):
        find_dataset(tmp_path)


def test_pattern_matching_nothing_names_examples(pets_dir):
    with pytest.raises(DataError, match=r"matched none of the 30 file names .*e\.g\."):
        find_dataset(pets_dir, label_pat=r"^cat(\d+)\.png$")


def test_pattern_matching_some_warns_with_count(tmp_path, capfd):
    for i in range(3):
        make_image(tmp_path / f"cat_{i}.jpg", (1, 2, 3), seed=i)
        make_image(tmp_path / f"dog_{i}.jpg", (200, 2, 3), seed=i)
    make_image(tmp_path / "IMG0001.jpg", (1, 2, 3), seed=9)
    ds = find_dataset(tmp_path)
    assert len(ds.frame) == 6
    assert "did not match 1 of 7 file names" in capfd.readouterr().err


def test_single_class_is_refused(tmp_path):
    for i in range(4):
        make_image(tmp_path / f"cat_{i}.jpg", (1, 2, 3), seed=i)
    with pytest.raises(DataError, match="single class"):
        find_dataset(tmp_path)


def test_bad_options_are_refused(pets_dir):
    with pytest.raises(UsageError, match="valid_pct"):
        find_dataset(pets_dir, valid_pct=1.5)
    with pytest.raises(UsageError, match="layout"):
        find_dataset(pets_dir, layout="imagenet")
    with pytest.raises(UsageError, match="no group"):
        find_dataset(pets_dir, label_pat=r"\d+")


def test_presize_is_larger_than_size():
    pipe = make_pipeline(size=224)
    assert pipe.presize > pipe.size


def test_train_and_test_folders_only_draw_valid_from_train(tmp_path, folders_dir):
    shutil.copytree(folders_dir / "train", tmp_path / "train")
    shutil.copytree(folders_dir / "test", tmp_path / "test")
    ds = find_dataset(tmp_path, valid_pct=0.25)
    assert ds.layout == "folders"
    assert (ds.count("train"), ds.count("valid"), ds.count("test")) == (18, 6, 12)


def _make_pets_archive(root: Path) -> Path:
    """The Oxford-IIIT Pet archive as untar_data(URLs.PETS) leaves it, a few files per class."""
    for k, label in enumerate(("Abyssinian", "great_pyrenees")):
        for i in range(1, 4):
            make_image(root / "images" / f"{label}_{i}.jpg", (60 + 100 * k, 90, 120), seed=10 * k + i)
            make_image(root / "annotations" / "trimaps" / f"{label}_{i}.png", (1, 2, 3), seed=i, size=16)
        (root / "annotations" / "xmls").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / "xmls" / f"{label}_1.xml").write_text("<annotation/>")
    for name in ("list.txt", "trainval.txt", "test.txt"):
        (root / "annotations" / name).write_text("# Image CLASS-ID SPECIES BREED ID\nAbyssinian_1 1 1 1\n")
    return root


def test_pets_archive_reads_labels_from_the_images_folder(tmp_path, capfd):
    root = _make_pets_archive(tmp_path / "oxford-iiit-pet")
    assert detect_layout(root) == "pets"
    ds = find_dataset(root)
    assert ds.layout == "pets" and ds.root == root / "images"
    assert ds.classes == ["Abyssinian", "great_pyrenees"] and len(ds.frame) == 6
    err = capfd.readouterr().err
    assert "looks like the Oxford-IIIT Pet archive" in err and "annotations/ is not used" in err
    # What a model trained on the archive stores (layout 'pets') reads the same images back.
    assert find_dataset(root, layout="pets").frame.equals(ds.frame)


def test_explicit_classes_layout_is_trusted(tmp_path):
    root = _make_pets_archive(tmp_path / "oxford-iiit-pet")
    assert find_dataset(root, layout="classes").classes == ["annotations", "images"]


def _write_images(folder: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        make_image(folder / name, (40 * i % 255, 90, 120), seed=i, size=16)


@pytest.mark.parametrize("folder", ["Images", "train_images", "photos"])
def test_image_folder_with_pets_names_is_not_a_class(tmp_path, folder):
    _write_images(tmp_path / folder, [f"{b}_{i}.jpg" for b in ("beagle", "pug") for i in range(3)])
    _write_images(tmp_path / "cats", [f"c{i}.jpg" for i in range(3)])
    with pytest.raises(DataError, match=rf"{folder} looks like a folder of photos .*pets layout.*--layout classes"):
        find_dataset(tmp_path)


@pytest.mark.parametrize("folder", ["annotations", "Masks", "trimaps", "labels", "xmls", "segmentation"])
def test_annotation_folder_is_not_a_class(tmp_path, folder):
    _write_images(tmp_path / "cat", [f"{i}.jpg" for i in range(3)])
    _write_images(tmp_path / "dog", [f"{i}.jpg" for i in range(3, 6)])
    _write_images(tmp_path / folder, [f"{i}.png" for i in range(6)])
    with pytest.raises(DataError, match=rf"{folder} looks like masks or annotations.*--layout classes"):
        find_dataset(tmp_path)


def test_masks_beside_photos_under_other_names_are_not_classes(tmp_path):
    _write_images(tmp_path / "scans", [f"case{i}.jpg" for i in range(4)])
    _write_images(tmp_path / "scans_seg", [f"case{i}.png" for i in range(4)])
    with pytest.raises(DataError, match=r"scans.* \(\.jpg\) and .*scans_seg \(\.png\) hold 4 files of the same names"):
        find_dataset(tmp_path)
    assert find_dataset(tmp_path, layout="classes").classes == ["scans", "scans_seg"]


def test_class_folders_with_breed_names_or_shared_stems_stay_classes(tmp_path, classes_dir):
    _write_images(tmp_path / "breeds" / "dogs", [f"{b}_{i}.jpg" for b in ("beagle", "pug") for i in range(3)])
    _write_images(tmp_path / "breeds" / "cats", [f"{b}_{i}.jpg" for b in ("Sphynx", "Bengal") for i in range(3)])
    assert find_dataset(tmp_path / "breeds").classes == ["cats", "dogs"]
    _write_images(tmp_path / "same" / "cat", [f"{i}.jpg" for i in range(3)])
    _write_images(tmp_path / "same" / "dog", [f"{i}.jpeg" for i in range(3)])  # one kind: JPEG
    assert find_dataset(tmp_path / "same").classes == ["cat", "dog"]
    assert find_dataset(classes_dir).classes == ["blue", "green", "red"]


def test_untrusted_pattern_that_backtracks_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(label_pattern, "UNTRUSTED_PATTERN_TIMEOUT_S", 2.0)
    for name in ("cat_1.jpg", "dog_2.jpg", "a" * 32 + ".jpg"):
        (tmp_path / name).write_bytes(b"jpeg")
    start = time.monotonic()
    with pytest.raises(DataError, match=r"stored in the model took more than 2 s .*--label-pat"):
        find_dataset(tmp_path, label_pat=r"^(\w+)+_\d+\.jpg$", trusted_pattern=False)
    assert time.monotonic() - start < 15


def test_untrusted_pattern_gives_the_labels_of_trusted_matching(pets_dir):
    pat = r"^([A-Za-z_]+)_\d+\.jpg$"
    trusted = find_dataset(pets_dir, label_pat=pat)
    untrusted = find_dataset(pets_dir, label_pat=pat, trusted_pattern=False)
    assert untrusted.frame.equals(trusted.frame) and untrusted.skipped.equals(trusted.skipped)
    with pytest.raises(UsageError, match="no group"):
        find_dataset(pets_dir, label_pat=r"\d+", trusted_pattern=False)
    with pytest.raises(UsageError, match="not a valid regular expression"):
        find_dataset(pets_dir, label_pat=r"(", trusted_pattern=False)
