"""Scikit-learn's handwritten digits (real 8×8 scans) written as a folder of JPEG photos."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["DIGIT_NAMES", "write_digits"]

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_digits(dest: str | Path, *, size: int = 64, layout: str = "pets", limit: int | None = None) -> Path:
    """Write the 1,797 digits as ``size``-pixel RGB JPEGs into ``dest`` and return it.

    ``layout='pets'`` names files ``<digit name>_<n>.jpg`` in one folder; ``layout='classes'``
    writes one sub-folder per digit. Existing complete output is reused.

    Example: ``write_digits("work/digits")`` → ``Path('work/digits')`` holding ``seven_12.jpg`` and so on.
    """
    from sklearn.datasets import load_digits  # noqa: PLC0415 - only the demo and tests need it

    dest = Path(dest)
    digits = load_digits()
    images, targets = digits.images, digits.target
    if limit is not None:
        images, targets = images[:limit], targets[:limit]
    files = [_file_name(dest, layout, DIGIT_NAMES[t], i) for i, t in enumerate(targets)]
    if all(f.exists() for f in files):
        return dest
    for file, image in zip(files, images):
        file.parent.mkdir(parents=True, exist_ok=True)
        _to_photo(image, size).save(file, quality=95)
    return dest


def _file_name(dest: Path, layout: str, label: str, index: int) -> Path:
    if layout == "pets":
        return dest / f"{label}_{index}.jpg"
    return dest / label / f"{index}.jpg"


def _to_photo(image: np.ndarray, size: int) -> Image.Image:
    # Scans are 0..16 ink on white paper; bicubic upscaling gives smooth strokes like a photo.
    gray = (255 - image * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").resize((size, size), Image.BICUBIC).convert("RGB")
