"""Where petclf keeps what it can compute again (scan verdicts, presized images), and how much.

The folder is kept under a size budget: when new presized images are written, the least
recently used cache files go first. Everything in it can be deleted at any time; it is rebuilt
on the next run.
"""
from __future__ import annotations

import contextlib
import math
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import platformdirs

from petclf.core.atomic import TEMP_GLOB
from petclf.core.errors import UsageError

__all__ = ["CacheUsage", "cache_dir", "cache_limit_bytes", "cache_usage", "clear_cache", "prune_cache"]

#: The cache's parts: one subfolder each.
KINDS = ("images", "scan", "graphs")
DEFAULT_MAX_GB = 10.0
#: An unfinished file older than this is left over from a killed run.
STALE_TMP_SECONDS = 24 * 3600


def cache_dir() -> Path:
    """petclf's cache folder: ``$PETCLF_CACHE_DIR``, else the platform's user cache folder.

    That is ``$XDG_CACHE_HOME/petclf`` or ``~/.cache/petclf`` on Linux, ``~/Library/Caches/petclf``
    on macOS, ``%LOCALAPPDATA%\\petclf\\Cache`` on Windows (platformdirs' conventions).

    Example: ``PETCLF_CACHE_DIR=/scratch/petclf petclf train photos/`` puts it on a larger disk.
    """
    if os.environ.get("PETCLF_CACHE_DIR"):
        return Path(os.environ["PETCLF_CACHE_DIR"])
    # appauthor=False: no vendor folder above ours on Windows.
    return Path(platformdirs.user_cache_dir("petclf", appauthor=False))


def cache_limit_bytes() -> int:
    """The most bytes the cache folder keeps: ``$PETCLF_CACHE_MAX_GB`` gigabytes (10⁹ bytes), default 10.

    Example: ``PETCLF_CACHE_MAX_GB=40 petclf train photos/`` lets a large dataset's images be cached.
    """
    raw = os.environ.get("PETCLF_CACHE_MAX_GB", "").strip()
    if not raw:
        return int(DEFAULT_MAX_GB * 1e9)
    try:
        gb = float(raw)
    except ValueError:
        gb = -1.0
    if not (gb >= 0 and math.isfinite(gb)):
        raise UsageError(f"PETCLF_CACHE_MAX_GB={raw!r} is not a size: give the cache's budget in GB, "
                         "e.g. PETCLF_CACHE_MAX_GB=20 (0 turns the image cache off).")
    return int(gb * 1e9)


def _files() -> Iterator[tuple[Path, os.stat_result]]:
    """Every regular file in the cache's parts with its stat (files that vanish meanwhile are left out)."""
    for kind in KINDS:
        folder = cache_dir() / kind
        for path in folder.iterdir() if folder.is_dir() else ():
            try:
                st = path.stat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield path, st


def _sweep() -> list[tuple[Path, os.stat_result]]:
    """The finished cache files; unfinished ones left by runs killed a day ago or more are deleted."""
    finished, now = [], time.time()
    for path, st in _files():
        if not path.match(TEMP_GLOB):
            finished.append((path, st))
        elif now - st.st_mtime > STALE_TMP_SECONDS:
            with contextlib.suppress(OSError):
                path.unlink()
    return finished


def _delete(entries: Iterable[tuple[Path, os.stat_result]], *, keep_bytes: int = 0) -> int:
    """Delete ``entries`` in order until at most ``keep_bytes`` of them remain; returns the bytes freed."""
    entries = list(entries)
    total, freed = sum(st.st_size for _, st in entries), 0
    for path, st in entries:
        if total - freed <= keep_bytes:
            break
        with contextlib.suppress(OSError):
            path.unlink()
            freed += st.st_size
    return freed


@dataclass(frozen=True)
class CacheUsage:
    """What the cache folder holds: files and bytes per kind, and its budget."""

    folder: Path
    files: dict[str, int]
    bytes: dict[str, int]
    limit: int

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    def __str__(self) -> str:
        lines = [f"cache folder: {self.folder}"]
        lines += [f"  {kind:<7} {self.files[kind]:>5} files  {self.bytes[kind] / 1e6:>9.1f} MB" for kind in KINDS]
        lines.append(f"  total   {self.total_bytes / 1e6:>21.1f} MB of at most {self.limit / 1e9:g} GB "
                     "(PETCLF_CACHE_MAX_GB)")
        return "\n".join(lines)


def cache_usage() -> CacheUsage:
    """How many files and bytes the cache holds, per kind.

    Example: ``print(cache_usage())``
    """
    files, sizes = dict.fromkeys(KINDS, 0), dict.fromkeys(KINDS, 0)
    for path, st in _files():
        if not path.match(TEMP_GLOB):
            files[path.parent.name] += 1
            sizes[path.parent.name] += st.st_size
    return CacheUsage(cache_dir(), files, sizes, cache_limit_bytes())


def clear_cache() -> int:
    """Delete every finished cache file; returns the bytes freed. Runs in progress keep their files.

    Example: ``clear_cache()`` (or ``petclf cache clear``)
    """
    return _delete(_sweep())


def prune_cache(*, max_bytes: int) -> int:
    """Delete least recently used cache files until at most ``max_bytes`` remain; returns bytes freed.

    Recency is the file's modification time, which readers refresh (``touch``) on every use.

    Example: ``prune_cache(max_bytes=cache_limit_bytes() - needed)`` before writing ``needed`` bytes.
    """
    return _delete(sorted(_sweep(), key=lambda e: e[1].st_mtime), keep_bytes=max_bytes)


def touch(path: Path) -> None:
    """Mark a cache file as just used (a read-only cache is fine: recency is only a hint)."""
    with contextlib.suppress(OSError):
        os.utime(path)
