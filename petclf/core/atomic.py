"""Files written whole or not at all: new content goes to a temporary name beside the target and
is renamed over it only when complete, so a crash or a full disk never leaves half a file."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

from petclf.core.errors import DataError, PetclfError

__all__ = ["TEMP_GLOB", "atomic_path", "read_json", "write_json_atomic"]

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
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):  # gone after the rename, or never made
            tmp.unlink()


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
