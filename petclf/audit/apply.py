"""``petclf apply``: carry out the review's decisions on the data folder, with a journal that ``--undo`` replays backwards.

Relabel moves the file into the right class folder (classes and folders layouts), renames it
``<new label>_<same number>`` (pets layout; the next free number when that name is taken), or
changes the row of the table (csv layout, written whole as a new file; the old one is kept as a
backup the journal names). Remove moves the file into ``petclf-removed/<timestamp>/`` beside the
data, keeping its relative path (csv layout: the row is dropped, the file stays) — nothing is
deleted. The journal is written before each move and updated after it, so even a crash halfway
leaves a record that ``undo`` can restore from, and the next apply settles it from the files. Decisions
already applied are skipped; a file that changed since the audit (size, time and content hash recorded
in audit.json) is refused, and so is the removal of the last member of a copy group (unless
``whole_groups``). Paths are absolute and the data folder is checked to be the audited one, so apply
and undo do the same from any folder. ``undo`` leaves a file that changed after the apply where it is.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from petclf.audit.decisions import read_decisions
from petclf.audit.report import audited_root, read_audit
from petclf.audit.review import inside
from petclf.audit.table_edit import plan_table_rewrite, write_table
from petclf.core import log
from petclf.core.atomic import atomic_path, read_json, read_json_or, write_json_atomic
from petclf.core.errors import DataError, UsageError
from petclf.data.label_pattern import DEFAULT_LABEL_PAT
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
    undone: bool = False  # the result of an undo: ``applied`` lists what was put back

    def summary(self) -> str:
        verb = "would apply" if self.dry_run else "undid" if self.undone else "applied"
        return f"{verb} {len(self.applied)}, skipped {len(self.skipped)}, refused {len(self.refused)}"


def _changed(path: Path, item: dict, *, since: str = "the audit") -> str:
    """Why ``path`` is not the file ``item`` records (size, time, hash; '' when it is)."""
    st = path.stat()
    if st.st_size != item["size"]:
        return f"changed since {since} ({st.st_size} bytes, was {item['size']})"
    if st.st_mtime_ns != item["mtime_ns"] and file_digest(path) != item["digest"]:
        return f"changed since {since} (content differs)"
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


def _moved(entry: dict) -> bool:
    """Whether a journal entry's move happened: its file is at the destination and not at the source."""
    return Path(entry["dst"]).exists() and not Path(entry["src"]).exists()


def _recover(journal: Path, record: dict, *, write: bool) -> None:
    """Settle what a killed apply left ``planned`` in ``journal``: moves and table rewrites that happened
    become ``done``, the others ``not done`` (the journal is rewritten when ``write``)."""
    settled = []
    for entry in record.get("entries", []):
        if entry.get("state") == "planned":
            entry["state"] = "done" if _moved(entry) else "not done"
            settled.append(f"{entry['action']} {entry['src']}: {entry['state']}")
    table = record.get("table") or {}
    if table.get("state") == "planned":
        path = Path(table.get("path", ""))
        done = path.is_file() and file_digest(path) == table.get("new_digest")
        table["state"] = "done" if done else "not done"
        table.pop("text", None)
        settled.append(f"table {path}: {table['state']}")
    if settled and write:
        write_json_atomic(journal, record)
        log.warn(f"{journal.name} was left by an apply that stopped halfway; settled from the files: "
                 + "; ".join(settled))


def _done_items(directory: Path, *, write: bool = True) -> tuple[dict[int, str], dict[int, str]]:
    """Items applied by earlier journals that were not undone (item → journal name), and of those the removed."""
    done, removed = {}, {}
    for journal in sorted(directory.glob("apply-*.json")):
        record = read_json_or(journal, None)
        if record is None or record.get("undone"):
            continue
        _recover(journal, record, write=write)
        for entry in record.get("entries", []):
            if entry.get("state") == "done":
                done[int(entry["item"])] = journal.name
                if entry.get("action") == "remove":
                    removed[int(entry["item"])] = journal.name
        table = record.get("table") or {}
        if table.get("state") == "done":
            for item in table.get("items", []):
                done[int(item)] = journal.name
            for item in table.get("removed", []):
                removed[int(item)] = journal.name
    return done, removed


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        raise DataError(f"{dst} appeared while applying: nothing was overwritten; run apply again.")
    shutil.move(str(src), str(dst))


def _groups(items: list[dict]) -> dict[int, list[int]]:
    """Copy group → its members (item numbers), from audit.json's items."""
    groups: dict[int, list[int]] = {}
    for item in items:
        if int(item.get("group") or 0):
            groups.setdefault(int(item["group"]), []).append(int(item["item"]))
    return groups


