"""Frozen-body training on cached features: run the body once, then train only the head.

With the body frozen, fastai still runs every image through it every epoch (and back,
because BatchNorm stays trainable). Here the body runs once per image (validation
transforms, eval mode) and the head trains on the pooled features, so each extra frozen
epoch costs milliseconds. Trade-off: no augmentation during these epochs and the body's
BatchNorm statistics stay as they are; the unfrozen phase that follows trains both.
"""
from __future__ import annotations

from contextlib import ExitStack

import fastai.callback.progress  # noqa: F401 - Learner.no_bar, used here
import fastai.callback.schedule  # noqa: F401 - Learner.fit_one_cycle, used here
import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.layers import AdaptiveConcatPool2d
from fastai.learner import Learner
from torch import nn

from petclf.learn.precision import autocast_for, channels_last_for
from petclf.runtime.network import ConcatPool2d

__all__ = ["supports_feature_cache", "train_head"]


def supports_feature_cache(learn: Learner) -> bool:
    """True for fastai-style ``Sequential(body, head)`` models whose head starts with a pooling layer."""
    model = learn.model
    return (isinstance(model, nn.Sequential) and len(model) == 2 and isinstance(model[1], nn.Sequential)
            and isinstance(model[1][0], (ConcatPool2d, AdaptiveConcatPool2d, nn.AdaptiveAvgPool2d)))


@torch.no_grad()
def _features(learn: Learner, dl) -> tuple[torch.Tensor, torch.Tensor]:
    extractor = nn.Sequential(learn.model[0], learn.model[1][:2]).eval()
    feats, targets = [], []
    channels_last = channels_last_for(learn)
    for xb, yb in dl:
        xb = xb.as_subclass(torch.Tensor)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast_for(learn):
            feats.append(extractor(xb).float())
        targets.append(yb.as_subclass(torch.Tensor))
    return torch.cat(feats), torch.cat(targets)


def train_head(learn: Learner, epochs: int, lr: float, *, cbs: list | None = None,
               pct_start: float = 0.99, show_bar: bool = True) -> Learner:
    """Train ``learn``'s head for ``epochs`` one-cycle epochs on features computed once by its frozen body.

    Returns the small head-only learner (its recorder holds the epochs' figures); the head
    inside ``learn.model`` is trained in place.

    Example: ``train_head(learn, epochs=5, lr=1e-3)``.
    """
    train_items = learn.dls.train.items
    train_dl = learn.dls.test_dl(train_items, with_labels=True, bs=learn.dls.train.bs)
    x_train, y_train = _features(learn, train_dl)
    x_valid, y_valid = _features(learn, learn.dls.valid)
    device = learn.dls.device
    bs = learn.dls.train.bs
    dls = DataLoaders(
        DataLoader(list(zip(x_train, y_train)), bs=bs, shuffle=True, drop_last=len(x_train) > bs, device=device),
        DataLoader(list(zip(x_valid, y_valid)), bs=bs * 2, device=device),
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
