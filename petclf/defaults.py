"""Defaults shared by the library, ``TrainOptions`` and the command line: each is set here only."""
from __future__ import annotations

__all__ = ["DEFAULT_SEED", "DEFAULT_VALID_PCT", "MAX_LR", "MAX_SEED", "MAX_SIZE", "MIN_SIZE"]

#: Share of images held out for validation when the data has no valid/ folder.
DEFAULT_VALID_PCT = 0.2
#: Fixes the random split and the initial weights.
DEFAULT_SEED = 42

#: Image sides a model is trained at, in pixels: below 8 no network sees anything, and at 2048 one
#: batch of 64 already takes 3 GB of floats.
MIN_SIZE, MAX_SIZE = 8, 2048
#: Seeds numpy and torch accept.
MAX_SEED = 2**32 - 1
#: No optimizer petclf uses trains at a learning rate above this; larger ones only make the loss NaN.
MAX_LR = 10.0