def _keep_one_per_group(groups: dict, items: list[dict], decisions: dict,
                        removed_before: dict[int, str]) -> dict[int, str]:
    """Items whose removal would leave their copy group with no member: item → why it is kept.

    One member stays (the first in audit order of those this apply would remove), so the picture
    remains in the data; ``whole_groups`` in ``apply_decisions`` lets every member go.
    """
    kept = {}
    for group, members in sorted(groups.items()):
        now = [k for k in members if k in decisions and decisions[k].action == "remove" and k not in removed_before]
        if now and all(k in removed_before or k in now for k in members):
            names = ", ".join(items[k]["path"] for k in members)
            kept[now[0]] = (f"kept: every copy of group {group} ({names}) is marked remove, and removing this last "
                            "one would take the picture out of the data; to remove it too, apply with "
                            "--remove-whole-groups")
    return kept


@dataclass
class _Plan:
    """What an apply will do, decided before anything is touched: the moves, the table's new content, and the
    result a dry run reports."""

    result: ApplyResult
    directory: Path
    root: Path
    layout: str
    stamp: str
    moves: list[dict] = field(default_factory=list)  # journal entries, each 'planned'
    table: dict | None = None  # the table's rewrite (``plan_table_rewrite``), csv layout


def apply_decisions(decisions_csv: str | Path, *, dry_run: bool = False, whole_groups: bool = False) -> ApplyResult:
    """Carry out ``decisions_csv`` (written by ``petclf review``) on the audited data; returns what was done.

    The data folder is the audited one wherever apply runs (audit.json holds its absolute path and
    identity). One member of each copy group is kept when every member is marked remove, unless
    ``whole_groups``. The changes are planned first, then carried out; ``dry_run`` reports the same plan and
    touches nothing.

    Example: ``apply_decisions("audit/decisions.csv").journal`` → ``Path('audit/apply-20261202-121500.json')``.
    """
    plan = _plan(Path(decisions_csv), dry_run=dry_run, whole_groups=whole_groups)
    if not dry_run:
        _execute(plan)
    return plan.result


def _plan(decisions_csv: Path, *, dry_run: bool, whole_groups: bool) -> _Plan:
    """Every change the decisions ask for, checked against the files; refusals and skips go into the result.

    Earlier journals that a killed apply left half-done are settled from the files (written back unless
    ``dry_run``).
    """
    if not decisions_csv.is_file():
        raise UsageError(f"{decisions_csv} does not exist: review the audit first (`petclf review DIR`).")
    directory = decisions_csv.parent.resolve()
    record = read_audit(directory)
    items, settings = record["items"], record["settings"]
    root, layout, classes = audited_root(record, directory), settings["layout"], list(settings["classes"])
    decisions, problems = read_decisions(decisions_csv, items, classes)
    result = ApplyResult(None, refused=[f"{decisions_csv.name} {p}" for p in problems], dry_run=dry_run)
    done, removed_before = _done_items(directory, write=not dry_run)
    groups = _groups(items)
    kept = {} if whole_groups else _keep_one_per_group(groups, items, decisions, removed_before)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    plan = _Plan(result, directory, root, layout, stamp)
    label_pat = (settings.get("train_options") or {}).get("label_pat") or DEFAULT_LABEL_PAT
    moves, table_changes, taken, lines = plan.moves, {}, set(), {}
    for k, decision in sorted(decisions.items()):
        item = items[k]
        rel = item["path"]
        if decision.action == "keep":
            result.skipped.append(f"keep {rel}")
            continue
        if k in done:
            result.skipped.append(f"{decision.action} {rel}: already applied ({done[k]})")
            continue
        if k in kept:
            result.refused.append(f"remove {rel}: {kept[k]}")
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
            lines[k] = f"{decision.action} {rel}" + (f" → {decision.label}" if decision.label else "")
            continue
        if decision.action == "remove":
            dst = _free(root.parent / REMOVED / stamp / root.name / rel, taken)
        else:
            dst = _relabel_target(layout, root, rel, decision.label, label_pat, taken)
        taken.add(dst)
        st = src.stat()
        # The file as it is moved: undo will not move back a file that changed after the apply.
        moves.append({"item": k, "action": decision.action, "label": decision.label, "src": str(src), "dst": str(dst),
                      "size": st.st_size, "mtime_ns": st.st_mtime_ns, "digest": item["digest"], "state": "planned"})
        shown = os.path.relpath(dst, root) if decision.action == "relabel" else str(dst)
        result.applied.append(f"{decision.action} {rel} → {shown}")
    if table_changes:
        plan.table = plan_table_rewrite(settings, root, items, table_changes, stamp, result.refused)
        result.applied += [lines[k] for k in sorted(table_changes)]  # those left after the rows were matched
    removing = {m["item"] for m in moves if m["action"] == "remove"}
    removing |= {k for k, d in table_changes.items() if d.action == "remove"}
    for group, members in sorted(groups.items()) if whole_groups else ():  # otherwise one member was kept above
        if any(k in removing for k in members) and all(k in removing or k in removed_before for k in members):
            result.skipped.append(f"copy group {group}: every copy goes ({', '.join(items[k]['path'] for k in members)}),"
                                  " as --remove-whole-groups asked")
    return plan


