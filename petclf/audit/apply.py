"""``petclf apply``: carry out the review's decisions on the data folder, with a journal that ``--undo`` replays backwards.

Relabel moves the file into the right class folder (classes and folders layouts), renames it
``<new label>_<same number>`` (pets layout; the next free number when that name is taken), or
changes the row of the table (csv layout, written whole as a new file; the old one is kept as a
backup the journal names). Remove moves the file into ``petclf-removed/<timestamp>/`` beside the
data, keeping its relative path (csv layout: the row is dropped, the file stays) — nothing is
deleted. The journal is written before each move and updated after it, so even a crash halfway
leaves a record that ``undo`` can restore from. Decisions already applied are skipped; a file that
changed since the audit (size, time and content hash recorded in audit.json) is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from petclf.audit.decisions import read_decisions
from petclf.audit.report import read_audit
from petclf.audit.review import inside
from petclf.core.atomic import atomic_path, read_json, write_json_atomic
from petclf.core.errors import DataError, UsageError
from petclf.data.images import IMAGE_EXTENSIONS
from petclf.data.layouts import DEFAULT_LABEL_PAT
from petclf.data.scan import file_digest

__all__ = ["ApplyResult", "apply_decisions", "undo"]

JOURNAL_VERSION = 1
REMOVED = "petclf-removed"


@dataclass
class ApplyResult:
    """What ``apply_decisions`` did (or, with ``dry_run``, would do)."""

    journal: Path | None
    applied: list[str] = field(default_factory=list)  # one line per change: "relabel a/1.jpg → b/1.jpg"
    skipped: list[str] = field(default_factory=list)  # kept, or already applied
    refused: list[str] = field(default_factory=list)  # with the reason
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would apply" if self.dry_run else "applied"
        return f"{verb} {len(self.applied)}, skipped {len(self.skipped)}, refused {len(self.refused)}"


def _changed(path: Path, item: dict) -> str:
    """Why ``path`` is not the file the audit saw ('' when it is)."""
    st = path.stat()
    if st.st_size != item["size"]:
        return f"changed since the audit ({st.st_size} bytes, was {item['size']})"
    if st.st_mtime_ns != item["mtime_ns"] and file_digest(path) != item["digest"]:
        return "changed since the audit (content differs)"
    return ""


def _free(path: Path, taken: set[Path]) -> Path:
    """``path``, or ``stem_1.ext``, ``stem_2.ext``, … when it exists or is planned."""
    candidate, n = path, 0
    while candidate.exists() or candidate in taken:
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    return candidate


def _pets_target(src: Path, label: str, label_pat: str, taken: set[Path]) -> Path:
    """``<label>_<number>.<ext>`` keeping the file's number, or the label's next free number."""
    match = re.search(r"_(\d+)(\.[^.]+)$", src.name)
    number, ext = (int(match.group(1)), match.group(2)) if match else (1, src.suffix)
    target = src.with_name(f"{label}_{number}{ext}")
    if not (target.exists() or target in taken):
        return target
    pattern = re.compile(label_pat)
    used = [int(m.group(1)) for p in src.parent.iterdir() if (g := pattern.search(p.name)) and g.group(1) == label
            and (m := re.search(r"_(\d+)\.[^.]+$", p.name))]
    used += [int(m.group(1)) for p in taken if (m := re.search(r"_(\d+)\.[^.]+$", p.name))]
    number = max(used, default=0) + 1
    while (target := src.with_name(f"{label}_{number}{ext}")).exists() or target in taken:
        number += 1
    return target


def _relabel_target(layout: str, root: Path, rel: str, label: str, label_pat: str, taken: set[Path]) -> Path:
    parts = Path(rel).parts
    if layout == "classes":
        return _free(root / label / Path(*parts[1:]), taken)
    if layout == "folders":
        return _free(root / parts[0] / label / Path(*parts[2:]), taken)
    if layout == "pets":
        return _pets_target(root / rel, label, label_pat, taken)
    raise UsageError(f"cannot relabel files of layout {layout!r}.")


def _done_items(directory: Path) -> dict[int, str]:
    """Items applied by earlier journals that were not undone: item → journal name."""
    done = {}
    for journal in sorted(directory.glob("apply-*.json")):
        try:
            record = json.loads(journal.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if record.get("undone"):
            continue
        for entry in record.get("entries", []):
            if entry.get("state") == "done":
                done[int(entry["item"])] = journal.name
        for item in (record.get("table") or {}).get("items", []) if (record.get("table") or {}).get("state") == "done" else []:
            done[int(item)] = journal.name
    return done


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        raise DataError(f"{dst} appeared while applying: nothing was overwritten; run apply again.")
    shutil.move(str(src), str(dst))


def _table_rows(table: pd.DataFrame, fn_col: str, root: Path, paths: dict[int, Path]) -> dict[int, list[int]]:
    """Rows of the table that name each item's file (a name with or without its extension)."""
    wanted = {os.path.normpath(p): k for k, p in paths.items()}
    bare = {os.path.normpath(os.path.splitext(p)[0]): k for k, p in paths.items()}
    rows: dict[int, list[int]] = {}
    base = os.path.normpath(os.path.abspath(root))
    for i, name in enumerate(table[fn_col]):
        target = os.path.normpath(os.path.join(base, str(name)))
        k = wanted.get(target)
        if k is None and os.path.splitext(target)[1].lower() not in IMAGE_EXTENSIONS:
            k = bare.get(target)
        if k is not None:
            rows.setdefault(k, []).append(i)
    return rows


