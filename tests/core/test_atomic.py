"""Whole-or-nothing files: flushed to the disk before the rename; JSON read with a default."""
from __future__ import annotations

import os

import pytest

from petclf.core import atomic
from petclf.core.atomic import atomic_path, read_json_or, write_json_atomic


def test_content_reaches_the_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")
                                                              if os.path.exists("/proc/self/fd") else fd))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", str(b))) or real_replace(a, b))
    target = tmp_path / "journal.json"
    write_json_atomic(target, {"state": "done"})
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["fsync", "replace"], events  # the file's data first, then its new name
    if os.name != "nt":
        assert kinds == ["fsync", "replace", "fsync"]  # and the folder, so that the rename survives a power cut
        if os.path.exists("/proc/self/fd"):
            assert events[2][1] == os.path.realpath(tmp_path)
    assert read_json_or(target, None) == {"state": "done"}


def test_a_folder_that_refuses_fsync_does_not_fail_the_write(tmp_path, monkeypatch):
    real_fsync = os.fsync
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > 1:  # the folder's
            raise OSError(22, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("done")
    assert (tmp_path / "a.txt").read_text() == "done"


def test_a_failed_block_leaves_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert target.read_text() == "old" and list(tmp_path.glob(atomic.TEMP_GLOB)) == []


@pytest.mark.parametrize("content", [None, "", "{not json", "[1, 2]", "[" * 100_000])
def test_read_json_or_gives_the_default_for_missing_damaged_or_other_json(tmp_path, content):
    path = tmp_path / "store.json"
    if content is not None:
        path.write_text(content)
    assert read_json_or(path, {"empty": True}) == {"empty": True}


def test_read_json_or_takes_another_expected_type(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    assert read_json_or(tmp_path / "list.json", [], expect=list) == [1, 2]
    assert read_json_or(tmp_path / "list.json", None) is None
