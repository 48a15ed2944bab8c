"""Which learning rate to train at when the user gives none: lr_find's suggestion against fixed rates.

Usage:  python benchmarks/lr_choice.py [--work DIR] [--rates find,1e-3,2e-3,3e-3,1e-2]

On scikit-learn's digits as 64 px JPEGs (all 1,797: 1,438 train / 359 valid, 5 epochs; and the
first 750: 600 train / 150 valid, 3 and 10 epochs), resnet18 from scratch at 64 px, no flips:
one `petclf train` per rate (`find` = `--lr-find`), printing the validation error, the training
seconds and the whole command's seconds. One seed each: one image is 0.28 points of error on the
large set, 0.67 on the small one.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "petclf-lr-choice"))
    parser.add_argument("--rates", default="find,1e-3,2e-3,3e-3,1e-2")
    args = parser.parse_args()
    from petclf.data.digits import write_digits

    work = Path(args.work)
    sets = {"full": (work / "full", None, (5,)), "small": (work / "small", 750, (3, 10))}
    for folder, limit, _ in sets.values():
        if not folder.exists():
            write_digits(folder, size=64, limit=limit)
    for name, (folder, _, epoch_counts) in sets.items():
        for epochs in epoch_counts:
            for rate in args.rates.split(","):
                out = work / f"run-{name}-{epochs}-{rate}"
                shutil.rmtree(out, ignore_errors=True)
                cmd = [sys.executable, "-m", "petclf.cli", "train", str(folder), "--out", str(out), "--arch",
                       "resnet18", "--size", "64", "--no-pretrained", "--epochs", str(epochs), "--augment", "no-flip",
                       *(["--lr-find"] if rate == "find" else ["--lr", rate])]
                start = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                wall = time.perf_counter() - start
                if proc.returncode:
                    raise SystemExit(proc.stderr[-3000:])
                s = json.loads((out / "summary.json").read_text())
                print(f"{name:<5} {epochs:>2} epochs  lr {rate:<5} ({s['lr']:.2g})  error {s['error_rate']:.4f}  "
                      f"training {s['train_seconds']:.1f} s  command {wall:.1f} s", flush=True)


if __name__ == "__main__":
    main()