def apply_decisions(decisions_csv: str | Path, *, dry_run: bool = False) -> ApplyResult:
    """Carry out ``decisions_csv`` (written by ``petclf review``) on the audited data; returns what was done.

    Example: ``apply_decisions("audit/decisions.csv").journal`` → ``Path('audit/apply-20261202-121500.json')``.
    """
    decisions_csv = Path(decisions_csv)
    if not decisions_csv.is_file():
        raise UsageError(f"{decisions_csv} does not exist: review the audit first (`petclf review DIR`).")
    directory = decisions_csv.parent
    record = read_audit(directory)
    items, settings = record["items"], record["settings"]
    root, layout, classes = Path(settings["root"]), settings["layout"], list(settings["classes"])
    decisions, problems = read_decisions(decisions_csv, items, classes)
    result = ApplyResult(None, refused=[f"{decisions_csv.name} {p}" for p in problems], dry_run=dry_run)
    done = _done_items(directory)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    label_pat = (settings.get("train_options") or {}).get("label_pat") or DEFAULT_LABEL_PAT
    moves, table_changes, taken = [], {}, set()
    for k, decision in sorted(decisions.items()):
        item = items[k]
        rel = item["path"]
        if decision.action == "keep":
            result.skipped.append(f"keep {rel}")
            continue
        if k in done:
            result.skipped.append(f"{decision.action} {rel}: already applied ({done[k]})")
            continue
        src = inside(root, rel)
        if src is None:
            result.refused.append(f"{rel}: outside the data folder {root}")
            continue
        if not src.is_file():
            result.refused.append(f"{rel}: gone since the audit")
            continue
        why = _changed(src, item)
        if why:
            result.refused.append(f"{rel}: {why}; audit again to decide on the new file")
            continue
        if decision.action == "relabel" and decision.label not in classes:
            result.refused.append(f"{rel}: {decision.label!r} is not a class of the audit")
            continue
        if layout == "csv":
            table_changes[k] = decision
            result.applied.append(f"{decision.action} {rel}" + (f" → {decision.label}" if decision.label else ""))
            continue
        if decision.action == "remove":
            dst = _free(root.parent / REMOVED / stamp / root.name / rel, taken)
        else:
            dst = _relabel_target(layout, root, rel, decision.label, label_pat, taken)
        taken.add(dst)
        moves.append({"item": k, "action": decision.action, "label": decision.label, "src": str(src), "dst": str(dst),
                      "state": "planned"})
        shown = os.path.relpath(dst, root) if decision.action == "relabel" else str(dst)
        result.applied.append(f"{decision.action} {rel} → {shown}")
    if dry_run or not (moves or table_changes):
        return result
    journal = directory / f"apply-{stamp}.json"
    entries: list[dict] = []
    state = {"version": JOURNAL_VERSION, "created": stamp, "audit": str(directory), "root": str(root),
             "layout": layout, "entries": entries, "table": None, "undone": False}
    result.journal = journal
    for move in moves:
        entries.append(move)
        write_json_atomic(journal, state)  # before the move: a crash leaves the plan on disk
        _move(Path(move["src"]), Path(move["dst"]))
        move["state"] = "done"
        write_json_atomic(journal, state)
    if table_changes:
        state["table"] = _rewrite_table(settings, root, items, table_changes, stamp)
        write_json_atomic(journal, state)
        _write_table(state["table"])
        state["table"]["state"] = "done"
        del state["table"]["text"]  # the table itself holds it now
        write_json_atomic(journal, state)
    return result


