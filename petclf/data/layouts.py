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
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from petclf.core import log
from petclf.core.defaults import DEFAULT_SEED, DEFAULT_VALID_PCT, LAYOUTS, MAX_SEED
from petclf.core.errors import DataError, UsageError, require_between, require_fraction
from petclf.data.images import IMAGE_EXTENSIONS
from petclf.data.table import TableSpec, is_table, read_table

__all__ = [
    "DEFAULT_LABEL_PAT",
    "UNTRUSTED_PATTERN_TIMEOUT_S",
    "Dataset",
    "check_dataset",
    "find_dataset",
    "detect_layout",
    "keep_split",
    "split_record",
]

#: Everything before the last ``_<digits>`` of the file name: keeps underscores and capitals
#: (``american_pit_bull_terrier_12.jpg`` → ``american_pit_bull_terrier``).
DEFAULT_LABEL_PAT = r"^(.+)_\d+\.[^.]+$"
_VALID_NAMES = ("valid", "val")
#: Seconds that matching all file names with a label pattern from elsewhere (a model's
#: petclf.json) may take before it is given up as runaway backtracking.
UNTRUSTED_PATTERN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Dataset:
    """Labelled image files: one row per file with columns ``path``, ``label``, ``split``.

    In a multi-label dataset each ``label`` is a tuple of labels; otherwise it is one string.
    """

    frame: pd.DataFrame = field(repr=False)
    layout: str
    root: Path
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "reason"]), repr=False)
    multi_label: bool = False
    table: TableSpec | None = None  # how a table was read (the columns used), for the csv layout

    @property
    def classes(self) -> list[str]:
        return sorted(self.class_counts("train").index)

    def class_counts(self, split: str = "train") -> pd.Series:
        """Images per class in ``split``, largest first (multi-label: images carrying each label).

        Example: ``find_dataset("digits").class_counts()["seven"]`` → ``144``.
        """
        labels = self.frame.loc[self.frame.split == split, "label"]
        if self.multi_label:
            labels = labels.explode()
        return labels.value_counts()

    def count(self, split: str) -> int:
        return int((self.frame.split == split).sum())

    def describe(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in ("train", "valid", "test") if self.count(s)]
        kind = "labels (multi-label)" if self.multi_label else "classes"
        return f"{self.layout} layout, {len(self.classes)} {kind}, " + ", ".join(parts) + " images"


_JUNK_NAMES = {".DS_Store": "macOS folder metadata (.DS_Store)", "Thumbs.db": "Windows thumbnail cache (Thumbs.db)",
               "desktop.ini": "Windows folder settings (desktop.ini)"}


def _why_not_image(path: Path) -> str | None:
    """None for a candidate image file; otherwise why the file is passed over."""
    if path.name in _JUNK_NAMES:
        return _JUNK_NAMES[path.name]
    if path.name.startswith("._"):
        return "macOS AppleDouble metadata (._ file)"
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image file ({path.suffix or 'no extension'})"
    if path.is_symlink():
        # Settled here, at listing time: a link has no stamp for the scan cache to key on.
        try:
            path.stat()
        except FileNotFoundError:
            return "broken symlink"
        except OSError:
            return "symlink loop"
    return None


