"""CIFAR-10 from scratch with a small CNN (the PyTorch CIFAR-10 tutorial's network), through petclf.

The network is 14 layers: (Conv-BN-ReLU) ×2, MaxPool, (Conv-BN-ReLU) ×2, then a Linear
classifier — a plain ``nn.Module`` passed as ``arch``. The run ends with the tutorial's
"accuracy of each class" table (per-class figures on the test set).

Usage:
    python examples/cifar10_scratch.py                 # downloads CIFAR-10 with fastai (needs internet)
    python examples/cifar10_scratch.py --data PATH     # a folder with train/ and test/ class folders
    python examples/cifar10_scratch.py --smoke         # seconds, offline, generated data
"""
from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from petclf import interpret, quick_learner, train


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def small_cnn(n_classes: int = 10) -> nn.Module:
    """Conv-BN-ReLU ×2, MaxPool, Conv-BN-ReLU ×2, global pooling, Linear."""
    return nn.Sequential(
        *conv_bn_relu(3, 32), *conv_bn_relu(32, 64), nn.MaxPool2d(2),
        *conv_bn_relu(64, 128), *conv_bn_relu(128, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, n_classes),
    )


def cifar10(data: str | None) -> Path:
    if data:
        return Path(data)
    from fastai.data.external import URLs, untar_data

    try:
        return untar_data(URLs.CIFAR)
    except Exception as err:  # noqa: BLE001
        raise SystemExit(f"could not download CIFAR-10 ({err}); pass --data PATH of a local copy.")


def main() -> None:
    parser = argparse.ArgumentParser(description="CIFAR-10 from scratch with a small CNN")
    parser.add_argument("--data", default=None, help="CIFAR-10 folder with train/ and test/")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="a few seconds on generated data")
    args = parser.parse_args()
    if args.smoke:
        from _smoke import split_classes

        data = split_classes("cifar10", ["airplane", "automobile", "bird", "cat"], {"train": 0.75, "test": 0.25})
        epochs = 2
    else:
        data, epochs = cifar10(args.data), args.epochs
    n_classes = sum(1 for d in (data / "train").iterdir() if d.is_dir())
    learn = quick_learner(data, arch=small_cnn(n_classes), size=32, bs=64, pretrained=False, augment="no-flip"
                          if args.smoke else "standard", valid_pct=0.1)
    train(learn, epochs=epochs, lr=3e-3)
    per_class = interpret(learn, split="test").per_class()
    print("accuracy of each class (test set):")
    for name, row in per_class.iterrows():
        print(f"  {name:>14}: {row['accuracy']:.1%}  ({int(row['support'])} images)")


if __name__ == "__main__":
    main()
