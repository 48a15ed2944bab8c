"""Which levers of the head-on-cached-features phase pay, on real photos: head epochs, learning rate, and the
mirror images as a second cached view. The body's features are computed once; each head trains in seconds.

    python benchmarks/head_levers.py --data ../shared/data/flowers5 --train-per-class 150 --valid-per-class 100
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from transfer import ARCH, add_data_arguments, subset  # noqa: I001 - the benchmark beside this one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    from fastai.torch_core import set_seed

    from petclf import quick_learner
    from petclf.learn.features import cache_features, train_head

    data = args.data
    if args.train_per_class or args.valid_per_class:
        data = subset(args.data, Path(tempfile.mkdtemp()) / "data", train=args.train_per_class,
                      valid=args.valid_per_class)
    learn = quick_learner(data, arch=ARCH, size=args.size, precision="fp32")
    start = time.perf_counter()
    both = cache_features(learn, mirror=True)
    print(f"features of {both.images} views in {time.perf_counter() - start:.1f} s "
          f"({both.seconds_per_image * 1000:.1f} ms each)")
    plain = cache_features(learn, mirror=False)
    head0 = {k: v.clone() for k, v in learn.model[1].state_dict().items()}
    print(f"{'views':<8}{'epochs':>7}{'lr':>8}{'valid error (mean of seeds)':>30}{'best epoch':>12}")
    for views, feats in (("plain", plain), ("mirror", both)):
        for epochs in (1, 5, 10, 20):
            for lr in (2e-3, 1e-2):
                finals, bests = [], []
                for seed in range(args.seeds):
                    set_seed(seed)
                    learn.model[1].load_state_dict(head0)
                    head_learn = train_head(learn, feats, epochs, lr, show_bar=False)
                    errors = [float(v[2]) for v in head_learn.recorder.values]
                    finals.append(errors[-1])
                    bests.append(min(errors))
                print(f"{views:<8}{epochs:>7}{lr:>8.0e}{sum(finals) / len(finals):>30.4f}"
                      f"{sum(bests) / len(bests):>12.4f}", flush=True)


if __name__ == "__main__":
    main()