def _entries(folder: Path, *, recurse: bool) -> Iterator[tuple[Path, str | None]]:
    """Each file with why it is passed over (None: a candidate image); symlinked folders are not followed."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recurse else []
        for name in sorted(filenames):
            path = Path(dirpath) / name
            yield path, _why_not_image(path)
        if not recurse:
            break


def _walk(folder: Path, *, recurse: bool) -> tuple[list[Path], list[tuple[str, str]]]:
    """Candidate images and (path, reason) for everything else."""
    images, skipped = [], []
    for path, reason in _entries(folder, recurse=recurse):
        (skipped.append((str(path), reason)) if reason else images.append(path))
    return images, skipped


def _has_image(folder: Path, *, recurse: bool) -> bool:
    """True at the first candidate image (layout detection needs no full listing)."""
    return any(reason is None for _, reason in _entries(folder, recurse=recurse))


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


_Listing = tuple[list[Path], list[tuple[str, str]]]


@dataclass(frozen=True)
class _Found:
    """A detected layout and the folder it applies to (``images/`` of the Pets archive)."""

    layout: str
    root: Path
    listing: _Listing | None = None  # the files of ``root`` when detection already listed them


#: Folder names that hold photos rather than name a class (compared in lower case).
_IMAGE_FOLDER_NAMES = frozenset({
    "images", "image", "imgs", "img", "photos", "photo", "pictures", "pics", "jpg", "jpeg", "jpegimages",
    "train_images", "valid_images", "val_images", "test_images",
})
#: Folder names that hold masks or annotations rather than name a class (compared in lower case).
_ANNOTATION_FOLDER_NAMES = frozenset({
    "annotations", "annotation", "masks", "trimaps", "segmentation", "segmentations", "labels", "xmls",
})
# One kind of file under several extensions.
_SAME_KIND = {".jpeg": ".jpg", ".tif": ".tiff"}


def _pets_style(names: Sequence[str]) -> bool:
    """True when most ``names`` read as ``<label>_<n>.<ext>`` with two labels or more (the pets layout)."""
    pattern = re.compile(DEFAULT_LABEL_PAT)
    labels = [m.group(1) for m in map(pattern.match, names) if m]
    return 2 * len(labels) > len(names) and len(set(labels)) >= 2


def _pets_archive(root: Path) -> _Found | None:
    """The pets layout of ``root/images`` when ``root`` is the Oxford-IIIT Pet archive, else None."""
    images = root / "images"
    if not (images.is_dir() and (root / "annotations").is_dir()):
        return None
    # Listed once: the same listing then feeds the pets frame.
    listing = _walk(images, recurse=False)
    if not _pets_style([f.name for f in listing[0]]):
        return None
    log.info(f"{root} looks like the Oxford-IIIT Pet archive: reading labels from the file names in "
             f"{images} (annotations/ is not used).")
    return _Found("pets", images, listing)


def _detect(path: Path) -> _Found:
    """The layout of the existing folder ``path`` (see ``detect_layout``)."""
    if (path / "train").is_dir() and any((path / v).is_dir() for v in (*_VALID_NAMES, "test")):
        return _Found("folders", path)
    if _has_image(path, recurse=False):
        return _Found("pets", path)
    archive = _pets_archive(path)
    if archive is not None:
        return archive
    if any(_has_image(d, recurse=True) for d in _class_dirs(path)):
        return _Found("classes", path)
    raise DataError(
        f"no images found in {path}: expected image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
        "named <label>_<n>.jpg, one sub-folder per class, or train/ and valid/ split folders."
    )


def detect_layout(path: Path) -> str:
    """Name the layout of ``path``: 'csv' (a table file), 'folders', 'classes' or 'pets'.

    The Oxford-IIIT Pet archive (``images/`` beside ``annotations/``) is 'pets': its ``images/``
    folder is what ``find_dataset`` reads.

    Example: ``detect_layout(Path("caltech10"))`` → ``'folders'`` when it has train/ and valid/.
    """
    return "csv" if is_table(path) else _detect(_existing_dir(path)).layout


def _refuse_non_classes(root: Path, frame: pd.DataFrame) -> None:
    """Refuse class folders that look like photo, mask or annotation folders of one dataset.

    Works from the listing in ``frame`` (``path``, ``label``), so big folders are not walked again.
    """
    direct: dict[str, list[str]] = {}
    kinds: dict[str, Counter] = {}
    stems: dict[str, set[str]] = {}
    for path, label in zip(frame.path, frame.label):
        folder, name = os.path.split(path)
        stem, ext = os.path.splitext(name)
        if folder == str(root / label):
            direct.setdefault(label, []).append(name)
        ext = ext.lower()
        kinds.setdefault(label, Counter())[_SAME_KIND.get(ext, ext)] += 1
        stems.setdefault(label, set()).add(stem)
    override = "or pass layout='classes' / --layout classes if it really is a class"
    for label in sorted(kinds):
        folder = root / label
        if label.lower() in _ANNOTATION_FOLDER_NAMES:
            raise DataError(f"{folder} looks like masks or annotations, not a class of images: point petclf at "
                            f"the folder of photos, {override}.")
        if label.lower() in _IMAGE_FOLDER_NAMES and _pets_style(direct.get(label, [])):
            raise DataError(f"{folder} looks like a folder of photos named <label>_<n>.jpg, not a class: point "
                            f"petclf at {folder} (it is in the pets layout), {override}.")
    dominant = {label: counts.most_common(1)[0][0] for label, counts in kinds.items()}
    if len(set(dominant.values())) < 2:
        return  # one kind of file throughout: shared stems (cat/1.jpg, dog/1.jpg) are fine
    stems_of_kind: dict[str, set[str]] = {}
    for label, kind in dominant.items():
        stems_of_kind.setdefault(kind, set()).update(stems[label])
    # Per kind once, not per class: a dataset can have hundreds of classes.
    of_other_kinds = {kind: set().union(*(s for other, s in stems_of_kind.items() if other != kind))
                      for kind in stems_of_kind}
    for label in sorted(kinds):
        if 2 * len(stems[label] & of_other_kinds[dominant[label]]) <= len(stems[label]):
            continue
        partner = max((other for other in sorted(kinds) if dominant[other] != dominant[label]),
                      key=lambda other: len(stems[label] & stems[other]))
        shared = len(stems[label] & stems[partner])
        raise DataError(
            f"class folders {root / label} ({dominant[label]}) and {root / partner} ({dominant[partner]}) hold "
            f"{shared} files of the same names but of different kinds: they look like masks or annotations "
            "beside photos, not classes. Point petclf at the folder of photos, or pass layout='classes' / "
            "--layout classes if they really are classes."
        )


def _existing_dir(path: Path | str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data folder {path} does not exist: check the path.")
    if not path.is_dir():
        raise DataError(f"{path} is a file: expected a folder of images, or a table of file names and labels "
                        f"ending in {', '.join(sorted({'.csv', '.tsv'}))}.")
    return path


# Run by a child interpreter: the labels (first group, or None) of the names, as JSON.
_MATCH_CODE = """
import json, re, sys
pattern, names = json.load(sys.stdin)
search = re.compile(pattern).search
labels = []
for name in names:
    match = search(name)
    labels.append(match.group(1) if match else None)
