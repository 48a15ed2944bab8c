"""The csv layout: labels from a table of file names (CSV, TSV or DataFrame), single- and multi-label."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from petclf.core.errors import DataError, UsageError
from petclf.data.layouts import detect_layout, find_dataset
from petclf.data.scan import check_folder, class_table
from petclf.data.table import TableFormat

from ..conftest import COLOURS, make_image


@pytest.fixture()
def kaggle(tmp_path) -> Path:
    """Kaggle style: train.csv (image_id without extension, label, is_valid) beside train_images/."""
    rows = []
    for k, (label, colour) in enumerate(COLOURS.items()):
        for i in range(6):
            name = f"{k}{i:03d}ab"
            make_image(tmp_path / "train_images" / f"{name}.jpg", colour, seed=10 * k + i)
            rows.append((name, label, int(i >= 4)))
    pd.DataFrame(rows, columns=["image_id", "label", "is_valid"]).to_csv(tmp_path / "train.csv", index=False)
    return tmp_path


def test_kaggle_ids_without_extension_resolve_and_the_split_column_is_kept(kaggle):
    ds = find_dataset(kaggle / "train.csv", table=TableFormat(images=str(kaggle / "train_images")))
    assert ds.layout == "csv" and not ds.multi_label
    assert ds.classes == sorted(COLOURS)
    assert ds.count("train") == 12 and ds.count("valid") == 6
    assert all(Path(p).suffix == ".jpg" and Path(p).is_file() for p in ds.frame.path)
    assert ds.table.fn_col == "image_id" and ds.table.valid_col == "is_valid"
    assert detect_layout(kaggle / "train.csv") == "csv"


def test_names_with_extensions_relative_to_the_table_and_random_stratified_split(tmp_path):
    rows = []
    for k, (label, colour) in enumerate(COLOURS.items()):
        for i in range(10):
            make_image(tmp_path / "pics" / f"{label}{i}.png", colour, seed=k * 10 + i)
            rows.append((f"pics/{label}{i}.png", label))
    pd.DataFrame(rows, columns=["fname", "class"]).to_csv(tmp_path / "labels.csv", index=False)
    ds = find_dataset(tmp_path / "labels.csv", valid_pct=0.2, seed=3)
    assert ds.count("valid") == 6 and ds.count("train") == 24
    # stratified: every class reaches validation
    assert set(ds.frame[ds.frame.split == "valid"].label) == set(COLOURS)


def test_split_column_with_train_valid_test_words_and_a_tsv(tmp_path):
    rows = []
    for k, (label, colour) in enumerate(COLOURS.items()):
        for i, split in enumerate(["train", "train", "train", "val", "test"]):
            make_image(tmp_path / f"{label}_{i}.jpg", colour, seed=k * 10 + i)
            rows.append((f"{label}_{i}.jpg", label, split))
    pd.DataFrame(rows, columns=["file_name", "label", "split"]).to_csv(tmp_path / "meta.tsv", sep="\t", index=False)
    ds = find_dataset(tmp_path / "meta.tsv")
    assert (ds.count("train"), ds.count("valid"), ds.count("test")) == (9, 3, 3)


def test_every_bad_row_is_skipped_with_its_reason(kaggle):
    table = pd.read_csv(kaggle / "train.csv")
    make_image(kaggle / "train_images" / "twin.jpg", COLOURS["red"], seed=99)
    make_image(kaggle / "train_images" / "twin.png", COLOURS["red"], seed=98)
    make_image(kaggle / "outside.jpg", COLOURS["red"], seed=97)
    bad = pd.DataFrame([
        ("missing", "red", 0),                     # no such file
        ("twin", "red", 0),                        # two files of that name
        ("../outside.jpg", "red", 0),              # outside the image folder
        ("/etc/hostname", "red", 0),               # absolute path elsewhere
        ("0000ab", "", 0),                         # empty label
        ("0001ab", "red", 0),                      # exact duplicate of an earlier row: left out
        ("0002ab", "blue", 0),                     # conflicting labels: both rows left out
        ("0003ab", "red", "maybe"),                # split value neither true nor false
        ("", "red", 0),                            # empty file name
    ], columns=table.columns)
    pd.concat([table, bad]).to_csv(kaggle / "train.csv", index=False)
    ds = find_dataset(kaggle / "train.csv", table=TableFormat(images=str(kaggle / "train_images")))
    reasons = " | ".join(ds.skipped.reason)
    for expected in ("missing file", "ambiguous name", "outside the image folder", "empty label",
                     "duplicate row", "conflicting rows", "'maybe' is not true/false", "empty file name"):
        assert expected in reasons, expected
    assert reasons.count("outside the image folder") == 2
    assert reasons.count("conflicting rows") == 2  # the first 0002ab row and the new one
    assert all(r.startswith("line ") for r in ds.skipped.reason)  # the CSV's line number
    assert ds.count("train") + ds.count("valid") == 17  # 18 good rows, minus 0002ab
    # check (as `petclf check` does) lists them; --strict refuses
    report = check_folder(kaggle / "train.csv", table=TableFormat(images=str(kaggle / "train_images")))
    assert len(report.skipped) == len(ds.skipped)
    with pytest.raises(DataError, match="cannot be used"):
        check_folder(kaggle / "train.csv", table=TableFormat(images=str(kaggle / "train_images")), strict=True)


def test_a_table_without_known_columns_names_the_columns_and_the_flags(tmp_path):
    pd.DataFrame({"picture": ["a.jpg"], "kind": ["cat"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"'picture', 'kind'.*--fn-col"):
        find_dataset(tmp_path / "t.csv")
    with pytest.raises(DataError, match=r"no label column.*--label-col"):
        find_dataset(tmp_path / "t.csv", table=TableFormat(fn_col="picture"))
    with pytest.raises(DataError, match=r"no column 'nope'.*--label-col"):
        find_dataset(tmp_path / "t.csv", table=TableFormat(fn_col="picture", label_col="nope"))


def test_one_label_value_and_a_delimiter_that_never_splits_are_clear_errors(kaggle):
    table = pd.read_csv(kaggle / "train.csv").assign(label="red")
    table.to_csv(kaggle / "one.csv", index=False)
    spec = TableFormat(images=str(kaggle / "train_images"))
    with pytest.raises(DataError, match="single class.*label column"):
        find_dataset(kaggle / "one.csv", table=spec)
    with pytest.raises(DataError, match="splits none of the 18 labels"):
        find_dataset(kaggle / "train.csv", table=TableFormat(images=spec.images, label_delim=";"))


def test_multi_label_from_a_delimiter_and_from_a_list_column(tmp_path):
    names, sets = [], []
    for i in range(12):
        make_image(tmp_path / f"{i}.jpg", (20 * i, 90, 90), seed=i)
        names.append(f"{i}.jpg")
        sets.append(["cat", "dog"] if i % 3 == 0 else ["cat"] if i % 3 == 1 else ["bird"])
    pd.DataFrame({"fname": names, "labels": [" ".join(s) for s in sets]}).to_csv(tmp_path / "ml.csv", index=False)
    ds = find_dataset(tmp_path / "ml.csv", table=TableFormat(label_delim=" "), valid_pct=0.25)
    assert ds.multi_label and ds.classes == ["bird", "cat", "dog"]
    assert ds.frame.label.iloc[0] == ("cat", "dog")
    assert ds.class_counts("train").sum() + ds.class_counts("valid").sum() == 16
    assert set(ds.class_counts("train").index) == {"bird", "cat", "dog"}  # the split never empties a label
    assert "labels (multi-label)" in ds.describe()
    frame = pd.DataFrame({"path": [str(tmp_path / n) for n in names], "tags": sets})
    from_frame = find_dataset(frame, table=TableFormat(images=str(tmp_path)), valid_pct=0.25)
    assert from_frame.multi_label and from_frame.classes == ds.classes
    counts = class_table(from_frame)
    assert list(counts.columns) == ["train", "valid"] and counts.loc["cat", ["train", "valid"]].sum() == 8


def test_a_label_only_outside_training_is_refused_for_multi_label(tmp_path):
    rows = []
    for i in range(8):
        make_image(tmp_path / f"{i}.jpg", (30 * i, 60, 60), seed=i)
        rows.append((f"{i}.jpg", "a b" if i < 6 else "a c", i >= 6))
    pd.DataFrame(rows, columns=["fname", "labels", "is_valid"]).to_csv(tmp_path / "ml.csv", index=False)
    with pytest.raises(DataError, match="'c' appear in valid/test rows but in no training row"):
        find_dataset(tmp_path / "ml.csv", table=TableFormat(label_delim=" "))


def test_a_dataframe_needs_its_image_folder(tmp_path):
    with pytest.raises(UsageError, match="images=DIR"):
        find_dataset(pd.DataFrame({"fname": ["a.jpg"], "label": ["x"]}))


def test_a_damaged_or_foreign_file_is_one_clear_error(tmp_path):
    (tmp_path / "latin1.csv").write_bytes("fname,label\ncaf\xe9.jpg,x\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        find_dataset(tmp_path / "latin1.csv")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DataError, match="is a folder"):
        find_dataset(tmp_path / "folder.csv", layout="csv")


# --- issue #21: what a table may name, how long its cells may be, and images without labels


def test_a_symlinked_folder_cannot_lead_a_table_row_out_of_the_image_folder(tmp_path):
    """Containment is judged on the real folder: ``imgs/up -> /`` does not let ``up/…/secret.jpg`` in."""
    outside = make_image(tmp_path / "outside" / "secret.jpg", COLOURS["red"], seed=1)
    imgs = tmp_path / "data" / "imgs"
    rows = []
    for k, (label, colour) in enumerate(COLOURS.items()):
        for i in range(4):
            make_image(imgs / f"{label}{i}.jpg", colour, seed=10 * k + i)
            rows.append((f"{label}{i}.jpg", label))
    (imgs / "up").symlink_to("/")
    (imgs / "store").symlink_to(outside.parent, target_is_directory=True)
    # A file link is the folder owner's choice of one file (a symlink farm, DVC's symlink cache): kept,
    # as the folder layouts keep it.
    (imgs / "linked.jpg").symlink_to(outside)
    rows += [(f"up{outside}", "red"), ("store/secret.jpg", "red"), ("linked.jpg", "red")]
    pd.DataFrame(rows, columns=["fname", "label"]).to_csv(tmp_path / "data" / "t.csv", index=False)
    ds = find_dataset(tmp_path / "data" / "t.csv", table=TableFormat(images=str(imgs)))
    expected = {str(imgs / name) for name, _ in rows[:12]} | {str(imgs / "linked.jpg")}
    assert set(ds.frame.path) == expected
    reasons = dict(zip(ds.skipped.path, ds.skipped.reason))
    assert "outside the image folder" in reasons[f"up{outside}"]
    assert "outside the image folder" in reasons["store/secret.jpg"]


def _colour_table(folder: Path, n: int = 4) -> list[tuple[str, str]]:
    rows = []
    for k, (label, colour) in enumerate(COLOURS.items()):
        for i in range(n):
            make_image(folder / f"{label}{i}.jpg", colour, seed=10 * k + i)
            rows.append((f"{label}{i}.jpg", label))
    return rows


def test_a_label_longer_than_a_model_file_allows_is_refused_when_the_table_is_read(tmp_path):
    """A 5 MB label cell (an unclosed quote, say) stops before any work, at the limit the model-file check uses."""
    from petclf.runtime.modelcheck import MAX_CLASS_NAME_CHARS

    rows = _colour_table(tmp_path)
    longest = "x" * MAX_CLASS_NAME_CHARS
    pd.DataFrame(rows[:-1] + [(rows[-1][0], longest)], columns=["fname", "label"]).to_csv(tmp_path / "ok.csv",
                                                                                         index=False)
    assert longest in find_dataset(tmp_path / "ok.csv").frame.label.values  # the limit itself is allowed
    huge = rows[:5] + [(rows[5][0], "y" * 5_000_000)] + rows[6:]
    pd.DataFrame(huge, columns=["fname", "label"]).to_csv(tmp_path / "huge.csv", index=False)
    with pytest.raises(DataError, match=r"line 7: the label 'yyy.*is 5,000,000 characters long.*1,024") as err:
        find_dataset(tmp_path / "huge.csv")
    assert len(str(err.value)) < 600 and "\n" not in str(err.value)
    multi = [(f, "a b") for f, _ in rows[:-1]] + [(rows[-1][0], "a " + "z" * (MAX_CLASS_NAME_CHARS + 1))]
    pd.DataFrame(multi, columns=["fname", "labels"]).to_csv(tmp_path / "multi.csv", index=False)
    with pytest.raises(DataError, match=r"line 13: the label 'zzz.*is 1,025 characters long"):
        find_dataset(tmp_path / "multi.csv", table=TableFormat(label_delim=" "))


def test_a_file_name_longer_than_any_path_is_refused_when_the_table_is_read(tmp_path):
    rows = _colour_table(tmp_path)
    rows[2] = ("n" * 100_000 + ".jpg", "red")
    pd.DataFrame(rows, columns=["fname", "label"]).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"line 4: the file name 'nnn.*is 100,004 characters long.*4,096"):
        find_dataset(tmp_path / "t.csv")


def test_more_labels_than_a_model_file_allows_are_refused_when_the_table_is_read(tmp_path, monkeypatch):
    import petclf.data.table as table_module

    monkeypatch.setattr(table_module, "MAX_CLASSES", 2)  # three colours: one class too many
    pd.DataFrame(_colour_table(tmp_path), columns=["fname", "label"]).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="has 3 distinct labels; a model holds at most 2 classes"):
        find_dataset(tmp_path / "t.csv")


def test_multi_label_rows_without_labels_are_kept_as_negative_examples(tmp_path, capsys):
    """In multi-label data an image with no labels is a valid negative (Planet, medical sets), not an empty label."""
    rows = [(f, "a b" if k % 2 else "a") for k, (f, _) in enumerate(_colour_table(tmp_path))]
    rows[0], rows[5] = (rows[0][0], ""), (rows[5][0], "  ")
    pd.DataFrame(rows, columns=["fname", "labels"]).to_csv(tmp_path / "ml.csv", index=False)
    ds = find_dataset(tmp_path / "ml.csv", table=TableFormat(label_delim=" "))
    assert len(ds.frame) == 12 and ds.skipped.empty
    negatives = ds.frame[ds.frame.label.map(len) == 0]
    assert sorted(Path(p).name for p in negatives.path) == sorted([rows[0][0], rows[5][0]])
    assert ds.classes == ["a", "b"] and ds.class_counts("train").sum() + ds.class_counts("valid").sum() == 15
    assert "2 images of" in capsys.readouterr().err
    # One label or none per image is multi-label too (a finding or nothing), even if the delimiter never splits.
    pd.DataFrame([(f, "" if k < 2 else "ab"[k % 2]) for k, (f, _) in enumerate(rows)],
                 columns=["fname", "labels"]).to_csv(tmp_path / "one.csv", index=False)
    one_or_none = find_dataset(tmp_path / "one.csv", table=TableFormat(label_delim=";"))
    assert one_or_none.multi_label and one_or_none.frame.label.iloc[0] == ()
    # Single-label: a row without a label still has nothing to learn from.
    single = find_dataset(tmp_path / "ml.csv")
    assert sum("empty label" in r for r in single.skipped.reason) == 2


def test_a_multi_label_table_where_no_row_has_a_label_is_refused(tmp_path):
    rows = [(f, "") for f, _ in _colour_table(tmp_path)]
    pd.DataFrame(rows, columns=["fname", "labels"]).to_csv(tmp_path / "ml.csv", index=False)
    with pytest.raises(DataError, match="none of the 12 rows of .* has a label"):
        find_dataset(tmp_path / "ml.csv", table=TableFormat(label_delim=" "))
