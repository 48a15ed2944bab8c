"""Reading one large photo for a presize: whole decode vs JPEG reduced-scale decode.

Usage:  python benchmarks/read_speed.py [--width 4000 --height 3000 --presize 336]

Writes a JPEG with detail at every scale (blurred coarse colour plus fine noise, like a phone
photo), then times ``read_rgb`` + the presize crop both ways (one thread, median of 7 reads).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from petclf.data.images import read_rgb  # noqa: E402
from petclf.learn.loaders import RGBImage  # noqa: E402


def _photo(path: Path, width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    coarse = (rng.random((height // 4, width // 4, 3)) * 255).astype(np.uint8)
    base = Image.fromarray(coarse).resize((width, height), Image.BICUBIC).filter(ImageFilter.GaussianBlur(1))
    noise = Image.fromarray((rng.random((height, width, 3)) * 40).astype(np.uint8))
    Image.blend(base, noise, 0.2).save(path, quality=90)


def _median_ms(fn, n: int = 7) -> float:
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--presize", type=int, default=336)
    args = parser.parse_args()
    from fastai.vision.augment import Resize

    resize = Resize(args.presize, method="crop")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo.jpg"
        _photo(path, args.width, args.height)
        whole = _median_ms(lambda: resize(RGBImage(read_rgb(path)), split_idx=1))
        reduced = _median_ms(lambda: resize(RGBImage(read_rgb(path, min_side=args.presize)), split_idx=1))
        size = read_rgb(path, min_side=args.presize).size
    print(f"{args.width}x{args.height} JPEG ({path.name}) to a {args.presize} px presize, one thread:")
    print(f"  whole decode    {whole:7.1f} ms")
    print(f"  reduced decode  {reduced:7.1f} ms  (decoded at {size[0]}x{size[1]})  {whole / reduced:.1f}x faster")


if __name__ == "__main__":
    main()
