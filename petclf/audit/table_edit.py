"""Apply's edits of a csv-layout table: the rows of relabelled and removed images changed in the table's own bytes
(delimiter, line endings, byte order mark kept), planned as new content, then written beside a backup."""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from petclf.core.atomic import atomic_path
from petclf.core.errors import DataError
from petclf.data.images import IMAGE_EXTENSIONS
from petclf.data.table import table_delimiter

__all__ = ["plan_table_rewrite", "write_table"]


def _item_keys(root: Path, paths: dict[int, str]) -> tuple[dict[str, int], dict[str, int]]:
    """Each item's absolute, normalised path (and the same without its extension) → item."""
    base = os.path.normpath(os.path.abspath(root))
    full = {os.path.normpath(os.path.join(base, p)): k for k, p in paths.items()}
    return full, {os.path.splitext(p)[0]: k for p, k in full.items()}


def _row_item(name: str, base: str, full: dict[str, int], bare: dict[str, int]) -> int | None:
    """The item a table row names (a name with or without its extension, as the audit read it), or None."""
    # Both sides absolute: a relative key never equals an absolute target (the cause of applies that changed nothing).
    target = os.path.normpath(os.path.join(base, name.strip()))
    k = full.get(target)
    if k is None and os.path.splitext(target)[1].lower() not in IMAGE_EXTENSIONS:
        k = bare.get(target)
    return k


@dataclass
class _TableText:
    """A table as its bytes hold it: records (each with its own line ending), delimiter, byte order mark."""

    records: list[str]  # the raw text of each record, header first, line ending included
    rows: list[list[str]]  # the same records parsed
    sep: str
    bom: bool


def _read_table_text(path: Path) -> _TableText:
    """``path`` read as the audit read it, keeping each record's text so unchanged rows are written back as they
    were."""
    raw = path.read_bytes()
    bom = raw.startswith(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} is no longer UTF-8 text: nothing was changed; save it as UTF-8, or audit it "
                        "again.") from None
    lines = re.findall(r"[^\r\n]*(?:\r\n|\n|\r)|[^\r\n]+$", text)
    sep = table_delimiter(path, next(csv.reader(lines[:1]), []))  # as the audit read it
    records, rows, consumed = [], [], 0
    reader = csv.reader(iter(lines), delimiter=sep)
    for row in reader:
        records.append("".join(lines[consumed:reader.line_num]))  # a quoted cell may span lines
        rows.append(row)
        consumed = reader.line_num
    return _TableText(records, rows, sep, bom)


def _record(cells: list[str], sep: str, like: str) -> str:
    """One record in the table's delimiter, ending as the record it replaces ends."""
    buf = io.StringIO()
    ending = like[len(like.rstrip("\r\n")):]
    csv.writer(buf, delimiter=sep, lineterminator=ending).writerow(cells)
    return buf.getvalue()


def plan_table_rewrite(settings: dict, root: Path, items: list[dict], changes: dict, stamp: str,
                   refused: list[str]) -> dict | None:
    """The plan for the table: the file, its backup, the new content (not written yet); None when no change is left.

    A decision whose file no row names any more is refused (into ``refused``) and left out of the plan.
    """
    path = Path(settings.get("table_file") or "")
    if not path.is_file():
        raise DataError(f"the audited table {path} is gone: nothing was changed.")
    spec = settings.get("table") or {}
    table = _read_table_text(path)
    header = [c.strip() for c in (table.rows[0] if table.rows else [])]
    fn_col, label_col = spec.get("fn_col"), spec.get("label_col")
    if fn_col not in header or label_col not in header:
        raise DataError(f"{path} no longer has the columns {fn_col!r} and {label_col!r}: audit it again.")
    fn_at, label_at = header.index(fn_col), header.index(label_col)
    full, bare = _item_keys(root, {k: items[k]["path"] for k in changes})
    base = os.path.normpath(os.path.abspath(root))
    records, found = [table.records[0]], set()
    for record, row in zip(table.records[1:], table.rows[1:]):
        k = _row_item(row[fn_at], base, full, bare) if len(row) > fn_at else None
        if k is None:
            records.append(record)
            continue
        found.add(k)
        if changes[k].action == "relabel":
            cells = list(row) + [""] * (label_at + 1 - len(row))
            cells[label_at] = changes[k].label
            records.append(_record(cells, table.sep, record))
        # remove: the record is left out
    for k in sorted(set(changes) - found):
        refused.append(f"{items[k]['path']}: no row of {path.name} names it any more; audit it again")
        del changes[k]
    if not changes:
        return None
    data = (codecs.BOM_UTF8 if table.bom else b"") + "".join(records).encode("utf-8")
    backup = path.with_name(f"{path.stem}.petclf-backup-{stamp}{path.suffix}")
    return {"path": str(path), "backup": str(backup), "new_digest": hashlib.blake2b(data, digest_size=16).hexdigest(),
            "items": sorted(changes), "removed": sorted(k for k, d in changes.items() if d.action == "remove"),
            "text": data.decode("utf-8"), "state": "planned"}


def write_table(plan: dict) -> None:
    """Write the table as ``plan`` says, after copying the old one to the backup it names (once)."""
    path, backup = Path(plan["path"]), Path(plan["backup"])
    if not backup.exists():
        shutil.copy2(path, backup)
    with atomic_path(path) as tmp:
        # Bytes as planned: the byte order mark and the line endings stay (text mode would translate them).
        tmp.write_bytes(plan["text"].encode("utf-8"))
