from __future__ import annotations

import re
import shutil

import pytest
import torch

from petclf.data import DEFAULT_LABEL_PAT, detect_layout, find_dataset, make_dataloaders, make_pipeline
from petclf.errors import DataError, UsageError

from .conftest import make_image


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
