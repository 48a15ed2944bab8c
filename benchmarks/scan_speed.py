"""How fast `petclf check` scans a folder: cold (every file decoded) and warm (cache, files only stat'ed).

Usage: python benchmarks/scan_speed.py [--n 3000] [--work /tmp/petclf-scan-bench]
Builds its own data: scikit-learn digits as 400×300 JPEG photos in class folders.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def build(root: Path, n: int) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    for i in range(n):
        j = i % len(digits.images)
        label = str(digits.target[j])
        path = root / label / f"{i}.jpg"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        gray = (255 - digits.images[j] * 15).clip(0, 255).astype(np.uint8)
        img = Image.fromarray(gray).resize((300, 300), Image.BICUBIC).convert("RGB")
        canvas = Image.new("RGB", (400, 300), tuple(int(v) for v in rng.integers(150, 255, 3)))
        canvas.paste(img, (50, 0))
        canvas.save(path, quality=90)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "petclf-scan-bench"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="petclf-scan-cache-") as cache:  # cold cache, removed after
        os.environ["PETCLF_CACHE_DIR"] = cache
        _measure(build(Path(args.work) / "data", args.n))


def _measure(data: Path) -> None:
    from petclf.data.scan import check_folder

    t0 = time.perf_counter()
    cold = check_folder(data)
    t1 = time.perf_counter()
    warm = check_folder(data)
    t2 = time.perf_counter()
    print(f"files {cold.n_files}, cpus {os.cpu_count()}")
    print(f"cold scan  {t1 - t0:7.2f} s  {cold.n_files / (t1 - t0):8.0f} files/s")
    print(f"warm scan  {t2 - t1:7.2f} s  {warm.n_files / (t2 - t1):8.0f} files/s  ({warm.n_cached} from cache)")


if __name__ == "__main__":
    main()
