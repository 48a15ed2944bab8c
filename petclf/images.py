"""Read any image file as the RGB picture a person would see.

fastai opens images with ``convert('RGB')`` only: EXIF rotation is ignored, 16-bit scans are
clipped to white and transparent areas turn to whatever colour hides behind the alpha.
``read_rgb`` handles those cases; ``RGBImage`` plugs it into fastai's ``ImageBlock``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from fastai.vision.core import PILImage
from PIL import Image, ImageOps

__all__ = ["read_rgb", "to_rgb", "RGBImage"]

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


def read_rgb(path: str | Path) -> Image.Image:
    """Open ``path`` by its content (not its extension) and return 8-bit RGB.

    Example: ``read_rgb("scan_16bit.png").mode`` → ``'RGB'``.
    """
    with Image.open(path) as img:
        img.load()
        return to_rgb(img)


class RGBImage(PILImage):
    """fastai's ``PILImage`` opened through ``read_rgb``."""

    @classmethod
    def create(cls, fn: Path | str | Image.Image, **kwargs) -> "RGBImage":  # noqa: ARG003
        # fastai reads the annotation of ``fn`` to know which inputs this block accepts.
        if isinstance(fn, Image.Image):
            return cls(to_rgb(fn))
        return cls(read_rgb(fn))
