"""The audit's files: ``audit.csv`` (one row per issue), ``audit.json`` (counts, timings, settings, flagged
files with their size, time and hash) and ``audit.html`` (one self-contained page, thumbnails embedded)."""
from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pandas as pd
from PIL import Image

from petclf.core.atomic import atomic_path, read_json, write_json_atomic
from petclf.core.errors import DataError
from petclf.core.safe_text import csv_safe
from petclf.data.images import read_rgb

__all__ = ["AUDIT_VERSION", "audited_root", "folder_identity", "issue_rows", "read_audit", "thumbnail_uri", "write_audit"]

AUDIT_VERSION = 1
#: Thumbnails per section of the page; the CSV and the review page list every flagged image.
PAGE_LIMIT = 200


def issue_rows(found) -> pd.DataFrame:
    """One row per (image, issue): path (relative to the data root), issue, given, suggested, score, group, …"""
    items = found.items.set_index("row")
    rows = []
    for r in found.label_issues.itertuples():
        rows.append((r.row, "label", r.given, r.suggested, r.score, 0, f"p(given) {r.p_given:.3f}, "
                     f"p(suggested) {r.p_suggested:.3f}"))
    for r in found.duplicates.itertuples():
        flags = [f for f, on in (("leakage", r.leakage), ("conflicting", r.conflicting)) if on]
        rows.append((r.row, "duplicate", r.label, items.suggested[r.row], r.score, r.group,
                     ", ".join([r.kind, *flags])))
    for r in found.outliers.itertuples():
        rows.append((r.row, "outlier", r.label, items.suggested[r.row], r.score, 0, f"{r.reason}: {r.detail}"))
    out = pd.DataFrame(rows, columns=["row", "issue", "given", "suggested", "score", "group", "detail"])
    for column in ("item", "path", "split", "size", "mtime_ns", "digest"):
        out[column] = items[column].reindex(out.row).to_numpy() if len(out) else []
    return out[["path", "issue", "given", "suggested", "score", "group", "detail", "split", "item", "size",
                "mtime_ns", "digest"]]


def thumbnail_uri(path: str | Path, side: int = 112) -> str:
    """A small JPEG of ``path`` as a data: URI (a grey square when the file cannot be read)."""
    try:
        img = read_rgb(path, min_side=side)
        img.thumbnail((side, side))
    except (OSError, ValueError, Image.DecompressionBombError):
        img = Image.new("RGB", (side, side), (200, 200, 200))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _section(frame: pd.DataFrame, root: Path, caption) -> list[dict]:
    cards = []
    for r in frame.head(PAGE_LIMIT).itertuples():
        cards.append({"src": thumbnail_uri(r.path), "name": os.path.relpath(r.path, root), "caption": caption(r)})
    return cards


def write_audit(found, out: Path) -> dict[str, Path]:
    """Write audit.csv, audit.json and audit.html into ``out``; returns their paths."""
    from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    rows = issue_rows(found)
    csv_path, json_path, html_path = out / "audit.csv", out / "audit.json", out / "audit.html"
    with atomic_path(csv_path) as tmp:
        csv_safe(rows).to_csv(tmp, index=False)
    items = found.items.drop(columns="row").to_dict("records")
    write_json_atomic(json_path, {
        "version": AUDIT_VERSION, "counts": found.counts, "seconds": found.seconds, "settings": found.settings,
        "overlapping_classes": found.overlapping.to_dict("records"),
        "class_summary": found.class_summary.to_dict("records"), "items": items,
    })
    root = found.dataset.root
    dup = found.duplicates.sort_values(["group", "row"])
    sections = [
        ("Label issues", "most likely wrong first", _section(found.label_issues, root, lambda r: [
            f"given: {r.given}", f"suggested: {r.suggested} ({r.p_suggested:.0%})", f"score {r.score:.3f}"])),
        ("Copies", "groups of exact and near copies; leakage and conflicting labels first", _section(dup, root, lambda r: [
            f"group {r.group} ({r.kind})", f"{r.label}, {r.split}",
            " ".join(f for f, on in (("leakage", r.leakage), ("conflicting", r.conflicting)) if on)])),
        ("Outliers", "far from every class, blank or tiny", _section(found.outliers, root, lambda r: [
            f"{r.reason}: {r.label}", r.detail])),
    ]
    env = Environment(loader=PackageLoader("petclf.audit", "templates"), autoescape=select_autoescape(["html"]))
    page = env.get_template("audit.html").render(
        counts=found.counts, seconds=found.seconds, settings=found.settings, sections=sections, limit=PAGE_LIMIT,
        overlapping=found.overlapping.to_dict("records"), summary=found.class_summary.to_dict("records"))
    with atomic_path(html_path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return {"csv": csv_path, "json": json_path, "html": html_path}


def read_audit(directory: str | Path) -> dict:
    """The audit.json of an audit folder, checked enough for review and apply to rely on."""
    path = Path(directory) / "audit.json"
    record = read_json(path, unreadable=f"{path} cannot be read ({{err}}): run the audit again.",
                       missing=DataError(f"{path} does not exist: run `petclf audit DATA --out {directory}` first."))
    if not isinstance(record, dict) or record.get("version") != AUDIT_VERSION or not isinstance(record.get("items"), list):
        raise DataError(f"{path} is not an audit file of this petclf version: run the audit again.")
    return record


def folder_identity(folder: str | Path) -> dict:
    """What tells the audited folder from another at the same path later: its device and inode numbers.

    A folder deleted and made again, or another one put in its place, gets other numbers; the files
    in it (which apply moves) do not change them.
    """
    st = os.stat(folder)
    return {"device": st.st_dev, "inode": st.st_ino}


def audited_root(record: dict, directory: str | Path) -> Path:
    """The data folder of the audit in ``directory``: absolute, and the very folder that was audited.

    Raises ``DataError`` (one line) for an audit that stored a relative path (an older petclf
    resolved it against the current folder, which made apply and review act on whatever folder
    of that name the shell was in), for a folder that is gone, and for another folder in its place.
    """
    settings = record.get("settings") or {}
    root = Path(str(settings.get("root") or ""))
    if not root.is_absolute():
        raise DataError(f"{Path(directory) / 'audit.json'} names the data folder {str(root)!r} relative to wherever "
                        "the audit ran, so it cannot be told from another folder of that name: run the audit again "
                        "(it now stores the absolute path).")
    if not root.is_dir():
        raise DataError(f"the audited folder {root} is gone (moved, renamed or deleted): put it back there, or "
                        "run the audit again on its new place.")
    expected = settings.get("root_identity")
    if expected and folder_identity(root) != expected:
        raise DataError(f"{root} is not the folder that was audited (it was deleted and made again, or replaced): "
                        "run the audit again on it.")
    return root
