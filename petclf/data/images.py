"""Read any image file as the RGB picture a person would see.

fastai opens images with ``convert('RGB')`` only: EXIF rotation is ignored, 16-bit scans are
clipped to white and transparent areas turn to whatever colour hides behind the alpha.
``read_rgb`` handles those cases; ``Presizer`` reads an image as validation and prediction see
it (shorter side to the presize, centre crop), in plain PIL, and says why a file cannot be read
(``read``, ``read_readable``: what ``Predictor``, ``Explainer`` and the "unknown" fit share).
"""
from __future__ import annotations

import functools
import math
import os
import stat
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageOps

from petclf.core.errors import UsageError
from petclf.core.safe_text import printable

__all__ = ["IMAGE_EXTENSIONS", "MAX_FILE_BYTES", "READ_ERRORS", "ImageLike", "Presized", "Presizer", "UnreadableImage",
           "cannot_read", "centre_crop", "draft_for", "file_problem", "pixel_problem", "read_rgb", "to_rgb"]

#: What the readers take: a path, or an image already opened.
ImageLike = str | Path | Image.Image
#: File endings read as images (by content: a PNG named .jpg is read as PNG).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
#: Larger files are not read: an uncompressed RGB image at PIL's pixel limit (89 Mpx) is 270 MB.
MAX_FILE_BYTES = 1024**3


#: What opening or decoding a bad file raises (UnidentifiedImageError is an OSError; UnreadableImage a ValueError).
READ_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


def cannot_read(image: object, err: BaseException) -> str:
    """The reason given for an image that raised one of ``READ_ERRORS``.

    Example: ``cannot_read("x.jpg", OSError("truncated"))`` → ``"cannot read x.jpg as an image (truncated)."``.
    """
    return f"cannot read {printable(image)} as an image ({printable(err)})."


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
        img = Image.fromarray(_wide_to_8bit(img), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


@functools.cache
def _sixteen_bit_table() -> np.ndarray:
    """uint8 of every 16-bit value, as the float64 scaling gives it; built once, on the first 16-bit image."""
    return np.clip(np.arange(65536, dtype=np.float64) * (255.0 / 65535.0), 0, 255).astype(np.uint8)


def _wide_to_8bit(img: Image.Image) -> np.ndarray:
    """The uint8 values of a 16-bit, 32-bit integer or float image: 0..65535 (or 0..255 when no value is above
    255) scaled to 0..255.

    The scaling runs in float64 a band of rows at a time (a float64 copy of a whole 88 Mpx scan is 700 MB), and
    16-bit images go through a 65,536-entry table computed with the same formula: the same values either way.
    """
    if img.mode.startswith("I;16"):
        return _sixteen_bit_table()[np.asarray(img, dtype=np.uint16)]
    rows = max(1, (1 << 20) // max(1, img.width))  # about a million pixels per band
    bands = [(y, min(y + rows, img.height)) for y in range(0, img.height, rows)]
    top_value = np.max([np.asarray(img.crop((0, y0, img.width, y1))).max() for y0, y1 in bands]) if bands else 0
    top = 65535.0 if top_value > 255 else 255.0
    out = np.empty((img.height, img.width), dtype=np.uint8)
    for y0, y1 in bands:
        values = np.asarray(img.crop((0, y0, img.width, y1)), dtype=np.float64)
        out[y0:y1] = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
    return out


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
            draft_for(img, min_side)
        img.load()
        return to_rgb(img)


def draft_for(img: Image.Image, min_side: int) -> None:
    """Ask an opened JPEG to decode at 1/2, 1/4 or 1/8 scale, keeping its shorter side at ``min_side`` or more."""
    factor = min(img.size) / min_side
    if factor >= 2:  # JPEG only; other formats ignore draft()
        img.draft(img.mode, (math.ceil(img.width / factor), math.ceil(img.height / factor)))


def centre_crop(img: Image.Image, presize: int) -> Image.Image:
    """The largest centred square of ``img``, resized (bilinear) to ``presize`` × ``presize``.

    The same pixels as fastai's ``Resize(presize, method='crop')`` in validation, computed the
    same way (including its rounding), so training and prediction agree exactly.

    Example: ``centre_crop(Image.new("RGB", (400, 300)), 192).size`` → ``(192, 192)``.
    """
    w, h = img.size
    scale = w / presize if w / presize < h / presize else h / presize
    side = int(scale * presize)
    left, top = int(0.5 * (w - side)), int(0.5 * (h - side))
    return img.crop((left, top, left + side, top + side)).resize((presize, presize), Image.BILINEAR)


class Presized(NamedTuple):
    """What ``Presizer.read_readable`` read of a list of images: the (n, presize, presize, 3) uint8 pixels of those
    it could read (None when none), their positions in the list, and (position, reason) for the others."""

    pixels: np.ndarray | None
    kept: list[int]
    failed: list[tuple[int, str]]


class Presizer:
    """Reads images as validation does (shorter side to ``presize``, centre crop) into uint8 arrays; thread-safe.

    Example: ``Presizer(336)("cat.jpg").shape`` → ``(336, 336, 3)``.
    """

    def __init__(self, presize: int) -> None:
        self.presize = presize

    def __call__(self, image: ImageLike) -> np.ndarray:
        img = to_rgb(image) if isinstance(image, Image.Image) else read_rgb(image, min_side=self.presize)
        return np.asarray(centre_crop(img, self.presize), dtype=np.uint8)

    def read(self, image: ImageLike) -> np.ndarray:
        """As calling it, but a file that cannot be read (gone, damaged, not an image, too large) raises a
        UsageError that says why.

        Example: ``Presizer(336).read("gone.jpg")`` raises ``image gone.jpg does not exist.``
        """
        try:
            return self(image)
        except (FileNotFoundError, IsADirectoryError):
            raise UsageError(f"image {printable(image)} does not exist.") from None
        except READ_ERRORS as err:
            raise UsageError(cannot_read(image, err)) from None

    def read_readable(self, images: Sequence[ImageLike], *,
                      mapper: Callable[[Callable, Iterable], Iterable] = map) -> Presized:
        """``images`` read as ``read`` reads them, those that cannot be read left out and named with the reason;
        ``mapper`` may be a thread pool's ``map`` (PIL decodes and resizes without the GIL).

        Example: ``Presizer(336).read_readable(["cat.jpg", "gone.jpg"]).failed`` → ``[(1, 'image gone.jpg does
        not exist.')]``.
        """
        def attempt(image: ImageLike) -> np.ndarray | str:
            try:
                return self.read(image)
            except UsageError as err:
                return str(err)

        results = list(mapper(attempt, images))
        kept = [k for k, r in enumerate(results) if not isinstance(r, str)]
        failed = [(k, r) for k, r in enumerate(results) if isinstance(r, str)]
        return Presized(np.stack([results[k] for k in kept]) if kept else None, kept, failed)
