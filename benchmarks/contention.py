"""Why a served graph backend stays under its floor on a small CPU: its forward beside a busy Python thread.

Usage:  python benchmarks/contention.py MODEL [--backend openvino] [--int8] [--batches 1,8,11,16,32] [--seconds 2]

For each batch size: a saved model's forward (``Predictor.scores_and_ood``, as ``petclf serve`` calls it) on
ready uint8 pixels, ms per batch and images/s, alone in the process. Then the same forward at ``--beside``
images while one other Python thread keeps a core busy — what the server's event loop does while a batch runs
(reading requests, writing answers). On two cores the backend's threads then wait for the core they lost.
Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from petclf import Predictor  # noqa: E402


def per_batch(pred: Predictor, x: torch.Tensor, seconds: float) -> float:
    """Seconds per forward of ``x``, over about ``seconds`` of repeats after a warm-up."""
    with torch.inference_mode():
        for _ in range(3):
            pred.scores_and_ood(x)
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            pred.scores_and_ood(x)
            n += 1
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--int8", action="store_true")
    parser.add_argument("--batches", default="1,8,11,16,32")
    parser.add_argument("--beside", type=int, default=11, help="batch size timed with a busy thread beside it")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    pred = Predictor(args.model, backend=args.backend, int8=args.int8, tta=False)
    side = pred.pipeline.presize
    pixels = lambda n: torch.randint(0, 256, (n, side, side, 3), dtype=torch.uint8)  # noqa: E731
    print(f"{args.backend}{' int8' if args.int8 else ''}, {side} px pixels, {torch.get_num_threads()} torch threads")
    for n in (int(b) for b in args.batches.split(",")):
        dt = per_batch(pred, pixels(n), args.seconds)
        print(f"  batch {n:3d} alone:              {1000 * dt:7.2f} ms, {n / dt:7.1f} img/s", flush=True)
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            sum(range(1000))

    thread = threading.Thread(target=busy)
    thread.start()
    try:
        dt = per_batch(pred, pixels(args.beside), args.seconds)
    finally:
        stop.set()
        thread.join()
    print(f"  batch {args.beside:3d} beside a busy thread: {1000 * dt:7.2f} ms, {args.beside / dt:7.1f} img/s")


if __name__ == "__main__":
    main()
