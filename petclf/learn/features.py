"""Frozen-body training on cached features: run the body once, then train only the head.

With the body frozen, fastai still runs every image through it every epoch (and back,
because BatchNorm stays trainable). Here the body runs once per image and view (validation
transforms, eval mode) and the head trains on the pooled features, so each head epoch costs
milliseconds. The mirror image of each training photo is a second cached view when the
augmentation allows flips. Trade-off: no other augmentation during these epochs, and the
body's BatchNorm statistics stay the pretrained ones (the unfrozen phase that follows, when
there is one, trains both).
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable

import fastai.callback.progress  # noqa: F401 - Learner.no_bar, used here
import fastai.callback.schedule  # noqa: F401 - Learner.fit_one_cycle, used here
import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.layers import AdaptiveConcatPool2d
from fastai.learner import Learner
from torch import nn

from petclf.learn.precision import autocast_for, autocast_of, channels_last_for
from petclf.runtime.network import ConcatPool2d

__all__ = ["CachedFeatures", "cache_features", "supports_feature_cache", "train_head"]

#: Called after each batch of the feature pass with (images done, images in all, seconds so far); it may raise
#: to stop the pass (a time budget that cannot be kept).
Progress = Callable[[int, int, float], None]


def supports_feature_cache(learn: Learner) -> bool:
    """True for fastai-style ``Sequential(body, head)`` models whose head starts with a pooling layer."""
    model = learn.model
    return (isinstance(model, nn.Sequential) and len(model) == 2 and isinstance(model[1], nn.Sequential)
            and isinstance(model[1][0], (ConcatPool2d, AdaptiveConcatPool2d, nn.AdaptiveAvgPool2d)))


@dataclass(frozen=True)
class CachedFeatures:
    """Pooled body features of the training views and the validation images, and what computing them cost."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_valid: torch.Tensor
    y_valid: torch.Tensor
    seconds: float  # the whole feature pass
    images: int  # forward passes made (training images × views + validation images)

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(self.images, 1)


def cache_features(learn: Learner, *, mirror: bool, progress: Progress | None = None,
                   precision: str | None = None) -> CachedFeatures:
    """Run ``learn``'s body once over the training images (and their mirror images with ``mirror``) and the
    validation images, with validation transforms, and keep the pooled features.

    ``precision`` ('fp32' or 'bf16'/'fp16' autocast) is the pass's own; None: the learner's training precision.

    Example: ``feats = cache_features(learn, mirror=True)``; ``feats.x_train.shape`` → ``(2 × n_train, 1024)``.
    """
    train_dl = learn.dls.test_dl(learn.dls.train.items, with_labels=True, bs=learn.dls.train.bs)
    channels_last = channels_last_for(learn)
    # The layout training will use anyway (ChannelsLastCallback converts the model at the fit's start).
    if channels_last:
        learn.model.to(memory_format=torch.channels_last)
    extractor = nn.Sequential(learn.model[0], learn.model[1][:2]).eval()
    autocast = autocast_for(learn) if precision is None else autocast_of(precision, learn.dls.device)
    views = 2 if mirror else 1
    total = len(train_dl.dataset) * views + len(learn.dls.valid.dataset)
    start, done = time.perf_counter(), 0
    out: dict[str, tuple[list, list]] = {"train": ([], []), "valid": ([], [])}
    with torch.no_grad():
        for name, dl, n_views in (("train", train_dl, views), ("valid", learn.dls.valid, 1)):
            feats, targets = out[name]
            for xb, yb in dl:
                xb = xb.as_subclass(torch.Tensor)
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                for view in range(n_views):
                    with autocast:
                        feats.append(extractor(xb.flip(-1) if view else xb).float())
                    targets.append(yb.as_subclass(torch.Tensor))
                done += len(xb) * n_views
                if progress is not None:
                    progress(done, total, time.perf_counter() - start)
    return CachedFeatures(torch.cat(out["train"][0]), torch.cat(out["train"][1]), torch.cat(out["valid"][0]),
                          torch.cat(out["valid"][1]), seconds=time.perf_counter() - start, images=done)


class _Rows(torch.utils.data.Dataset):
    """(feature row, target) pairs of two tensors, without copying them into a list of tuples."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def train_head(learn: Learner, features: CachedFeatures, epochs: int, lr: float, *, cbs: list | None = None,
               pct_start: float = 0.99, show_bar: bool = True) -> Learner:
    """Train ``learn``'s head for ``epochs`` one-cycle epochs on ``features`` (see ``cache_features``).

    Returns the small head-only learner (its recorder holds the epochs' figures); the head
    inside ``learn.model`` is trained in place.

    Example: ``train_head(learn, cache_features(learn, mirror=True), epochs=5, lr=1e-3)``.
    """
    device = learn.dls.device
    bs = learn.dls.train.bs
    n_train = len(features.x_train)
    dls = DataLoaders(
        DataLoader(_Rows(features.x_train, features.y_train), bs=bs, shuffle=True, drop_last=n_train > bs,
                   device=device),
        DataLoader(_Rows(features.x_valid, features.y_valid), bs=bs * 2, device=device),
        device=device,
    )
    head = learn.model[1][2:]
    head_learn = Learner(dls, head, loss_func=learn.loss_func, opt_func=learn.opt_func, metrics=learn.metrics,
                         wd=learn.wd, moms=learn.moms, path=learn.path)
    with ExitStack() as stack:
        if not show_bar:
            stack.enter_context(head_learn.no_bar())
            stack.enter_context(head_learn.no_logging())
        head_learn.fit_one_cycle(epochs, lr, pct_start=pct_start, cbs=cbs)
    return head_learn
