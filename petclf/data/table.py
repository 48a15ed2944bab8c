"""Labelled images listed in a table: a CSV/TSV file or a pandas DataFrame of file names and labels.

The columns are found by their usual names (fastai's ``from_df``, Kaggle, Hugging Face's
``metadata.csv``) or named by the caller. File names are relative to the table's folder (or
``TableFormat.images``); a name without an extension (Kaggle's ``image_id``) resolves to the one
image file of that name. Rows that cannot be used — missing files, empty labels, duplicates,
files outside the image folder, unknown split values — are left out with a reason, or refused
with ``strict``. A label delimiter, or a column of lists, makes the task multi-label; there a
row without labels is kept as a negative example.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from petclf.core import log
from petclf.core.defaults import MAX_CLASS_NAME_CHARS, MAX_CLASSES
from petclf.core.errors import DataError, UsageError
from petclf.core.safe_text import printable
from petclf.data.images import IMAGE_EXTENSIONS, MAX_FILE_BYTES

__all__ = ["FILE_COLUMNS", "LABEL_COLUMNS", "MAX_FILE_NAME_CHARS", "SPLIT_COLUMNS", "TABLE_SUFFIXES", "TableFormat",
           "table_delimiter", "is_table", "read_table"]

#: Column names taken as the file column, in this order of preference (compared in lower case).
FILE_COLUMNS = ("file_name", "fname", "filename", "image", "image_id", "path", "file", "image_path", "filepath")
#: Column names taken as the label column (compared in lower case).
LABEL_COLUMNS = ("label", "labels", "class", "target", "tags", "category")
#: Column names taken as the split column: ``is_valid`` holds true/false, ``split`` train/valid/test.
SPLIT_COLUMNS = ("is_valid", "split")
#: File endings read as tables; ``.tsv`` and ``.tab`` are tab-separated.
TABLE_SUFFIXES = frozenset({".csv", ".tsv", ".tab"})
#: The longest file name cell, in characters: Linux's PATH_MAX; a longer one cannot name a file.
MAX_FILE_NAME_CHARS = 4096

_TRUE, _FALSE = {"true", "1", "yes", "y", "t", "1.0"}, {"false", "0", "no", "n", "f", "0.0"}
_SPLITS = {"train": "train", "training": "train", "valid": "valid", "val": "valid", "validation": "valid",
           "dev": "valid", "test": "test", "testing": "test"}


@dataclass(frozen=True)
class TableFormat:
    """How to read a table of labelled images; None fields are found by their usual names or defaults."""

    images: str | None = None  # folder the file names are relative to (default: the table file's folder)
    fn_col: str | None = None  # column of file names
    label_col: str | None = None  # column of labels
    valid_col: str | None = None  # column of the split: is_valid (true/false) or split (train/valid/test)
    label_delim: str | None = None  # splits a label cell into several labels: the task becomes multi-label

    @classmethod
    def from_fields(cls, source: object) -> "TableFormat":
        """The spec of anything holding the five fields by name: TrainOptions, parsed command-line arguments, or a
        dict such as a saved model's data record (a field it lacks is None).

        Example: ``TableFormat.from_fields(TrainOptions(label_delim=" ")).label_delim`` → ``' '``.
        """
        get = source.get if isinstance(source, dict) else (lambda name: getattr(source, name, None))
        images = get("images")
        return cls(images=None if images is None else str(images), fn_col=get("fn_col"), label_col=get("label_col"),
                   valid_col=get("valid_col"), label_delim=get("label_delim"))

    def as_meta(self) -> dict:
        """The fields a saved model keeps (no folder: a model file should not carry the trainer's paths)."""
        return {"fn_col": self.fn_col, "label_col": self.label_col, "valid_col": self.valid_col,
                "label_delim": self.label_delim}


def is_table(path: object) -> bool:
    """True for a DataFrame or an existing file path with a table ending (``.csv``, ``.tsv``, ``.tab``)."""
    if isinstance(path, pd.DataFrame):
        return True
    try:
        p = Path(path).expanduser()
    except TypeError:
        return False
    return p.suffix.lower() in TABLE_SUFFIXES and p.is_file()


@dataclass(frozen=True)
class TableRows:
    """What ``read_table`` found: rows (path, label[, split]) to use, rows left out, and how it read them."""

    frame: pd.DataFrame
    skipped: list[tuple[str, str]]
    root: Path
    multi_label: bool
    spec: TableFormat  # with the column names actually used
    has_split: bool



def table_delimiter(path: Path, comma_header: list[str] | None = None) -> str:
    """The delimiter of a label table: tabs for .tsv/.tab, else commas — unless ``comma_header`` (the header row
    read with commas) is one cell holding a tab: a TSV named .csv. Apply reads a table by the same rule.

    Example: ``table_delimiter(Path("labels.csv"), ["file\tlabel"])`` → ``'\t'``.
    """
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    return "\t" if comma_header is not None and len(comma_header) == 1 and "\t" in comma_header[0] else ","

def _load(source: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str, Path | None]:
    """The table, a name for messages, and its folder (None for a DataFrame)."""
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True), "the DataFrame", None
    path = Path(source).expanduser()
    if path.is_dir():
        raise DataError(f"{path} is a folder: layout 'csv' reads a table file (.csv, .tsv) of file names and labels.")
    if not path.is_file():
        raise DataError(f"label table {path} does not exist: check the path.")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(f"label table {path} is {size / 1e9:.1f} GB; tables over {MAX_FILE_BYTES / 1e9:.1f} GB are "
                        "not read. Split it, or pass a DataFrame.")
    sep = table_delimiter(path)
    try:
        # Every cell as text and only empty cells missing: a class named 'NA' or '007' stays as written.
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
        if table_delimiter(path, [str(c) for c in frame.columns]) != sep:  # a TSV named .csv
            frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text: save it as UTF-8 (CSV UTF-8 in a spreadsheet).") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path} cannot be read as a table ({first}): expected a header row and one row per "
                        "image, separated by commas (tabs in a .tsv file).") from None
    return frame, str(path), path.parent