json.dump(labels, sys.stdout)
"""


def _labels_in_child(pattern: str, names: list[str], folder: Path) -> list[str | None]:
    """The first group of ``pattern`` in each name (None: no match), matched in a child process.

    The child is killed after ``UNTRUSTED_PATTERN_TIMEOUT_S``: Python's ``re`` has no time-out, and
    a stranger's pattern such as ``^(\\w+)+_\\d+\\.jpg$`` backtracks for minutes on a 32-character name.
    """
    budget = UNTRUSTED_PATTERN_TIMEOUT_S
    try:
        # ASCII JSON both ways, so any file name (even undecodable bytes) survives the pipe.
        done = subprocess.run([sys.executable, "-I", "-c", _MATCH_CODE], input=json.dumps([pattern, names]),
                              capture_output=True, encoding="utf-8", errors="replace", timeout=budget,
                              check=False)
    except subprocess.TimeoutExpired:
        raise DataError(f"the label pattern {pattern!r} stored in the model took more than {budget:g} s on the "
                        f"file names of {folder}; pass --label-pat to use a pattern of your own.") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise DataError(f"the label pattern {pattern!r} stored in the model failed on the file names of {folder} "
                        f"({why}); pass --label-pat to use a pattern of your own.")
    return json.loads(done.stdout)


def _pets_frame(path: Path, label_pat: str, *, listing: _Listing | None = None,
                trusted: bool = True) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Rows (path, label) from the file names directly in ``path``, and the files passed over.

    ``listing`` is ``_walk(path, recurse=False)`` when the caller has it already; an untrusted
    ``label_pat`` is matched in a child process with a time limit.
    """
    try:
        pattern = re.compile(label_pat)
    except re.error as err:
        raise UsageError(f"label_pat {label_pat!r} is not a valid regular expression: {err}.") from None
    if pattern.groups < 1:
        raise UsageError(f"label_pat {label_pat!r} has no group: put the label in parentheses, e.g. {DEFAULT_LABEL_PAT!r}.")
    files, skipped = listing if listing is not None else _walk(path, recurse=False)
    skipped = list(skipped)
    if not files:
        raise DataError(f"no images directly in {path}: the pets layout reads labels from the names of the files "
                        "in one folder. For images in class subfolders use layout='classes' / --layout classes.")
    names = [file.name for file in files]
    if trusted:
        labels = [match.group(1) if match else None for match in map(pattern.search, names)]
    else:
        labels = _labels_in_child(label_pat, names, path)
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
    for d in _class_dirs(folder):
        images, junk = _walk(d, recurse=True)
        rows += [(str(f), d.name) for f in images]
        skipped += junk
    return pd.DataFrame(rows, columns=["path", "label"]), skipped


