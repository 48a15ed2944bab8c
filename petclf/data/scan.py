"""Check every image before training: skip what cannot be read, note what is converted, warn of leakage.

Results are cached per file (keyed by path, size and modification time), so a rescan of an
unchanged folder only stats the files.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import pandas as pd
from PIL import Image, UnidentifiedImageError

from petclf.core import log
from petclf.core.atomic import atomic_path, read_json_or
from petclf.core.defaults import DEFAULT_SEED, DEFAULT_VALID_PCT
from petclf.core.errors import DataError
from petclf.core.safe_text import printable
from petclf.data.cachedir import cache_dir
from petclf.data.images import UnreadableImage, file_problem, pixel_problem, to_rgb
from petclf.data.checks import check_dataset
from petclf.data.dataset import LabelledImages
from petclf.data.layouts import find_dataset
from petclf.data.table import TableFormat

__all__ = ["IMBALANCE_RATIO", "FileCheck", "ScanReport", "check_file", "class_table", "count_reasons", "file_digest",
           "reason_kind", "scan_files", "scan_dataset", "check_folder"]

CACHE_VERSION = 1


@dataclass(frozen=True)
class FileCheck:
    """The verdict on one file: ``ok`` files are used (``note`` says what was converted), others skipped."""

    path: str
    ok: bool
    reason: str = ""  # why it is skipped, or what was done to read it
    digest: str = ""  # content hash, to find the same picture in two splits


@dataclass(frozen=True)
class ScanReport:
    """A scanned dataset: what is kept, what is skipped and why, and what looks wrong."""

    dataset: LabelledImages = field(repr=False)
    skipped: pd.DataFrame = field(repr=False)  # path, reason
    notes: pd.DataFrame = field(repr=False)  # path, note (files read after a conversion)
    warnings: tuple[str, ...] = ()
    n_files: int = 0
    n_cached: int = 0

    def summary(self) -> str:
        return (f"scanned {self.n_files} images ({self.n_cached} unchanged since the last scan): "
                f"{len(self.dataset.frame)} used, {len(self.skipped)} skipped, {len(self.notes)} converted")


def _stat_problem(path: Path) -> tuple[os.stat_result | None, str]:
    try:
        return path.stat(), ""
    except FileNotFoundError:
        return None, "broken symlink" if path.is_symlink() else "file disappeared during the scan"
    except PermissionError:
        return None, "unreadable: permission denied"
    except OSError as err:
        return None, "symlink loop" if err.errno == errno.ELOOP else f"cannot stat: {err.strerror}"


def file_digest(path: str | Path) -> str:
    """Content hash read in chunks, so a huge file costs no more memory than a small one."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _name_problem(path: Path) -> str:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return f"file name is not valid UTF-8 ({printable(path.name)}): rename the file"
    return ""


def check_file(path: str | Path) -> FileCheck:
    """Decide whether ``path`` can be trained on, reading it by content rather than by extension.

    Example: ``check_file("cat_3.jpg")`` → ``FileCheck(path='cat_3.jpg', ok=True, reason='PNG content named .jpg', …)``.
    """
    path = Path(path)
    # Names that are not UTF-8 cannot go into reports, CSV files or the model's JSON.
    problem = _name_problem(path)
    if problem:
        return FileCheck(str(path), False, problem)
    st, problem = _stat_problem(path)
    if st is None:
        return FileCheck(str(path), False, problem)
    problem = file_problem(st)
    if problem:
        return FileCheck(str(path), False, problem)
    if st.st_size == 0:
        return FileCheck(str(path), False, "empty file (0 bytes)")
    try:
        digest = file_digest(path)
    except PermissionError:
        return FileCheck(str(path), False, "unreadable: permission denied")
    except OSError as err:
        return FileCheck(str(path), False, f"unreadable: {err.strerror}")
    try:
        note = _decode(path)
    except UnreadableImage as err:
        return FileCheck(str(path), False, str(err), digest)
    except Image.DecompressionBombError as err:
        return FileCheck(str(path), False, f"too large to decode safely ({str(err).split('.')[0]})", digest)
    except UnidentifiedImageError:
        return FileCheck(str(path), False, "not a readable image (unknown or corrupt format)", digest)
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        return FileCheck(str(path), False, f"truncated or corrupt image ({err})", digest)
    return FileCheck(str(path), True, note, digest)


_EXTENSIONS = {"JPEG": {".jpg", ".jpeg"}, "PNG": {".png"}, "GIF": {".gif"}, "BMP": {".bmp"},
               "WEBP": {".webp"}, "TIFF": {".tif", ".tiff"}}


