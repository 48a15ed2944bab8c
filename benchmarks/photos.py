"""Benchmark data: scikit-learn's digits as 400×300 JPEG photos named like Oxford-IIIT Pets files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def build_photos(root: Path, *, n: int | None = None) -> Path:
    """Write ``<digit>_<i>.jpg`` photos (a 300 px digit on a tinted 400×300 card) into ``root``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    count = len(digits.images) if n is None else n
    for i in range(count):
        j = i % len(digits.images)
        path = root / f"{NAMES[digits.target[j]]}_{i}.jpg"
        tint = tuple(int(v) for v in rng.integers(150, 255, 3))
        if path.exists():
            continue
        gray = (255 - digits.images[j] * 15).clip(0, 255).astype(np.uint8)
        digit = Image.fromarray(gray).resize((260, 260), Image.BICUBIC).convert("RGB")
        card = Image.new("RGB", (400, 300), tint)
        card.paste(digit, (int(rng.integers(0, 140)), int(rng.integers(0, 40))))
        card.save(path, quality=90)
    return root
