"""Errors petclf shows to users: short, with what happened, what was expected and the fix."""
from __future__ import annotations

__all__ = ["PetclfError", "DataError", "UsageError", "WeightsUnavailableError"]


class PetclfError(Exception):
    """Base class of the errors petclf reports without a traceback.

    ``exit_code`` is what the command line returns: 2 for usage and data problems.
    """

    exit_code = 1


class UsageError(PetclfError, ValueError):
    """An argument is out of range or of the wrong kind."""

    exit_code = 2


class DataError(PetclfError, ValueError):
    """The image folder cannot be turned into a labelled dataset."""

    exit_code = 2


class WeightsUnavailableError(PetclfError, RuntimeError):
    """Pretrained weights were asked for but cannot be found or downloaded."""

    exit_code = 2
