"""Where results go, checked before the work that produces them: a wrong --out costs a second, not a run."""
from __future__ import annotations

import os
from pathlib import Path

from petclf.core.errors import UsageError

__all__ = ["output_dir", "output_file"]


def output_dir(path: str | Path, *, flag: str = "--out", what: str = "the results") -> Path:
    """``path`` as a folder that exists and can be written to, or a ``UsageError`` that says why not.

    Example: ``output_dir("runs/pets")`` → ``Path('runs/pets')``, created if need be.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file: expected a folder for {what} (it will be created).")
    try:
        path.mkdir(parents=True, exist_ok=True)
        # A test write: permissions, a read-only disk or a full one show now, not after the last epoch.
        probe = path / f".petclf-write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"{flag} {path} cannot be written ({err.strerror or err}): choose a folder you can "
                         "write to.") from None
    return path


def output_file(path: str | Path, *, flag: str = "--csv") -> Path:
    """``path`` as a file that can be written: its folder is created, a folder in its place is refused.

    Example: ``output_file("out/preds.csv")`` → ``Path('out/preds.csv')``.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder: give a file name, e.g. {path / 'preds.csv'}.")
    output_dir(path.parent, flag=flag, what=path.name)
    return path
