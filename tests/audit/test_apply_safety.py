"""apply, undo and review on the audited folder only, wherever they run (issue #21 items 1, 2, 4, 5, 6): tables
audited by a relative path or saved as TSV, BOM and CRLF kept, decisions saved by a spreadsheet, copy groups,
files changed after the apply, an apply killed halfway."""
from __future__ import annotations

import codecs
import json
import shutil
from pathlib import Path

import pytest
from starlette.testclient import TestClient

import petclf
import petclf.audit.apply as apply_module
from petclf.audit.apply import apply_decisions, undo
from petclf.audit.decisions import Decision, read_decisions, write_decisions
from petclf.audit.review import review_app
from petclf.cli import main
from petclf.core.errors import DataError

from .conftest import make_pictures, make_table, tree


def _record(out: Path) -> dict:
    return json.loads((out / "audit.json").read_text())


def _audit(source, out, model_dir) -> dict:
    petclf.audit(source, model=model_dir, folds=3, out=out, precision="fp32")
    return _record(Path(out))


def _relabels(record: dict, n: int) -> dict[int, Decision]:
    chosen = [i for i in record["items"] if i["suggested"] != i["given"]][:n]
    assert chosen
    return {i["item"]: Decision(i["item"], "relabel", i["suggested"]) for i in chosen}


def _copies(record: dict) -> list[dict]:
    return [i for i in record["items"] if "exact copy" in i["issues"]]


def test_table_audited_by_a_relative_path_changes_and_keeps_bom_and_crlf(tmp_path, model_dir, monkeypatch):
    """Item 1: `cd D; audit t.csv; apply aud/decisions.csv` changed nothing yet said 'applied'; BOM and CRLF were lost."""
    data = tmp_path / "D"
    make_table(data)
    table = data / "labels.csv"
    original = codecs.BOM_UTF8 + table.read_text().replace("\n", "\r\n").encode()
    table.write_bytes(original)
    monkeypatch.chdir(data)
    record = _audit("labels.csv", "aud", model_dir)
    decisions = _relabels(record, 3)
    write_decisions(Path("aud/decisions.csv"), decisions, record["items"])
    done = apply_decisions("aud/decisions.csv")
    assert len(done.applied) == len(decisions) and not done.refused
    after = table.read_bytes()
    labels = dict(line.split(",") for line in after.decode("utf-8-sig").splitlines()[1:] if line)
    assert {k: labels[record["items"][k]["path"]] for k in decisions} == {k: d.label for k, d in decisions.items()}
    assert after.startswith(codecs.BOM_UTF8) and b"\n" not in after.replace(b"\r\n", b"")
    old_lines, new_lines = original[3:].split(b"\r\n"), after[3:].split(b"\r\n")
    assert sum(a != b for a, b in zip(old_lines, new_lines)) == len(decisions) and len(old_lines) == len(new_lines)
    assert "already applied" in apply_decisions("aud/decisions.csv").skipped[0]
    undo(done.journal)
    assert table.read_bytes() == original


def test_a_tsv_named_csv_applies(tmp_path, model_dir):
    """Item 5: apply read a .csv with tabs as one column and said it 'no longer has the columns' (false)."""
    data = tmp_path / "data"
    make_table(data)
    table = data / "labels.csv"
    table.write_text(table.read_text().replace(",", "\t"))
    record = _audit(table, tmp_path / "audit", model_dir)
    decisions = _relabels(record, 1)
    write_decisions(tmp_path / "audit" / "decisions.csv", decisions, record["items"])
    done = apply_decisions(tmp_path / "audit" / "decisions.csv")
    assert len(done.applied) == 1 and not done.refused
    (k, decision), = decisions.items()
    assert f"{record['items'][k]['path']}\t{decision.label}\n" in table.read_text()