def _decode(path: Path) -> str:
    notes, suffix = [], path.suffix.lower()
    # The pixel limit is checked from the header, before decoding: a warnings filter would be the obvious
    # way, but filters are global and this runs in threads, so one could outlive the check and turn PIL's
    # warning into an error elsewhere.
    with Image.open(path) as img:
        problem = pixel_problem(img)
        if problem:
            raise UnreadableImage(problem)
        fmt, mode, frames = img.format, img.mode, getattr(img, "n_frames", 1)
        # A JPEG decoded at 1/8 scale still entropy-decodes all of its data (truncated and corrupt
        # files still fail) but skips most of the pixel work: 1.5× faster on detailed photos
        # (4000×3000: 43 → 29 ms; 500×375: 0.63 → 0.45 ms).
        img.draft(mode, (max(1, img.width // 8), max(1, img.height // 8)))
        img.load()
        orientation = img.getexif().get(0x0112, 1)
        if mode != "RGB" or frames > 1 or orientation != 1:
            to_rgb(img)
    if fmt and suffix not in _EXTENSIONS.get(fmt, {suffix}):
        notes.append(f"{fmt} content named {suffix}")
    if mode != "RGB":
        notes.append(f"{mode} converted to RGB")
    if frames > 1:
        notes.append(f"animated ({frames} frames): first frame used")
    if orientation != 1:
        notes.append("EXIF orientation applied")
    return "; ".join(notes)


def _cache_file(root: Path) -> Path:
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "scan" / f"{key}.json"


def _load_cache(path: Path) -> dict:
    cached = read_json_or(path, {})
    return cached.get("files", {}) if cached.get("version") == CACHE_VERSION else {}


def _save_cache(path: Path, files: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"version": CACHE_VERSION, "files": files}))
    except OSError as err:  # a read-only home must not stop training
        log.warn(f"could not write the scan cache {path} ({err.strerror}); the next scan will not be faster.")


def _stamp(path: str) -> list | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def scan_files(paths: list[str], *, root: Path, workers: int | None = None) -> tuple[list[FileCheck], int]:
    """Check ``paths`` in parallel, reusing cached verdicts of unchanged files; returns (checks, n_cached)."""
    cache_path = _cache_file(root)
    cached = _load_cache(cache_path)
    stamps = {p: _stamp(p) for p in paths}
    results: dict[str, FileCheck] = {}
    todo = []
    for p in paths:
        entry = cached.get(p)
        if entry and stamps[p] is not None and entry["stamp"] == stamps[p]:
            results[p] = FileCheck(p, entry["ok"], entry["reason"], entry["digest"])
        else:
            todo.append(p)
    # Decoding releases the GIL, so threads use every core without pickling images between processes.
    with ThreadPoolExecutor(max_workers=workers or min(16, (os.cpu_count() or 2) * 2)) as pool:
        for check in pool.map(check_file, todo):
            results[check.path] = check
    files = {p: {"stamp": stamps[p], "ok": c.ok, "reason": c.reason, "digest": c.digest}
             for p, c in results.items() if stamps[p] is not None}
    if todo:
        _save_cache(cache_path, {**cached, **files})
    return [results[p] for p in paths], len(paths) - len(todo)


def _leakage(frame: pd.DataFrame) -> list[str]:
    train = frame[frame.split == "train"]
    others = frame[frame.split != "train"]
    shared = others[others.digest.isin(set(train.digest))]
    if shared.empty:
        return []
    by_digest = train.groupby("digest").path.first()
    pairs = [f"{Path(row.path).name} ({row.split}) = {Path(by_digest[row.digest]).name} (train)"
             for row in shared.head(5).itertuples()]
    return [f"{len(shared)} images in valid/test are identical to training images, so their scores "
            f"overstate accuracy: {'; '.join(pairs)}"]


#: A largest training class with this many times the images of the smallest gets a warning.
IMBALANCE_RATIO = 5.0


def _class_problems(dataset: LabelledImages) -> list[str]:
    counts = dataset.class_counts("train")
    if counts.empty:
        return []
    problems = []
    small = counts[counts < 2]
    if not small.empty:
        problems.append(f"classes with fewer than 2 training images: {', '.join(map(str, small.index[:10]))}")
    top, bottom = counts.index[0], counts.index[-1]
    if counts.iloc[-1] and counts.iloc[0] >= IMBALANCE_RATIO * counts.iloc[-1]:
        problems.append(
            f"skewed classes: the largest ({top}, {counts.iloc[0]} training images) has "
            f"{counts.iloc[0] / counts.iloc[-1]:.1f}x the images of the smallest ({bottom}, {counts.iloc[-1]}). "
            "Accuracy then hides how the small classes fare: read macro-F1, balanced accuracy and per-class recall "
            "in the report, and compare --balance weights / sampler.")
    return problems


def _counts_line(dataset: LabelledImages) -> str:
    """Training images per class in one line: each class when there are few, else the range."""
    counts = dataset.class_counts("train")
    what = "label" if dataset.multi_label else "class"
    if len(counts) <= 12:
        return f"training images per {what}: " + ", ".join(f"{printable(c)} {n}" for c, n in counts.items())
    return (f"training images per {what}: {counts.iloc[-1]} ({printable(counts.index[-1])}) to {counts.iloc[0]} "
            f"({printable(counts.index[0])}), median {int(counts.median())}; `petclf check` lists them all")


def class_table(dataset: LabelledImages) -> pd.DataFrame:
    """Images per class (rows) and split (columns), classes by training count, largest first.

    Example: ``class_table(find_dataset("digits")).loc["seven", "train"]`` → ``144``.
    """
    splits = [s for s in ("train", "valid", "test") if dataset.count(s)]
    table = pd.DataFrame({s: dataset.class_counts(s) for s in splits}).fillna(0).astype(int)
    table.index.name = "label" if dataset.multi_label else "class"
    return table.sort_values(["train", *splits[1:]] if "train" in table else splits, ascending=False)


_LINE_PREFIX = re.compile(r"^(?:line|row) \d+: ")
_DETAIL = re.compile(r" \(|: ")


def reason_kind(reason: str) -> str:
    """A skip reason without its table line and its details, to count rows by: what went wrong, not where.

    Example: ``reason_kind("line 7: missing file: folder x/y does not exist")`` → ``'missing file'``.
    """
    return _DETAIL.split(_LINE_PREFIX.sub("", reason), maxsplit=1)[0]


def count_reasons(reasons: Iterable[str]) -> list[tuple[str, int]]:
    """(kind, count) of skip reasons (see ``reason_kind``), most frequent first.

    Example: ``count_reasons(report.skipped.reason)`` → ``[('missing file', 3000000), ('empty label', 99000)]``.
    """
    return Counter(map(reason_kind, reasons)).most_common()


def scan_dataset(dataset: LabelledImages, *, strict: bool = False, workers: int | None = None,
                 trainable: bool = True, log_results: bool = True) -> ScanReport:
    """Check every image of ``dataset``; drop unreadable ones (or, with ``strict``, refuse them).

    With ``trainable``, what is left must still be able to train a classifier (``data.check_dataset``).
    ``log_results=False`` leaves the summary, the skipped files and the warnings to the caller (``petclf
    check`` prints them as its report, so the log would say each twice).

    Example: ``report = scan_dataset(find_dataset("pets/images")); report.skipped.head()``.
    """
    frame = dataset.frame
    checks, n_cached = scan_files(list(frame.path), root=dataset.root, workers=workers)
    ok = [c.ok for c in checks]
    bad = pd.DataFrame([(c.path, c.reason) for c in checks if not c.ok], columns=["path", "reason"])
    notes = pd.DataFrame([(c.path, c.reason) for c in checks if c.ok and c.reason], columns=["path", "note"])
    skipped = pd.concat([dataset.skipped, bad], ignore_index=True)
    if strict and len(skipped):
        examples = "; ".join(f"{Path(r.path).name}: {r.reason}" for r in skipped.head(5).itertuples())
        raise DataError(f"{len(skipped)} files (or table rows) cannot be used ({examples}). Fix or remove them, "
                        "or run without --strict to skip them (they are listed in skipped.csv).")
    kept = frame[ok].assign(digest=[c.digest for c in checks if c.ok])
    cleaned = replace(dataset, frame=kept.drop(columns="digest").reset_index(drop=True), skipped=skipped)
    problems = tuple(_class_problems(cleaned) + _leakage(kept))
    if trainable:
        check_dataset(cleaned)
    report = ScanReport(cleaned, skipped, notes, problems, n_files=len(frame), n_cached=n_cached)
    if not log_results:
        return report
    log.info(report.summary())
    log.info(_counts_line(cleaned))
    if len(skipped):
        log.warn(f"{len(skipped)} files skipped, e.g. " +
                 "; ".join(f"{Path(r.path).name}: {r.reason}" for r in skipped.head(3).itertuples()))
    for problem in problems:
        log.warn(problem)
    return report


def check_folder(path: str | Path | pd.DataFrame, *, layout: str = "auto", label_pat: str | None = None,
                 valid_pct: float = DEFAULT_VALID_PCT, seed: int = DEFAULT_SEED, strict: bool = False,
                 trainable: bool = True, trusted_pattern: bool = True, table: TableFormat | None = None,
                 log_results: bool = True) -> ScanReport:
    """Find the dataset in ``path`` (a folder or a table) and scan it, as training would (``petclf check``).

    ``trainable=False`` accepts folders fit only for evaluation (a single class, say);
    ``trusted_pattern=False`` matches ``label_pat`` under a time limit (a pattern from a model file);
    ``log_results=False``: see ``scan_dataset``.

    Example: ``print(check_folder("pets/images").summary())``.
    """
    dataset = find_dataset(path, layout=layout, label_pat=label_pat, valid_pct=valid_pct, seed=seed,
                           trainable=trainable, trusted_pattern=trusted_pattern, table=table)
    return scan_dataset(dataset, strict=strict, trainable=trainable, log_results=log_results)
