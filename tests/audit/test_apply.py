"""apply and --undo in every layout: relabel and remove, journal, idempotence, exact undo, refusals."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import petclf
from petclf.audit.apply import apply_decisions, undo
from petclf.audit.decisions import Decision, write_decisions
from petclf.cli import main

from .conftest import make_pictures, make_table, tree


def _audit(tmp_path: Path, layout: str, model_dir: Path):
    data = tmp_path / "data"
    truth = make_table(data) if layout == "csv" else make_pictures(data, layout)
    source = data / "labels.csv" if layout == "csv" else data
    out = tmp_path / "audit"
    petclf.audit(source, model=model_dir, folds=3, out=out, precision="fp32")
    return data, truth, out, json.loads((out / "audit.json").read_text())


def _decide(out: Path, record: dict, choices: dict[int, Decision]) -> Path:
    write_decisions(out / "decisions.csv", choices, record["items"])
    return out / "decisions.csv"


def _flip_and_copy(record: dict) -> tuple[dict, dict]:
    items = record["items"]
    flip = next(i for i in items if i["issues"].startswith("label:") and i["suggested"] != i["given"])
    copy = next(i for i in items if "exact copy" in i["issues"] and i["item"] != flip["item"])
    return flip, copy


@pytest.mark.parametrize("layout", ["classes", "folders", "pets", "csv"])
def test_apply_twice_then_undo(tmp_path, model_dir, layout):
    data, truth, out, record = _audit(tmp_path, layout, model_dir)
    before = tree(data)
    flip, copy = _flip_and_copy(record)
    keep = next(i for i in record["items"] if i["item"] not in (flip["item"], copy["item"]))
    decisions = _decide(out, record, {
        flip["item"]: Decision(flip["item"], "relabel", flip["suggested"]),
        copy["item"]: Decision(copy["item"], "remove"),
        keep["item"]: Decision(keep["item"], "keep"),
    })
    dry = apply_decisions(decisions, dry_run=True)
    assert len(dry.applied) == 2 and dry.journal is None and tree(data) == before
    done = apply_decisions(decisions)
    assert len(done.applied) == 2 and not done.refused and done.journal.exists()
    relabelled = petclf.find_dataset(data / "labels.csv" if layout == "csv" else data)
    labels = {os.path.relpath(p, relabelled.root): label for p, label in zip(relabelled.frame.path, relabelled.frame.label)}
    if layout == "csv":
        assert labels[flip["path"]] == flip["suggested"] and copy["path"] not in labels
        assert (data / copy["path"]).exists()  # the row goes, the file stays
        assert list(data.glob("labels.petclf-backup-*.csv"))
    else:
        assert flip["path"] not in labels and flip["suggested"] in labels.values()
        moved = [p for p, label in labels.items() if Path(p).name.split("_")[-1] == Path(flip["path"]).name.split("_")[-1]
                 and label == flip["suggested"]]
        assert moved, labels
        removed = list((data.parent / "petclf-removed").rglob(Path(copy["path"]).name))
        assert len(removed) == 1 and not (data / copy["path"]).exists()
    again = apply_decisions(decisions)
    assert not again.applied and again.journal is None and sum("already applied" in s for s in again.skipped) == 2
    back = undo(done.journal)
    assert len(back.applied) == 2 - (layout == "csv") and not back.refused
    assert back.summary().startswith("undid ")  # not "applied"
    after = {k: v for k, v in tree(data).items() if ".petclf-backup-" not in k}
    assert after == before
    assert not [p for p in (data.parent / "petclf-removed").rglob("*") if p.is_file()]
    assert undo(done.journal).skipped  # undoing twice is harmless
    redo = apply_decisions(decisions)  # after an undo, the decisions apply again
    assert len(redo.applied) == 2


def test_pets_relabel_keeps_the_number_without_collisions(tmp_path, model_dir):
    data, truth, out, record = _audit(tmp_path, "pets", model_dir)
    flip = next(i for i in record["items"] if i["path"] in truth["flips"] and i["suggested"] != "red")
    number = flip["path"].rsplit("_", 1)[1]
    target = data / f"{flip['suggested']}_{number}"
    assert target.exists()  # the suggested class already has this number: the next free one is used
    done = apply_decisions(_decide(out, record, {flip["item"]: Decision(flip["item"], "relabel", flip["suggested"])}))
    assert target.exists() and not (data / flip["path"]).exists()
    new = [line.split(" → ")[1] for line in done.applied][0]
    assert new.startswith(flip["suggested"] + "_") and (data / new).exists()


def test_refusals(tmp_path, model_dir):
    data, truth, out, record = _audit(tmp_path, "classes", model_dir)
    items = record["items"]
    changed, outside, fine = items[0], items[1], items[2]
    (data / changed["path"]).write_bytes((data / changed["path"]).read_bytes() + b"\0")
    record["items"][outside["item"]]["path"] = "../../etc/passwd"
    (out / "audit.json").write_text(json.dumps(record))
    decisions = _decide(out, record, {k["item"]: Decision(k["item"], "remove") for k in (changed, outside, fine)})
    lines = decisions.read_text().splitlines()
    # A hand-edited row with a class the audit does not know, and one naming another file.
    lines.append(f"{fine['item']},{fine['path']},{fine['given']},relabel,no-such-class,")
    lines.append(f"{changed['item']},someone/else.jpg,red,remove,,")
    decisions.write_text("\n".join(lines) + "\n")
    result = apply_decisions(decisions)
    text = "\n".join(result.refused)
    assert "changed since the audit" in text and "outside the data folder" in text
    assert "no-such-class" in text and "someone/else.jpg" in text
    assert len(result.applied) == 1 and (data / changed["path"]).exists()


def test_command_line(tmp_path, model_dir, capsys):
    data, truth, out, record = _audit(tmp_path, "classes", model_dir)
    flip, copy = _flip_and_copy(record)
    decisions = _decide(out, record, {copy["item"]: Decision(copy["item"], "remove")})
    before = tree(data)
    assert main(["apply", str(decisions), "--dry-run"]) == 0 and tree(data) == before
    assert main(["apply", str(decisions)]) == 0
    journal = next(out.glob("apply-*.json"))
    assert "--undo" in capsys.readouterr().out
    assert main(["apply", "--undo", str(journal)]) == 0 and tree(data) == before
    assert main(["apply"]) == 2