def _random_split(frame: pd.DataFrame, *, valid_pct: float, seed: int) -> pd.DataFrame:
    """Split each class apart so small classes still reach the validation set (stratified)."""
    rng = np.random.default_rng(seed)
    split = np.array(["train"] * len(frame), dtype=object)
    for _, index in frame.groupby("label").indices.items():
        n_valid = int(round(len(index) * valid_pct))
        if len(index) >= 2 and valid_pct > 0:
            n_valid = min(max(n_valid, 1), len(index) - 1)
        split[rng.permutation(index)[:n_valid]] = "valid"
    return frame.assign(split=split)


def _random_split_multi(frame: pd.DataFrame, *, valid_pct: float, seed: int) -> pd.DataFrame:
    """Hold out ``valid_pct`` of images at random, never the last training image of a label."""
    rng = np.random.default_rng(seed)
    left = Counter(label for labels in frame.label for label in labels)
    target, chosen = int(round(len(frame) * valid_pct)), []
    for i in rng.permutation(len(frame)):
        if len(chosen) >= target:
            break
        labels = frame.label.iat[i]
        if all(left[label] > 1 for label in labels):
            chosen.append(i)
            left.subtract(labels)
    split = np.array(["train"] * len(frame), dtype=object)
    split[chosen] = "valid"
    return frame.assign(split=split)


def _table_dataset(source, *, table: TableSpec, valid_pct: float, seed: int) -> Dataset:
    """The csv layout: rows of a table file or DataFrame, split by its split column or at random."""
    rows = read_table(source, spec=table)
    frame = rows.frame
    if not rows.has_split:
        split = _random_split_multi if rows.multi_label else _random_split
        frame = split(frame, valid_pct=valid_pct, seed=seed)
    elif rows.multi_label:
        _refuse_unseen_labels(frame, rows.spec.valid_col)
    else:
        frame = _drop_unknown_labels(frame)
    return Dataset(frame=frame.reset_index(drop=True), layout="csv", root=rows.root,
                   skipped=pd.DataFrame(rows.skipped, columns=["path", "reason"]), multi_label=rows.multi_label,
                   table=rows.spec)


