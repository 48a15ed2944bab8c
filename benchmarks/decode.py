"""JPEG bytes to a model's presize pixels: Pillow whole, Pillow reduced-scale (draft), simplejpeg, side by side.

Usage:  python benchmarks/decode.py [--rounds 7] [--photos ../shared/data/flowers5/valid] [--threads]

Every candidate turns the same encoded bytes into the same (presize, presize, 3) uint8 array (shorter
side to the presize, centre crop, bilinear), as ``petclf serve`` and ``Predictor`` need them:

- ``pillow whole``: ``Image.open`` + full decode + ``to_rgb`` + ``centre_crop`` (petclf before JPEG drafts).
- ``pillow draft``: the same with ``Image.draft`` (libjpeg-turbo's DCT scaling to 1/2, 1/4, 1/8).
- ``read_image_bytes``: petclf's serve decoder as it is in this tree (the winner of the above, with
  the upload checks).
- ``simplejpeg``: ``simplejpeg.decode_jpeg`` at the same reduced scale + ``centre_crop``, header by
  ``simplejpeg.decode_jpeg_header`` (no EXIF orientation: an upper bound on what it can save).
- ``simplejpeg + Pillow header``: what a serve path would run: Pillow opens the header (format,
  pixel limit, EXIF orientation; other cases go the Pillow way), simplejpeg decodes the pixels.
- ``resize only``: the crop + bilinear resize of pixels decoded beforehand: the part no decoder saves.

Candidates run interleaved (each round times every candidate once over every image, in a rotated
order) so that a busy neighbour slows them alike; the table gives the median per image and the ratio
to ``pillow draft``. Photos: the 128 px flowers5 JPEGs when ``--photos`` exists, and generated
640×480 … 1000×750 photos with detail at every scale (benchmarks/read_speed.py's generator).
``--threads`` also decodes batches of 32 with 1 and 2 threads (does the decoder release the GIL?).
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from read_speed import _photo  # noqa: E402

from petclf.data.images import centre_crop, draft_for, to_rgb  # noqa: E402
from petclf.serve.decode import read_image_bytes  # noqa: E402

Decoder = Callable[[bytes, int], np.ndarray]


def pillow_whole(data: bytes, presize: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(centre_crop(to_rgb(img), presize), dtype=np.uint8)


def pillow_draft(data: bytes, presize: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        draft_for(img, presize)
        img.load()
        return np.asarray(centre_crop(to_rgb(img), presize), dtype=np.uint8)


def simplejpeg_scaled(data: bytes, presize: int) -> np.ndarray:
    import simplejpeg  # noqa: PLC0415

    height, width = simplejpeg.decode_jpeg_header(data)[:2]
    scale = 1
    for s in (8, 4, 2):  # Pillow's draft rule: the largest power of two keeping the shorter side >= presize
        if min(height, width) // s >= presize:
            scale = s
            break
    pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=-(-height // scale),
                                    min_width=-(-width // scale))
    return np.asarray(centre_crop(Image.fromarray(pixels), presize), dtype=np.uint8)


def simplejpeg_pillow_header(data: bytes, presize: int) -> np.ndarray:
    """simplejpeg for the pixels, Pillow for the header (format, size limit, EXIF orientation): what serve would run."""
    with Image.open(io.BytesIO(data)) as img:
        if img.format != "JPEG" or img.mode != "RGB" or img.getexif().get(0x0112, 1) != 1:
            draft_for(img, presize)
            img.load()
            return np.asarray(centre_crop(to_rgb(img), presize), dtype=np.uint8)
    return simplejpeg_scaled(data, presize)


def resize_only(data: bytes, presize: int, *, _decoded: dict = {}) -> np.ndarray:  # noqa: B006 - a memo on purpose
    """The crop + resize alone, on pixels decoded (at the draft scale) before timing: the part no decoder saves."""
    key = (id(data), presize)
    if key not in _decoded:
        with Image.open(io.BytesIO(data)) as img:
            draft_for(img, presize)
            img.load()
            _decoded[key] = to_rgb(img)
    return np.asarray(centre_crop(_decoded[key], presize), dtype=np.uint8)


CANDIDATES: dict[str, Decoder] = {"pillow whole": pillow_whole, "pillow draft": pillow_draft,
                                  "read_image_bytes": read_image_bytes, "simplejpeg": simplejpeg_scaled,
                                  "simplejpeg + Pillow header": simplejpeg_pillow_header, "resize only": resize_only}


def _sets(photos: Path, tmp: Path) -> dict[str, list[bytes]]:
    sets: dict[str, list[bytes]] = {}
    files = sorted(photos.glob("*/*.jpg"))[::20] if photos.is_dir() else []
    if files:
        sets[f"flowers5 128 px ({len(files)})"] = [f.read_bytes() for f in files]
    generated = []
    for k, (w, h) in enumerate([(640, 480), (800, 600), (1000, 750), (750, 1000), (517, 389)] * 4):
        path = tmp / f"p{k}.jpg"
        _photo(path, w, h)
        generated.append(path.read_bytes())
    sets[f"generated 517-1000 px ({len(generated)})"] = generated
    return sets


def _time(fn: Decoder, images: list[bytes], presize: int) -> float:
    start = time.perf_counter()
    for data in images:
        fn(data, presize)
    return (time.perf_counter() - start) / len(images) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--presizes", type=int, nargs="+", default=[96, 192, 336])
    parser.add_argument("--photos", type=Path,  # ../shared beside the checkout, as the other benchmarks find it
                        default=Path(__file__).resolve().parents[2] / "shared/data/flowers5/valid")
    parser.add_argument("--threads", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sets = _sets(args.photos, Path(tmp))
    names = list(CANDIDATES)
    print(f"median µs per image over {args.rounds} interleaved rounds (ratio to pillow draft)")
    print("| images | presize | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for label, images in sets.items():
        for presize in args.presizes:
            reference = [pillow_draft(d, presize) for d in images]
            for name, fn in CANDIDATES.items():  # same pixels, or the comparison means nothing
                assert all(np.array_equal(fn(d, presize), r) or name == "pillow whole"
                           for d, r in zip(images, reference)), name
            times: dict[str, list[float]] = {name: [] for name in names}
            for r in range(args.rounds):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    times[name].append(_time(CANDIDATES[name], images, presize))
            med = {name: statistics.median(t) for name, t in times.items()}
            cells = [f"{med[n]:.0f} ({med[n] / med['pillow draft']:.2f})" for n in names]
            print(f"| {label} | {presize} | " + " | ".join(cells) + " |")
    if args.threads:
        images = list(sets.values())[-1][:32]
        print("\nbatch of 32 generated photos at presize 192, ms (median of rounds): 1 thread vs 2 threads")
        for name in ("pillow draft", "simplejpeg"):
            fn = CANDIDATES[name]
            row = []
            for workers in (1, 2):
                with ThreadPoolExecutor(workers) as pool:
                    runs = []
                    for _ in range(args.rounds):
                        start = time.perf_counter()
                        list(pool.map(lambda d: fn(d, 192), images))
                        runs.append((time.perf_counter() - start) * 1000)
                row.append(statistics.median(runs))
            print(f"  {name}: {row[0]:.1f} ms / {row[1]:.1f} ms ({row[0] / row[1]:.2f}x)")


if __name__ == "__main__":
    main()