def _pick(frame: pd.DataFrame, given: str | None, candidates: Sequence[str], *, what: str, flag: str,
          name: str, required: bool) -> str | None:
    columns = [str(c) for c in frame.columns]
    if given is not None:
        if given not in columns:
            raise DataError(f"{name} has no column {given!r} for the {what}: its columns are "
                            f"{', '.join(map(repr, columns))}. Pass {flag} with one of them.")
        return given
    lower = {c.lower(): c for c in reversed(columns)}
    found = next((lower[c] for c in candidates if c in lower), None)
    if found is None and required:
        raise DataError(f"{name} has no {what} column: its columns are {', '.join(map(repr, columns[:20]))}, "
                        f"and none is named {', '.join(candidates[:6])}. Pass {flag} NAME to say which it is.")
    return found


def _text(value: object) -> str | None:
    """A cell as label text: None when empty or missing; integral floats without '.0'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _labels(value: object, delim: str | None) -> tuple[str, ...] | str | None:
    """A label cell as one label (single-label) or a tuple of distinct labels in order (multi-label)."""
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        parts = [t for t in map(_text, value) if t]
        return tuple(dict.fromkeys(sorted(parts) if isinstance(value, (set, frozenset)) else parts)) or None
    text = _text(value)
    if text is None or delim is None:
        return text
    parts = [p.strip() for p in (text.split(delim) if delim else text.split())]
    return tuple(dict.fromkeys(p for p in parts if p)) or None


class _Resolver:
    """File names of a table to files under one folder, listing each directory once.

    A name is used only when the folder it lies in is, once symlinks are resolved, inside the image
    folder: a link such as ``imgs/up -> /`` would otherwise open every file of the machine to the
    table's rows. The file itself may be a symlink, as in the folder layouts: that is the folder
    owner's choice of one file (symlink farms, DVC's symlinked cache), not a way out for the table.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root_norm = os.path.normpath(os.path.abspath(root))
        self._root_real = os.path.realpath(self._root_norm)
        self._listings: dict[str, set[str] | None] = {}
        self._inside: dict[str, bool] = {}

    def _really_inside(self, folder: str) -> bool:
        if folder not in self._inside:
            real = os.path.realpath(folder)
            self._inside[folder] = os.path.commonpath([real, self._root_real]) == self._root_real
        return self._inside[folder]

    def _listing(self, folder: str) -> set[str] | None:
        if folder not in self._listings:
            try:
                with os.scandir(folder) as entries:
                    self._listings[folder] = {e.name for e in entries}
            except OSError:
                self._listings[folder] = None
        return self._listings[folder]

    def resolve(self, name: str) -> tuple[str | None, str]:
        """(path, '') for a usable name; (None, why) otherwise."""
        if "\x00" in name:
            return None, "file name contains a NUL character"
        target = os.path.normpath(os.path.join(self._root_norm, name))
        if os.path.commonpath([target, self._root_norm]) != self._root_norm:
            return None, f"names a file outside the image folder {self.root}"
        folder, base = os.path.split(target)
        # Before the listing: whether a folder outside exists is not the table's to learn either.
        if not self._really_inside(folder):
            return None, f"names a file outside the image folder {self.root} (through a symlinked folder)"
        listing = self._listing(folder)
        if listing is None:
            return None, f"missing file: folder {folder} does not exist"
        if PurePath(base).suffix.lower() in IMAGE_EXTENSIONS:
            return (target, "") if base in listing else (None, "missing file")
        # Kaggle-style ids without an extension: the one image file of that name.
        matches = sorted(base + ext for ext in {*IMAGE_EXTENSIONS, *(e.upper() for e in IMAGE_EXTENSIONS)}
                         if base + ext in listing)
        if not matches:
            return None, "missing file (no image file of that name with any image extension)"
        if len(matches) > 1:
            return None, f"ambiguous name: {', '.join(matches)} all match; write the extension in the table"
        return os.path.join(folder, matches[0]), ""