def test_apply_undo_and_review_act_on_the_audited_folder_from_anywhere(tmp_path, model_dir, monkeypatch):
    """Item 2: from another folder holding a `data` of its own, apply moved that folder's files and review served them."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    truth = make_pictures(here / "data", "classes")
    shutil.copytree(here / "data", elsewhere / "data")
    monkeypatch.chdir(here)
    record = _audit("data", "aud", model_dir)  # as typed: relative
    assert Path(record["settings"]["root"]) == (here / "data").resolve()
    first = record["items"][0]
    (elsewhere / "data" / first["path"]).write_bytes(b"not the audited file")
    copy = _copies(record)[0]
    decisions = {**_relabels(record, 1), copy["item"]: Decision(copy["item"], "remove")}
    write_decisions(here / "aud" / "decisions.csv", decisions, record["items"])
    other, audited = tree(elsewhere), tree(here / "data")
    monkeypatch.chdir(elsewhere)
    with TestClient(review_app(here / "aud"), base_url="http://127.0.0.1") as client:
        assert client.get(f"/image/{first['item']}").content == (here / "data" / first["path"]).read_bytes()
    done = apply_decisions(here / "aud" / "decisions.csv")
    assert len(done.applied) == 2 and not done.refused
    assert tree(elsewhere) == other and tree(here / "data") != audited
    journal = json.loads(done.journal.read_text())
    assert all(Path(e[k]).is_absolute() for e in journal["entries"] for k in ("src", "dst"))
    monkeypatch.chdir(tmp_path)
    back = undo(done.journal)
    assert len(back.applied) == 2 and not back.refused and tree(here / "data") == audited


def test_a_relative_or_replaced_data_folder_is_refused_in_one_line(tmp_path, model_dir, capsys):
    """Item 2: an audit.json naming its folder relatively, or another folder put in its place, is refused clearly."""
    data, out = tmp_path / "data", tmp_path / "audit"
    make_pictures(data, "classes")
    record = _audit(data, out, model_dir)
    write_decisions(out / "decisions.csv", _relabels(record, 1), record["items"])
    (data.parent / "data-old").mkdir()
    data.rename(data.parent / "data-old" / "data")
    shutil.copytree(data.parent / "data-old" / "data", data)  # the same files, another folder
    before = tree(data)
    capsys.readouterr()
    assert main(["apply", str(out / "decisions.csv")]) == 2
    err = capsys.readouterr().err
    assert "is not the folder that was audited" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(DataError, match="not the folder that was audited"):
        review_app(out)
    record["settings"]["root"], record["settings"]["root_identity"] = "data", None  # as older versions wrote it
    (out / "audit.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match="relative to wherever the audit ran"):
        apply_decisions(out / "decisions.csv")
    assert tree(data) == before


def test_decisions_saved_by_a_spreadsheet(tmp_path):
    """Item 4: a BOM or a header `Item` had every row refused; conflicting rows for one item were resolved silently."""
    items = [{"item": k, "path": f"red/{k}.jpg", "given": "red"} for k in range(4)]
    path = tmp_path / "decisions.csv"
    path.write_bytes(codecs.BOM_UTF8 + (
        "Item,Path,Given,Action,Label,Decided_At\r\n"
        "0,red/0.jpg,red,relabel,blue,\r\n"
        "1,red/1.jpg,red,Remove,,\r\n"
        "2,red/2.jpg,red,remove,,\r\n"
        "2,red/2.jpg,red,keep,,\r\n"
        "0,red/0.jpg,red,relabel,blue,\r\n"
        "3,red/3.jpg,red,keep,,\r\n"
        "2,red/2.jpg,red,remove,,\r\n").encode())
    decisions, problems = read_decisions(path, items, ["blue", "red"])
    assert {k: (d.action, d.label) for k, d in decisions.items()} == {0: ("relabel", "blue"), 1: ("remove", ""),
                                                                      3: ("keep", "")}
    assert problems == ["lines 4, 5, 8: item 2 ('red/2.jpg') has different decisions; keep one of these rows"]


def test_one_copy_of_a_group_stays_unless_asked(tmp_path, model_dir, capsys):
    """Item 6: marking every copy of a group removed them all without a word; now one stays, and the flag says it."""
    data, out = tmp_path / "data", tmp_path / "audit"
    make_pictures(data, "classes")
    record = _audit(data, out, model_dir)
    copies = _copies(record)
    assert len(copies) == 2 and copies[0]["group"] == copies[1]["group"]
    write_decisions(out / "decisions.csv", {c["item"]: Decision(c["item"], "remove") for c in copies},
                    record["items"])
    done = apply_decisions(out / "decisions.csv")
    assert len(done.applied) == 1 and len(done.refused) == 1 and "--remove-whole-groups" in done.refused[0]
    assert sum((data / c["path"]).exists() for c in copies) == 1
    again = apply_decisions(out / "decisions.csv")  # the earlier apply's removal counts: still one stays
    assert not again.applied and "kept" in again.refused[0]
    assert main(["apply", str(out / "decisions.csv"), "--remove-whole-groups"]) == 0
    assert "every copy goes" in capsys.readouterr().out
    assert not any((data / c["path"]).exists() for c in copies)


def test_undo_leaves_a_file_changed_after_the_apply_and_says_so(tmp_path, model_dir):
    """Item 6: undo moved back a file edited after the apply without a word."""
    data, out = tmp_path / "data", tmp_path / "audit"
    make_pictures(data, "classes")
    record = _audit(data, out, model_dir)
    copy = _copies(record)[0]
    decisions = {**_relabels(record, 1), copy["item"]: Decision(copy["item"], "remove")}
    write_decisions(out / "decisions.csv", decisions, record["items"])
    done = apply_decisions(out / "decisions.csv")
    entries = json.loads(done.journal.read_text())["entries"]
    edited = Path(entries[0]["dst"])
    edited.write_bytes(edited.read_bytes() + b"edited after the apply")
    back = undo(done.journal)
    assert len(back.applied) == 1 and len(back.refused) == 1
    assert "changed since the apply" in back.refused[0] and entries[0]["src"] in back.refused[0]
    assert edited.exists() and not Path(entries[0]["src"]).exists()


def test_apply_again_after_a_kill_midway(tmp_path, model_dir, monkeypatch):
    """Item 6: after kill -9 between a move and its journal entry, apply again called the moved file 'gone'."""
    data, out = tmp_path / "data", tmp_path / "audit"
    make_pictures(data, "classes")
    record = _audit(data, out, model_dir)
    copy = _copies(record)[0]
    decisions = {**_relabels(record, 1), copy["item"]: Decision(copy["item"], "remove")}
    write_decisions(out / "decisions.csv", decisions, record["items"])
    before = tree(data)
    writes = []
    real_write = apply_module.write_json_atomic

    def killed_after_the_first_move(path, state):
        writes.append(path)
        if len(writes) == 2:  # the first move is made; its "done" never reaches the journal
            raise KeyboardInterrupt
        real_write(path, state)

    monkeypatch.setattr(apply_module, "write_json_atomic", killed_after_the_first_move)
    with pytest.raises(KeyboardInterrupt):
        apply_decisions(out / "decisions.csv")
    monkeypatch.setattr(apply_module, "write_json_atomic", real_write)
    first = json.loads(writes[0].read_text())
    assert [e["state"] for e in first["entries"]] == ["planned"]
    again = apply_decisions(out / "decisions.csv")
    assert not again.refused, again.refused
    assert len(again.applied) == 1 and any("already applied" in s for s in again.skipped)
    assert json.loads(writes[0].read_text())["entries"][0]["state"] == "done"
    for journal in sorted(out.glob("apply-*.json"), reverse=True):
        assert not undo(journal).refused
    assert tree(data) == before