def _execute(plan: _Plan) -> None:
    """Carry out ``plan``, each change recorded in a new journal before and after it is made."""
    if not (plan.moves or plan.table):
        return
    journal = plan.directory / f"apply-{plan.stamp}.json"
    entries: list[dict] = []
    state = {"version": JOURNAL_VERSION, "created": plan.stamp, "audit": str(plan.directory), "root": str(plan.root),
             "layout": plan.layout, "entries": entries, "table": None, "undone": False}
    plan.result.journal = journal
    for move in plan.moves:
        entries.append(move)
        write_json_atomic(journal, state)  # before the move: a crash leaves the plan on disk
        _move(Path(move["src"]), Path(move["dst"]))
        move["state"] = "done"
        write_json_atomic(journal, state)
    if plan.table:
        state["table"] = plan.table
        write_json_atomic(journal, state)
        write_table(state["table"])
        state["table"]["state"] = "done"
        del state["table"]["text"]  # the table itself holds it now
        write_json_atomic(journal, state)


def _prune_empty(folder: Path, stop: Path) -> None:
    """Remove empty folders from ``folder`` up to (not including) ``stop``: what apply made and undo emptied."""
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def undo(journal: str | Path) -> ApplyResult:
    """Put back what the apply of ``journal`` changed, last change first; the journal is marked undone.

    Example: ``undo("audit/apply-20261202-121500.json").summary()`` → ``'undid 12, skipped 0, refused 0'``.
    """
    journal = Path(journal)
    state = read_json(journal, unreadable=f"journal {journal} cannot be read ({{err}}).",
                      missing=UsageError(f"journal {journal} does not exist: pass the apply-….json file that apply "
                                         "printed."))
    if not isinstance(state, dict) or state.get("version") != JOURNAL_VERSION:
        raise DataError(f"{journal} is not a petclf apply journal.")
    result = ApplyResult(journal, undone=True)
    if state.get("undone"):
        result.skipped.append(f"{journal.name} was undone already")
        return result
    table = state.get("table")
    if table and table.get("state") in ("planned", "done"):
        path, backup = Path(table["path"]), Path(table["backup"])
        current = file_digest(path) if path.exists() else ""
        if not backup.exists() and table["state"] == "planned":
            table["state"] = "undone"  # stopped before the backup was made: the table was never written
        elif not backup.exists():
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
        if not (src.is_absolute() and dst.is_absolute()):
            # Journals of an older petclf may hold paths relative to the folder apply ran in.
            if not (dst.exists() or src.exists()):
                result.refused.append(f"{src}: the journal holds paths relative to the folder apply ran in; run "
                                      "undo from that folder")
                continue
        if dst.exists() and not src.exists():
            why = _changed(dst, entry, since="the apply") if "digest" in entry else ""
            if why:
                # Moving it back would carry the new content to the old place (or label) unannounced.
                result.refused.append(f"{dst}: {why}; left where it is: move it to {src} yourself if you mean to")
                continue
            _move(dst, src)
            quarantine = Path(state["root"]).parent / REMOVED
            if quarantine in dst.parents:  # folders apply made in the quarantine; never the data's own
                _prune_empty(dst.parent, quarantine)
            entry["state"] = "undone"
            result.applied.append(f"{entry['action']} {dst} → {src}")
        elif src.exists() and not dst.exists():
            entry["state"] = "undone"  # the crash came before the move, or the file was moved back by hand
            result.skipped.append(f"{entry['action']} {src}: in its place already")
        elif src.exists():
            result.refused.append(f"{src}: cannot put back {dst} there: a file of that name exists")
        else:
            result.refused.append(f"{src}: cannot put back: {dst} is gone")
    state["undone"] = not result.refused
    write_json_atomic(journal, state)
    return result
