"""Read any image file as the RGB picture a person would see.

fastai opens images with ``convert('RGB')`` only: EXIF rotation is ignored, 16-bit scans are
clipped to white and transparent areas turn to whatever colour hides behind the alpha.
``read_rgb`` handles those cases; ``RGBImage`` plugs it into fastai's ``ImageBlock``.
"""
from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import numpy as np
from fastai.vision.core import PILImage
from PIL import Image, ImageOps
from fasttransform import Transform

from . import _log

__all__ = ["MAX_FILE_BYTES", "UnreadableImage", "file_problem", "pixel_problem", "read_rgb", "to_rgb", "RGBImage",
           "ReadRGB"]

#: Larger files are not read: an uncompressed RGB image at PIL's pixel limit (89 Mpx) is 270 MB.
MAX_FILE_BYTES = 1024**3


class UnreadableImage(ValueError):
    """A file that petclf will not read as an image (not a regular file, too large, too many pixels)."""


def file_problem(st: os.stat_result) -> str:
    """Why a file with this stat is not read as an image ('' when it may be): FIFOs and devices, huge files."""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a FIFO, socket or device would block or never end)"
    if st.st_size > MAX_FILE_BYTES:
        return f"file too large ({st.st_size / 1e9:.1f} GB; images over {MAX_FILE_BYTES / 1e9:.1f} GB are not read)"
    return ""


def pixel_problem(img: Image.Image) -> str:
    """Why an opened image is not decoded ('' when it may be): more pixels than PIL's decompression-bomb limit."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and img.width * img.height > limit:
        return (f"too large to decode safely ({img.width}x{img.height} = {img.width * img.height / 1e6:.0f} Mpx; "
                f"the limit is {limit / 1e6:.0f} Mpx)")
    return ""

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

    FIFOs, devices, files over ``MAX_FILE_BYTES`` and images over PIL's pixel limit raise
    ``UnreadableImage`` (the scan skips the same files).

    Example: ``read_rgb("scan_16bit.png").mode`` → ``'RGB'``.
    """
    problem = file_problem(os.stat(path))
    if problem:
        raise UnreadableImage(problem)
    with Image.open(path) as img:
        problem = pixel_problem(img)
        if problem:
            raise UnreadableImage(problem)
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
    """fastai type transform: a path (or PIL image) → ``RGBImage``, read for a ``presize`` resize.

    With ``stand_in`` (the training loaders), a file that can no longer be read — deleted or
    damaged after the scan — is replaced by a grey image, with a warning, instead of ending the
    epoch; the evaluation then leaves it out and lists it in skipped.csv.
    """

    def __init__(self, presize: int, *, stand_in: bool = False) -> None:
        super().__init__()
        self.presize, self.stand_in = presize, stand_in
        self.input_types = (str, Path, Image.Image)  # what test_dl and predict accept
        self._warned: set[str] = set()

    def encodes(self, item: str | Path | Image.Image) -> RGBImage:
        if not self.stand_in or isinstance(item, Image.Image):
            return RGBImage.create(item, min_side=self.presize)
        try:
            return RGBImage.create(item, min_side=self.presize)
        except (OSError, ValueError, SyntaxError) as err:  # what PIL and the checks above raise for a bad file
            if str(item) not in self._warned:
                self._warned.add(str(item))
                _log.warn(f"{item} can no longer be read ({err}); a grey image stands in for it while training, "
                          "and it is left out of the evaluation.")
            return RGBImage(Image.new("RGB", (self.presize, self.presize), (128, 128, 128)))
