"""The one logger petclf speaks through, so users can silence or redirect it."""
from __future__ import annotations

import logging
import os
import sys

from petclf.core.safe_text import printable


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (test runners and notebooks swap it)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


logger = logging.getLogger("petclf")
if not logger.handlers:
    _handler = _CurrentStderr()
    _handler.setFormatter(logging.Formatter("petclf: %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    # Our handler already prints; the root logger would print it twice.
    logger.propagate = False
    # Under torchrun / accelerate launch only process 0 speaks (errors excepted).
    if int(os.environ.get("RANK", "0")) > 0:
        logger.setLevel(logging.ERROR)


# Messages carry file and class names, which may hold terminal escapes or newlines.
def info(message: str) -> None:
    logger.info(printable(message))


def warn(message: str) -> None:
    logger.warning("warning: " + printable(message))
