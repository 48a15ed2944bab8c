"""Where petclf keeps what it can compute again: scan verdicts and presized images."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """petclf's cache folder: ``$PETCLF_CACHE_DIR``, else ``$XDG_CACHE_HOME/petclf``, else ``~/.cache/petclf``."""
    if os.environ.get("PETCLF_CACHE_DIR"):
        return Path(os.environ["PETCLF_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "petclf"
