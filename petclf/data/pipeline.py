"""How an image becomes a model input: the preprocessing a model is trained with and predicts with."""
from __future__ import annotations

from dataclasses import dataclass

from petclf.core.defaults import AUGMENTS, IMAGENET_STATS
from petclf.core.errors import UsageError

__all__ = ["Pipeline", "make_pipeline"]


@dataclass(frozen=True)
class Pipeline:
    """Resize the shorter side to ``presize`` and centre-crop (validation), then resample to ``size`` and normalise."""

    size: int  # final side in pixels the model sees
    presize: int  # item resize before batch augmentation (larger than size, as fastai teaches)
    augment: str  # 'standard', 'no-flip' or 'none'
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def make_pipeline(*, size: int, augment: str = "standard", stats: tuple | None = None) -> Pipeline:
    """A ``Pipeline`` for ``size`` with the usual presize (1.5 × size, as fastai's 460→224 idea).

    Example: ``make_pipeline(size=224).presize`` → ``336``.
    """
    if augment not in AUGMENTS:
        raise UsageError(f"unknown augment {augment!r}: expected one of {', '.join(AUGMENTS)}.")
    mean, std = stats if stats is not None else IMAGENET_STATS
    return Pipeline(size=size, presize=int(round(size * 1.5)), augment=augment,
                    mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))
