"""Read any image file as the RGB picture a person would see.

fastai opens images with ``convert('RGB')`` only: EXIF rotation is ignored, 16-bit scans are
clipped to white and transparent areas turn to whatever colour hides behind the alpha.
``read_rgb`` handles those cases; ``RGBImage`` plugs it into fastai's ``ImageBlock``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from fastai.vision.core import PILImage
from PIL import Image, ImageOps
from fasttransform import Transform

__all__ = ["read_rgb", "to_rgb", "RGBImage", "ReadRGB"]

_WIDE_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert an opened image (any mode, first frame, EXIF orientation applied) to 8-bit RGB."""
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    img = ImageOps.exif_transpose(img) or img
    if img.mode in _WIDE_MODES:
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max() > 255 else 255.0
        img = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def read_rgb(path: str | Path, *, min_side: int | None = None) -> Image.Image:
    """Open ``path`` by its content (not its extension) and return 8-bit RGB.

    With ``min_side``, a JPEG at least twice that size is decoded at 1/2, 1/4 or 1/8 scale,
    as small as keeps its shorter side at ``min_side`` or more (a 4000×3000 photo read for a
    336 px presize: 139 → 31 ms). Everything that resizes to a presize reads this way, so
    training, prediction and export see the same pixels.

    Example: ``read_rgb("scan_16bit.png").mode`` → ``'RGB'``.
    """
    with Image.open(path) as img:
        if min_side:
            _draft(img, min_side)
        img.load()
        return to_rgb(img)


def _draft(img: Image.Image, min_side: int) -> None:
    factor = min(img.size) / min_side
    if factor >= 2:  # JPEG only; other formats ignore draft()
        img.draft(img.mode, (math.ceil(img.width / factor), math.ceil(img.height / factor)))


class RGBImage(PILImage):
    """fastai's ``PILImage`` opened through ``read_rgb``."""

    @classmethod
    def create(cls, fn: Path | str | Image.Image, *, min_side: int | None = None, **kwargs) -> "RGBImage":  # noqa: ARG003
        # fastai reads the annotation of ``fn`` to know which inputs this block accepts.
        if isinstance(fn, Image.Image):
            return cls(to_rgb(fn))
        return cls(read_rgb(fn, min_side=min_side))


class ReadRGB(Transform):
    """fastai type transform: a path (or PIL image) → ``RGBImage``, read for a ``presize`` resize."""

    def __init__(self, presize: int) -> None:
        super().__init__()
        self.presize = presize
        self.input_types = (str, Path, Image.Image)  # what test_dl and predict accept

    def encodes(self, item: str | Path | Image.Image) -> RGBImage:
        return RGBImage.create(item, min_side=self.presize)
