"""Read every image once for what the audit compares without a network: perceptual hashes, a thumbnail, pixel spread, size.

Hashes are ImageHash's pHash (DCT of a 32×32 grey image) and dHash (gradients of a 9×8 one), 64 bits
each; the thumbnail (24×24 grey, borders trimmed by 2 of 24) confirms a near copy pixel by pixel.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from petclf.data.images import read_rgb

__all__ = ["SMALL", "THUMB", "Fingerprints", "fingerprint_files"]

THUMB = 24  # side of the grey thumbnail (borders trimmed) that pre-screens near copies
SMALL = 32  # side of the whole grey image that a near copy is aligned on


@dataclass(frozen=True)
class Fingerprints:
    """One row per image: ``phash``/``dhash`` as uint64, ``thumbs`` (n, THUMB²) float32 (zero mean, unit norm)."""

    phash: np.ndarray
    dhash: np.ndarray
    thumbs: np.ndarray
    small: np.ndarray  # (n, SMALL, SMALL) uint8: the whole image in grey, for aligning near copies
    std: np.ndarray  # spread of the grey pixels (0..255); a blank or near-constant image has almost none
    width: np.ndarray
    height: np.ndarray
    readable: np.ndarray  # False where the file could not be read (gone or damaged since the scan)


def _bits(hash_) -> int:
    return int("".join("1" if b else "0" for b in hash_.hash.flatten()), 2)


def _one(path: str) -> tuple:
    import imagehash  # noqa: PLC0415 - optional dependency, checked by the caller

    try:
        img = read_rgb(path, min_side=64)
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0, 0, np.zeros(THUMB * THUMB, np.float32), np.zeros((SMALL, SMALL), np.uint8), 0.0, 0, 0, False
    grey = img.convert("L")
    w, h = img.size
    # Trim a margin before the thumbnail, so a copy cropped by a few pixels still lines up.
    mx, my = w // 12, h // 12
    thumb = np.asarray(grey.crop((mx, my, w - mx, h - my)).resize((THUMB, THUMB), Image.BILINEAR), np.float32)
    flat = thumb.flatten() - thumb.mean()
    norm = float(np.linalg.norm(flat))
    flat = flat / norm if norm > 1e-6 else flat * 0
    small = np.asarray(grey.resize((SMALL, SMALL), Image.BILINEAR), np.uint8)
    std = float(np.asarray(grey, np.float32).std())
    return _bits(imagehash.phash(grey)), _bits(imagehash.dhash(grey)), flat, small, std, w, h, True


def fingerprint_files(paths: list[str], *, workers: int | None = None) -> Fingerprints:
    """Fingerprints of ``paths`` (read in threads: PIL decodes without the GIL).

    Example: ``fingerprint_files(["a.jpg", "b.jpg"]).phash``.
    """
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 2)) as pool:
        rows = list(pool.map(_one, paths))
    if not rows:
        empty = np.zeros(0)
        return Fingerprints(empty.astype(np.uint64), empty.astype(np.uint64), np.zeros((0, THUMB * THUMB), np.float32),
                            np.zeros((0, SMALL, SMALL), np.uint8), empty, empty.astype(int), empty.astype(int), empty.astype(bool))
    ph, dh, thumbs, small, std, w, h, ok = zip(*rows)
    return Fingerprints(np.array(ph, dtype=np.uint64), np.array(dh, dtype=np.uint64), np.stack(thumbs), np.stack(small),
                        np.array(std), np.array(w), np.array(h), np.array(ok))
