"""``decisions.csv``: what the reviewer chose for each flagged image (keep, relabel, remove), one row per image.

Rows are keyed by the item number of audit.json; the path and labels are written for people (made
safe for spreadsheets) and checked against audit.json when read back, so a hand-edited row that
names another file is refused rather than trusted. A file saved by a spreadsheet (a byte order mark,
``Item`` for ``item``) reads the same; rows that give one item different decisions are all refused.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from petclf.core.atomic import atomic_path
from petclf.core.errors import DataError
from petclf.core.safe_text import csv_cell

__all__ = ["ACTIONS", "COLUMNS", "Decision", "read_decisions", "write_decisions"]

ACTIONS = ("keep", "relabel", "remove")
COLUMNS = ("item", "path", "given", "action", "label", "decided_at")


@dataclass(frozen=True)
class Decision:
    item: int  # index into audit.json's items
    action: str  # keep, relabel or remove
    label: str = ""  # the new class, for relabel
    decided_at: str = ""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_decisions(path: Path, decisions: dict[int, Decision], items: list[dict]) -> None:
    """Rewrite ``path`` whole (atomic rename): a crash leaves the previous version, never half a file."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for item in sorted(decisions):
        d = decisions[item]
        writer.writerow([item, csv_cell(items[item]["path"]), csv_cell(items[item]["given"]), d.action,
                         csv_cell(d.label), d.decided_at])
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")


def _header(names: list[str] | None) -> list[str]:
    """Column names as a spreadsheet may write them (``Item``, `` action ``) in the case petclf writes them."""
    return [(name or "").strip().lower() for name in names or []]


def read_decisions(path: Path, items: list[dict], classes: list[str]) -> tuple[dict[int, Decision], list[str]]:
    """The decisions in ``path`` (none when it does not exist) and the problems of rows that were left out.

    A spreadsheet's byte order mark and header case are read as petclf's own; several rows for one
    item are one decision when they agree, and all refused, with their line numbers, when they don't.
    """
    if not path.exists():
        return {}, []
    by_cell = {csv_cell(c): c for c in classes}
    decisions, problems = {}, []
    try:
        # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte order mark that would stick to "item".
        reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig")))
        reader.fieldnames = _header(reader.fieldnames)
        rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path} cannot be read ({err}): fix or delete it.") from None
    if rows and "item" not in reader.fieldnames:
        raise DataError(f"{path} has no item column (its header is {', '.join(reader.fieldnames)}): expected "
                        f"{', '.join(COLUMNS)} as `petclf review` writes them.")
    lines: dict[int, list[int]] = {}
    conflicted: set[int] = set()
    for n, row in enumerate(rows, start=2):
        try:
            item = int((row.get("item") or "").strip())
        except ValueError:
            problems.append(f"line {n}: item {row.get('item')!r} is not a number")
            continue
        if not 0 <= item < len(items):
            problems.append(f"line {n}: item {item} is not in audit.json ({len(items)} items)")
            continue
        if row.get("path") != csv_cell(items[item]["path"]):
            problems.append(f"line {n}: path {row.get('path')!r} is not item {item}'s file ({items[item]['path']!r})")
            continue
        action = (row.get("action") or "").strip().lower()
        if action not in ACTIONS:
            problems.append(f"line {n}: action {row.get('action')!r} is not one of {', '.join(ACTIONS)}")
            continue
        label = ""
        if action == "relabel":
            label = by_cell.get(row.get("label") or "")
            if label is None:
                problems.append(f"line {n}: {row.get('label')!r} is not a class of the audit "
                                f"({', '.join(classes[:10])})")
                continue
        lines.setdefault(item, []).append(n)
        if item in conflicted:
            continue
        earlier = decisions.get(item)
        if earlier is not None and (earlier.action, earlier.label) != (action, label):
            conflicted.add(item)  # which row is meant cannot be guessed: all of them are refused
            del decisions[item]
            continue
        decisions[item] = Decision(item, action, label, row.get("decided_at") or "")
    for item in sorted(conflicted):
        problems.append(f"lines {', '.join(map(str, lines[item]))}: item {item} ({items[item]['path']!r}) has "
                        "different decisions; keep one of these rows")
    return decisions, problems
