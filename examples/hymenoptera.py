"""Ants vs bees: ResNet18 as a fixed feature extractor next to full fine-tuning (the PyTorch tutorial).

As in the tutorial, the final layer is replaced by a 2-class ``Linear``; the feature extractor
trains only that layer, fine-tuning trains every layer; both use SGD with momentum 0.9 and a
learning rate divided by 10 every 7 epochs. petclf supplies the data, devices, precision,
metrics and reports; the network is a plain torchvision module passed as ``arch``.

Usage:
    python examples/hymenoptera.py --data hymenoptera_data --weights resnet18-f37072fd.pth
    python examples/hymenoptera.py                 # downloads data and weights (needs internet)
    python examples/hymenoptera.py --smoke         # seconds, offline, generated data
"""
from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import torchvision
from fastai.callback.schedule import ParamScheduler
from fastai.optimizer import SGD
from torch import nn

from petclf import interpret, quick_learner
from petclf.learn.models import read_state_dict

DATA_URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"


def resnet18_two_classes(weights: str | None, *, pretrained: bool) -> nn.Module:
    if weights:
        model = torchvision.models.resnet18(weights=None)
        model.load_state_dict(read_state_dict(weights))
    else:
        model = torchvision.models.resnet18(weights="DEFAULT" if pretrained else None)
    model.fc = nn.Linear(model.fc.in_features, 2)
    return model


def step_lr(lr: float, epochs: int, *, every: int = 7, gamma: float = 0.1):
    """The tutorial's StepLR as a fastai schedule (a function of the share of training done)."""
    return lambda pos: lr * gamma ** (int(pos * epochs) // every)


def run(data: Path, *, fixed: bool, weights: str | None, pretrained: bool, epochs: int, size: int) -> float:
    model = resnet18_two_classes(weights, pretrained=pretrained)
    if fixed:
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith("fc.")
    learn = quick_learner(data, arch=model, size=size, bs=4 if size > 64 else 16, pretrained=False)
    learn.opt_func = partial(SGD, mom=0.9)
    learn.fit(epochs, lr=1e-3, cbs=ParamScheduler({"lr": step_lr(1e-3, epochs)}))
    return interpret(learn).metrics()["accuracy"]


def download(dest: Path) -> Path:
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(DATA_URL, str(dest))
    except Exception as err:  # noqa: BLE001
        raise SystemExit(f"could not download {DATA_URL} ({err}); pass --data PATH of a local copy.")
    return dest / "hymenoptera_data"


def main() -> None:
    parser = argparse.ArgumentParser(description="ants vs bees: feature extractor vs fine-tuning")
    parser.add_argument("--data", default=None, help="hymenoptera_data folder (train/ and val/)")
    parser.add_argument("--weights", default=None, help="local ImageNet weights for resnet18 (offline)")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--smoke", action="store_true", help="a few seconds on generated data")
    args = parser.parse_args()
    if args.smoke:
        from _smoke import split_classes

        data = split_classes("hymenoptera", ["ants", "bees"], {"train": 0.7, "val": 0.3})
        options = dict(weights=None, pretrained=False, epochs=2, size=32)
    else:
        data = Path(args.data) if args.data else download(Path("data"))
        options = dict(weights=args.weights, pretrained=True, epochs=args.epochs, size=224)
    fixed = run(data, fixed=True, **options)
    full = run(data, fixed=False, **options)
    print(f"validation accuracy: fixed feature extractor {fixed:.2%}, full fine-tuning {full:.2%}")


if __name__ == "__main__":
    main()