def _refuse_unseen_labels(frame: pd.DataFrame, column: str) -> None:
    """A multi-label model cannot learn a label no training image carries; dropping it would change targets."""
    seen = {label for labels in frame.label[frame.split == "train"] for label in labels}
    unseen = sorted({label for labels in frame.label[frame.split != "train"] for label in labels} - seen)
    if unseen:
        raise DataError(f"labels {', '.join(map(repr, unseen[:10]))} appear in valid/test rows but in no training "
                        f"row, so the model cannot learn them: mark some of their images as training in the "
                        f"{column!r} column, or remove those labels.")


def _folder_split_frame(path: Path, *, valid_pct: float, seed: int) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    valid_dir = next((path / v for v in _VALID_NAMES if (path / v).is_dir()), None)
    folders = {"train": path / "train", "valid": valid_dir, "test": path / "test"}
    parts, skipped = [], []
    for split, folder in folders.items():
        if folder is None or not folder.is_dir():
            continue
        frame, junk = _class_frame(folder)
        if split == "train" and valid_dir is None:
            # train/ and test/ only (CIFAR-10): hold out valid_pct of train/ for validation.
            frame = _random_split(frame, valid_pct=valid_pct, seed=seed)
        else:
            frame = frame.assign(split=split)
        parts.append(frame)
        skipped += junk
    return pd.concat(parts, ignore_index=True), skipped


def _drop_unknown_labels(frame: pd.DataFrame) -> pd.DataFrame:
    known = set(frame.loc[frame.split == "train", "label"])
    unknown = frame[~frame.label.isin(known)]
    if len(unknown):
        names = sorted(unknown.label.unique())
        log.warn(f"classes {', '.join(names[:10])} appear only outside train/ ({len(unknown)} images); "
                 "they are left out because the model cannot learn them.")
    return frame[frame.label.isin(known)].reset_index(drop=True)


def _explicit(root: Path, layout: str) -> _Found:
    """The folder that an explicitly chosen ``layout`` reads."""
    if layout == "pets" and not _has_image(root, recurse=False):
        # A model trained on the Pets archive stores layout 'pets' for it; evaluation passes it back.
        archive = _pets_archive(root)
        if archive is not None:
            return archive
    return _Found(layout, root)


def find_dataset(path: Path | str | pd.DataFrame, *, layout: str = "auto", label_pat: str | None = None,
                 valid_pct: float = DEFAULT_VALID_PCT, seed: int = DEFAULT_SEED, trainable: bool = True,
                 trusted_pattern: bool = True, table: TableSpec | None = None) -> Dataset:
    """Find labelled images in a folder or a table (``path``) and split them into train/valid(/test).

    A CSV/TSV file or a DataFrame is read as the csv layout, with ``table`` saying how (columns,
    image folder, label delimiter; see ``petclf.data.table``).

    With ``trainable`` (the default) a folder that cannot train a classifier (one class, no
    validation images) is refused; evaluation passes ``trainable=False``.

    ``trusted_pattern=False`` marks ``label_pat`` as coming from elsewhere (a model file): it is
    then matched in a child process and refused when it takes more than
    ``UNTRUSTED_PATTERN_TIMEOUT_S`` seconds.

    With ``layout="auto"``, the Oxford-IIIT Pet archive (``images/`` beside ``annotations/``)
    gives the pets layout of its ``images/`` folder (the Dataset's root), and class folders that
    look like photo, mask or annotation folders are refused with a hint.

    Example: ``find_dataset("pets/images").describe()`` →
    ``'pets layout, 37 classes, 5912 train, 1478 valid images'``.
    """
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}: expected one of {', '.join(LAYOUTS)}.")
    require_fraction(valid_pct=valid_pct)
    require_between(0, MAX_SEED, seed=seed)
    if layout == "csv" or (layout == "auto" and is_table(path)):
        dataset = _table_dataset(path, table=table or TableSpec(), valid_pct=valid_pct, seed=seed)
        if trainable:
            check_dataset(dataset)
        return dataset
    if isinstance(path, pd.DataFrame):
        raise UsageError(f"a DataFrame is read as layout 'csv'. Received: layout={layout!r}.")
    found = _detect(_existing_dir(path)) if layout == "auto" else _explicit(_existing_dir(path), layout)
    chosen, root = found.layout, found.root
    if chosen == "pets":
        frame, skipped = _pets_frame(root, label_pat or DEFAULT_LABEL_PAT, listing=found.listing,
                                     trusted=trusted_pattern or label_pat is None)
        frame = _random_split(frame, valid_pct=valid_pct, seed=seed)
    elif chosen == "classes":
        frame, skipped = _class_frame(root)
        if frame.empty:
            raise DataError(f"no images in sub-folders of {root}: the classes layout reads one sub-folder per class. "
                            "For a flat folder of <label>_<n>.jpg files use --layout pets (or auto).")
        if layout == "auto":  # an explicit layout='classes' is the user's word that these are classes
            _refuse_non_classes(root, frame)
        frame = _random_split(frame, valid_pct=valid_pct, seed=seed)
    else:
        if not (root / "train").is_dir():
            raise DataError(f"layout 'folders' needs a {root}/train sub-folder, with valid/ (or val/) and/or test/.")
        frame, skipped = _folder_split_frame(root, valid_pct=valid_pct, seed=seed)
        frame = _drop_unknown_labels(frame)
    dataset = Dataset(frame=frame.reset_index(drop=True), layout=chosen, root=root,
                      skipped=pd.DataFrame(skipped, columns=["path", "reason"]))
    if trainable:
        check_dataset(dataset)
    return dataset