def _rewrite_table(settings: dict, root: Path, items: list[dict], changes: dict, stamp: str) -> dict:
    """The plan for the table: the file, its backup, the new content (not written yet)."""
    path = Path(settings.get("table_file") or "")
    if not path.is_file():
        raise DataError(f"the audited table {path} is gone: nothing was changed.")
    spec = settings.get("table") or {}
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    fn_col, label_col = spec.get("fn_col"), spec.get("label_col")
    if fn_col not in table.columns or label_col not in table.columns:
        raise DataError(f"{path} no longer has the columns {fn_col!r} and {label_col!r}: audit it again.")
    rows = _table_rows(table, fn_col, root, {k: root / items[k]["path"] for k in changes})
    drop = []
    for k, decision in changes.items():
        for i in rows.get(k, []):
            if decision.action == "relabel":
                table.at[i, label_col] = decision.label
            else:
                drop.append(i)
    table = table.drop(index=drop)
    backup = path.with_name(f"{path.stem}.petclf-backup-{stamp}{path.suffix}")
    text = table.to_csv(sep=sep, index=False)
    return {"path": str(path), "backup": str(backup), "new_digest": hashlib.blake2b(text.encode(), digest_size=16).hexdigest(),
            "items": sorted(changes), "text": text, "state": "planned"}


def _write_table(plan: dict) -> None:
    path, backup = Path(plan["path"]), Path(plan["backup"])
    if not backup.exists():
        shutil.copy2(path, backup)
    with atomic_path(path) as tmp:
        tmp.write_text(plan["text"], encoding="utf-8")


def _prune_empty(folder: Path, stop: Path) -> None:
    """Remove empty folders from ``folder`` up to (not including) ``stop``: what apply made and undo emptied."""
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def undo(journal: str | Path) -> ApplyResult:
    """Put back what the apply of ``journal`` changed, last change first; the journal is marked undone.

    Example: ``undo("audit/apply-20261202-121500.json").summary()`` → ``'applied 12, skipped 0, refused 0'``.
    """
    journal = Path(journal)
    state = read_json(journal, unreadable=f"journal {journal} cannot be read ({{err}}).",
                      missing=UsageError(f"journal {journal} does not exist: pass the apply-….json file that apply "
                                         "printed."))
    if not isinstance(state, dict) or state.get("version") != JOURNAL_VERSION:
        raise DataError(f"{journal} is not a petclf apply journal.")
    result = ApplyResult(journal)
    if state.get("undone"):
        result.skipped.append(f"{journal.name} was undone already")
        return result
    table = state.get("table")
    if table and table.get("state") in ("planned", "done"):
        path, backup = Path(table["path"]), Path(table["backup"])
        current = file_digest(path) if path.exists() else ""
        if not backup.exists():
            result.refused.append(f"{path}: its backup {backup} is gone")
        elif table["state"] == "done" and current != table["new_digest"]:
            result.refused.append(f"{path} changed after apply: restore it from {backup} yourself")
        else:
            with atomic_path(path) as tmp:
                shutil.copy2(backup, tmp)
            table["state"] = "undone"
            result.applied.append(f"restored {path} from {backup.name}")
    for entry in reversed(state.get("entries", [])):
        src, dst = Path(entry["src"]), Path(entry["dst"])
        if entry["state"] not in ("planned", "done"):
            continue
        if dst.exists() and not src.exists():
            _move(dst, src)
            quarantine = Path(state["root"]).parent / REMOVED
            if quarantine in dst.parents:  # folders apply made in the quarantine; never the data's own
                _prune_empty(dst.parent, quarantine)
            entry["state"] = "undone"
            result.applied.append(f"{entry['action']} {dst} → {src}")
        elif src.exists() and entry["state"] == "planned":
            entry["state"] = "undone"  # the crash came before the move
        else:
            result.refused.append(f"{src}: cannot put back ({dst} is gone or {src} exists)")
    state["undone"] = not result.refused
    write_json_atomic(journal, state)
    return result