def _too_long(what: str, text: str, limit: int, where: str, why: str) -> DataError:
    """The error for one over-long cell: where it is, its start and length, the limit, the likely cause."""
    return DataError(f"{where}: the {what} {printable(text[:20])!r}… is {len(text):,} characters long; {why} "
                     f"(at most {limit:,} characters). A quote (\") left open makes one cell swallow the lines "
                     "after it: check the quotes on that line, and the column chosen (--fn-col, --label-col).")


def _refuse_long_cells(table: pd.DataFrame, fn_col: str, label_col: str, *, delim: str | None, lists: bool,
                       name: str, line: Callable[[int], str]) -> None:
    """Refuse a file name or label longer than petclf can use, naming its line, before any work.

    A label over ``MAX_CLASS_NAME_CHARS`` would train for hours and end in a model that the model-file
    check refuses to load; a huge one (a quote left open) also stalls the plots and floods the log.
    """
    def lengths(column: str) -> np.ndarray:
        # Lists (a DataFrame's multi-label column) are judged per label below; here only text cells count.
        return table[column].map(lambda v: len(v) if isinstance(v, str) else 0).to_numpy()

    for i in np.flatnonzero(lengths(fn_col) > MAX_FILE_NAME_CHARS)[:1]:
        raise _too_long("file name", table[fn_col].iat[i], MAX_FILE_NAME_CHARS, f"{name}, {line(i)}",
                        "no file name is that long")
    labels = table[label_col]
    # A column of lists is looked at cell by cell; text cells only where they are long.
    rows = range(len(labels)) if lists else np.flatnonzero(lengths(label_col) > MAX_CLASS_NAME_CHARS)
    for i in rows:
        parsed = _labels(labels.iat[i], delim)
        for label in (parsed,) if isinstance(parsed, str) else parsed or ():
            if len(label) > MAX_CLASS_NAME_CHARS:
                raise _too_long("label", label, MAX_CLASS_NAME_CHARS, f"{name}, {line(i)}",
                                "a class name that long cannot be saved in a model")


def _split_value(value: object, column: str) -> tuple[str | None, str]:
    text = _text(value)
    if isinstance(value, (bool, np.bool_)):
        return ("valid" if value else "train"), ""
    if text is None:
        return None, f"empty {column} value"
    if column.lower() == "split" or text.lower() in _SPLITS:
        split = _SPLITS.get(text.lower())
        if split is None:
            return None, f"{column} value {text!r} is not train, valid or test"
        return split, ""
    low = text.lower()
    if low in _TRUE:
        return "valid", ""
    if low in _FALSE:
        return "train", ""
    return None, f"{column} value {text!r} is not true/false (or 1/0)"


