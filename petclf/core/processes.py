"""Which process this is when a launcher (torchrun, accelerate launch) started several: read from its environment."""
from __future__ import annotations

import os

__all__ = ["is_main", "local_rank", "rank", "world_size"]


def world_size() -> int:
    """Number of training processes (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's number among all of them (0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's number on its machine: the GPU it uses."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True in the one process that writes files and logs."""
    return rank() == 0
