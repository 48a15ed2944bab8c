"""Files written whole or not at all: new content goes to a temporary name beside the target and
is renamed over it only when complete, so a crash or a full disk never leaves half a file.

The content is flushed to the disk (fsync) before the rename, and the rename itself after it
where the platform allows: otherwise a power cut can leave the new name pointing at an empty file
(the rename reached the disk, the data not yet), and apply's journal would lie about the folder.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator, TypeVar

from petclf.core.errors import DataError, PetclfError

__all__ = ["TEMP_GLOB", "atomic_path", "read_json", "read_json_or", "write_json_atomic"]

#: The names of unfinished files (``.NAME.PID.tmp``), for cleaning up after killed runs.
TEMP_GLOB = ".*.tmp"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to: renamed onto ``path`` when the block
    succeeds, removed when it fails.

    Example: ``with atomic_path(Path("a.txt")) as tmp: tmp.write_text("done")``
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        with contextlib.suppress(OSError):  # gone after the rename, or never made
            tmp.unlink()


def _fsync_file(path: Path) -> None:
    # Windows flushes only through a handle open for writing; POSIX through any.
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; skipped where folders cannot be opened (Windows) or synced."""
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (network mounts) refuse a folder's fsync: the rename is as safe as before
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON to ``path`` (its folder is created), whole or not at all.

    Example: ``write_json_atomic(out / "summary.json", {"error_rate": 0.01})``
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, default=str)


def read_json(path: Path, *, missing: PetclfError, unreadable: str) -> object:
    """The parsed JSON of ``path``; raises ``missing`` when there is no such file, and a ``DataError`` with
    ``unreadable`` (its ``{err}`` replaced by the reason) when it cannot be read or parsed.

    Example: ``read_json(out / "audit.json", missing=DataError("run the audit first"), unreadable="bad: {err}")``
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise missing from None
    except (OSError, ValueError) as err:
        raise DataError(unreadable.replace("{err}", str(err))) from None


T = TypeVar("T")


def read_json_or(path: str | Path, default: T, *, expect: type = dict) -> object | T:
    """The parsed JSON of ``path`` when it is an ``expect`` (a dict unless told); ``default`` when the file is
    missing, cannot be read, is not JSON or holds something else.

    For files petclf can do without (caches, stores, plans it can make again): no error to handle.

    Example: ``plan = read_json_or(out / "budget.json", None)`` → the stored dict, or ``None``.
    """
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        return default
    return found if isinstance(found, expect) else default
