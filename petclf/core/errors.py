"""Errors petclf shows to users: short, with what happened, what was expected and the fix."""
from __future__ import annotations

__all__ = ["PetclfError", "DataError", "UsageError", "ModelFileError", "TrainingDiverged",
           "WeightsUnavailableError", "require_positive", "require_non_negative", "require_fraction", "require_between"]


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


class ModelFileError(PetclfError, ValueError):
    """A model directory is damaged, incomplete or not what it claims to be (checked before anything is built)."""

    exit_code = 2


class TrainingDiverged(PetclfError, RuntimeError):
    """The training loss became NaN or infinite (usually a learning rate far too high)."""

    exit_code = 2


class WeightsUnavailableError(PetclfError, RuntimeError):
    """Pretrained weights were asked for but cannot be found or downloaded."""

    exit_code = 2


def require_positive(**values: int) -> None:
    """Refuse any value that is not a positive integer, naming it: ``require_positive(bs=0)`` raises."""
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be a positive integer. Received: {name}={value!r}.")


def require_non_negative(**values: int) -> None:
    """Refuse any value that is not an integer ≥ 0, naming it: ``require_non_negative(freeze_epochs=-1)`` raises."""
    for name, value in values.items():
        if not isinstance(value, int) or value < 0:
            raise UsageError(f"{name} must be 0 or more. Received: {name}={value!r}.")


def require_fraction(**values: float) -> None:
    """Refuse any value outside [0, 1), naming it: ``require_fraction(valid_pct=1.5)`` raises."""
    for name, value in values.items():
        if not 0.0 <= value < 1.0:
            raise UsageError(f"{name} must be in [0, 1). Received: {name}={value}.")


def require_between(low: float, high: float, **values: float) -> None:
    """Refuse any value that is not a finite number in [low, high], naming it: ``require_between(8, 2048, size=1e9)``."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise UsageError(f"{name} must be from {low:g} to {high:g}. Received: {name}={value!r}.")