def read_table(source: str | Path | pd.DataFrame, *, spec: TableFormat = TableFormat()) -> TableRows:
    """Rows of labelled image files from a table, with the rows left out and why.

    ``frame`` has ``path`` and ``label`` (a string, or a tuple of strings when multi-label) and,
    when the table has a split column, ``split``.

    Example: ``read_table("train.csv", spec=TableFormat(images="train_images")).frame.head()``.
    """
    table, name, folder = _load(source)
    if spec.images is not None:
        root = Path(spec.images).expanduser()
        if not root.is_dir():
            raise DataError(f"image folder {root} (images=/--images) does not exist or is not a folder.")
    elif folder is not None:
        root = folder
    else:
        raise UsageError("a DataFrame of file names needs the folder they are relative to: pass images=DIR "
                         "(or absolute paths under it).")
    if table.empty:
        raise DataError(f"{name} has no rows: expected one row per image with its file name and label.")
    fn_col = _pick(table, spec.fn_col, FILE_COLUMNS, what="file name", flag="--fn-col / fn_col=", name=name,
                   required=True)
    label_col = _pick(table, spec.label_col, LABEL_COLUMNS, what="label", flag="--label-col / label_col=", name=name,
                      required=True)
    valid_col = _pick(table, spec.valid_col, SPLIT_COLUMNS, what="split", flag="--valid-col / valid_col=", name=name,
                      required=False)
    if fn_col == label_col:
        raise UsageError(f"the file and label columns are both {fn_col!r}: pass --fn-col and --label-col.")
    if spec.label_delim == "" or (spec.label_delim is not None and len(spec.label_delim) > 8):
        raise UsageError(f"label_delim must be 1 to 8 characters, such as ' ' or ';'. Received: {spec.label_delim!r}.")
    lists = table[label_col].map(lambda v: isinstance(v, (list, tuple, set, frozenset, np.ndarray))).any()
    multi_label = spec.label_delim is not None or bool(lists)
    line = (lambda i: f"line {i + 2}") if folder is not None else (lambda i: f"row {i}")
    _refuse_long_cells(table, fn_col, label_col, delim=spec.label_delim if multi_label and not lists else None,
                       lists=bool(lists), name=name, line=line)
    resolver = _Resolver(root)
    rows, skipped = [], []
    for i, (fname, raw_label, raw_split) in enumerate(zip(
            table[fn_col], table[label_col], table[valid_col] if valid_col else [None] * len(table))):
        fname_text = _text(fname)
        shown = fname_text or f"({name}, {line(i)})"
        if fname_text is None:
            skipped.append((shown, f"{line(i)}: empty file name"))
            continue
        path, why = resolver.resolve(fname_text)
        if path is None:
            skipped.append((fname_text, f"{line(i)}: {why}"))
            continue
        label = _labels(raw_label, spec.label_delim if multi_label and not lists else None)
        if label is None and not multi_label:
            skipped.append((path, f"{line(i)}: empty label"))
            continue
        if multi_label:
            # No labels is a negative example (no cloud, no finding), which multi-label data needs.
            label = () if label is None else (label,) if isinstance(label, str) else label
        split = None
        if valid_col:
            split, why = _split_value(raw_split, valid_col)
            if split is None:
                skipped.append((path, f"{line(i)}: {why}"))
                continue
        rows.append((path, label, split, line(i)))
    frame, dup_skipped = _drop_duplicates(rows)
    skipped += dup_skipped
    if frame.empty:
        examples = "; ".join(f"{printable(p)}: {r}" for p, r in skipped[:3])
        raise DataError(f"none of the {len(table)} rows of {name} names a usable image ({examples}). Check the "
                        f"image folder ({root}; --images) and the columns ({fn_col!r}, {label_col!r}).")
    if multi_label:
        labelled = frame.label.map(len) > 0
        if not labelled.any():
            raise DataError(f"none of the {len(frame)} rows of {name} has a label in column {label_col!r}: a "
                            "multi-label model needs images that carry labels as well as images without. Check the "
                            "label column (--label-col).")
        if not labelled.all():
            log.info(f"{int((~labelled).sum())} images of {name} have no labels: kept as negative examples "
                     "(every label absent).")
    # Exactly one label everywhere is single-label data read with the wrong delimiter; one label or none
    # (a finding or nothing) is multi-label all the same: no softmax can say "none".
    if spec.label_delim is not None and not lists and all(len(t) == 1 for t in frame.label):
        raise DataError(f"label_delim {spec.label_delim!r} splits none of the {len(frame)} labels of {name} "
                        f"(e.g. {printable(frame.label.iloc[0][0])!r}): every image has one label. Drop "
                        "--label-delim for single-label training, or pass the delimiter the table uses.")
    n_classes = len(set(frame.label.explode().dropna()) if multi_label else set(frame.label))
    if n_classes > MAX_CLASSES:
        raise DataError(f"{name} has {n_classes:,} distinct labels; a model holds at most {MAX_CLASSES:,} classes. "
                        f"Check the label column ({label_col!r}; --label-col) and --label-delim.")
    if not valid_col:
        frame = frame.drop(columns="split")
    used = TableFormat(images=spec.images, fn_col=fn_col, label_col=label_col, valid_col=valid_col,
                     label_delim=spec.label_delim)
    return TableRows(frame=frame.reset_index(drop=True), skipped=skipped, root=root, multi_label=multi_label,
                     spec=used, has_split=bool(valid_col))


def _drop_duplicates(rows: list[tuple]) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """One row per file: exact repeats are left out; rows that give one file different labels all are."""
    by_path: dict[str, list[tuple]] = {}
    for row in rows:
        by_path.setdefault(row[0], []).append(row)
    kept, skipped = [], []
    for path, group in by_path.items():
        first = group[0]
        if all((r[1], r[2]) == (first[1], first[2]) for r in group):
            kept.append(first[:3])
            skipped += [(path, f"{r[3]}: duplicate row (same file, label and split as {first[3]})") for r in group[1:]]
        else:
            lines = ", ".join(r[3] for r in group)
            skipped += [(path, f"{r[3]}: conflicting rows for one file ({lines} give different labels or splits)")
                        for r in group]
    return pd.DataFrame(kept, columns=["path", "label", "split"]), skipped