def split_record(dataset: Dataset) -> dict:
    """The split of ``dataset`` as plain data (file paths relative to its root), to fix it for a run's life.

    Example: ``json.dumps(split_record(ds))``; ``keep_split(find_dataset(root), record)`` gives it back.
    """
    root = str(dataset.root)
    return {"root": root, "files": {os.path.relpath(p, root): s for p, s in zip(dataset.frame.path, dataset.frame.split)}}


def keep_split(dataset: Dataset, record: dict) -> Dataset:
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
    gone = [(str(dataset.root / r), "gone since the run started (it was in its split)") for r in files if r not in present]
    added = [(p, "added since the run started: a fresh run (another --out) uses it") for p in new.path]
    if gone or added:
        log.warn(f"the run keeps its split: {len(gone)} files are gone and {len(added)} are new since it started; "
                 "both are left out (skipped.csv)")
    kept = frame[known].assign(split=[files[r] for r, k in zip(rel, known) if k]).reset_index(drop=True)
    skipped = pd.concat([dataset.skipped, pd.DataFrame(gone + added, columns=["path", "reason"])], ignore_index=True)
    return replace(dataset, frame=kept, skipped=skipped)


def check_dataset(dataset: Dataset) -> None:
    """Refuse a dataset that cannot train a classifier (no images, one class, no validation images)."""
    if dataset.count("train") == 0:
        raise DataError(f"no training images found in {dataset.root} ({dataset.layout} layout).")
    if len(dataset.classes) < 2 and not dataset.multi_label:
        hint = ("the label column (--label-col)" if dataset.layout == "csv"
                else "the folder layout or the label pattern (--label-pat)")
        raise DataError(
            f"found a single class ({', '.join(dataset.classes)}) in {dataset.root}: a classifier needs at "
            f"least 2. Check {hint}."
        )
    if dataset.multi_label and len(dataset.classes) < 2:
        raise DataError(f"every training image carries the same single label ({', '.join(dataset.classes)}): "
                        "a multi-label classifier needs at least 2 labels. Check the label column and --label-delim.")
    if dataset.count("valid") == 0:
        raise DataError(
            f"no validation images in {dataset.root}: raise valid_pct above 0 or add images to valid/."
        )
