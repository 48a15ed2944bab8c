"""Files written whole or not at all: new content goes to a temporary name beside the target and
is renamed over it only when complete, so a crash or a full disk never leaves half a file."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

__all__ = ["TEMP_GLOB", "atomic_path", "write_json_atomic"]

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
