"""The training recipe: lr_find, one-cycle training (fine-tuning when pretrained), best-epoch restore."""
from __future__ import annotations

import math
import tempfile
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from fastai.callback.core import Callback
from fastai.learner import Learner

from . import _log
from .errors import UsageError

__all__ = ["History", "KeepBest", "TrainResult", "find_lr", "train"]

HISTORY_COLUMNS = ["epoch", "phase", "train_loss", "valid_loss", "error_rate", "accuracy", "seconds"]


class History(Callback):
    """Records one row per epoch and the smoothed batch losses; prints a plain line per epoch if asked."""

    order = 60  # after fastai's Recorder (50), which computes the epoch's values

    def __init__(self, *, total_epochs: int, print_lines: bool) -> None:
        self.total_epochs, self.print_lines = total_epochs, print_lines
        self.rows: list[dict] = []
        self.batch_losses: list[float] = []

    def before_fit(self) -> None:
        opt = self.learn.opt
        self.phase = "frozen" if opt is not None and opt.frozen_idx > 0 else "unfrozen"

    def before_epoch(self) -> None:
        self.start = time.perf_counter()

    def after_batch(self) -> None:
        if self.training:
            self.batch_losses.append(float(self.learn.smooth_loss))

    def after_epoch(self) -> None:
        names = list(self.learn.recorder.metric_names[1:-1])  # drop 'epoch' and 'time'
        values = dict(zip(names, (float(v) for v in self.learn.recorder.values[-1])))
        row = {"epoch": len(self.rows) + 1, "phase": self.phase,
               **{k: values.get(k, math.nan) for k in HISTORY_COLUMNS[2:6]},
               "seconds": round(time.perf_counter() - self.start, 2)}
        self.rows.append(row)
        if self.print_lines:
            print(f"epoch {row['epoch']}/{self.total_epochs} {row['phase']:<8} train_loss {row['train_loss']:.4f}  "
                  f"valid_loss {row['valid_loss']:.4f}  error_rate {row['error_rate']:.4f}  "
                  f"accuracy {row['accuracy']:.4f}  {row['seconds']:.1f}s", flush=True)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=HISTORY_COLUMNS)


class KeepBest(Callback):
    """Remember the weights of the epoch with the lowest validation error (ties: lower valid loss)
    and put them back when training ends."""

    order = 65

    def __init__(self) -> None:
        self.best_key: tuple[float, float] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = 0
        self.epochs_seen = 0
        self.current_is_best = True

    def after_epoch(self) -> None:
        names = list(self.learn.recorder.metric_names[1:-1])
        values = dict(zip(names, (float(v) for v in self.learn.recorder.values[-1])))
        self.epochs_seen += 1
        key = (values.get("error_rate", math.nan), values.get("valid_loss", math.nan))
        self.current_is_best = self.best_key is None or key < self.best_key
        if self.current_is_best:
            self.best_key, self.best_epoch = key, self.epochs_seen
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.learn.model.state_dict().items()}

    def after_fit(self) -> None:
        if self.best_state is not None and not self.current_is_best:
            self.learn.model.load_state_dict(self.best_state)
            self.current_is_best = True


@dataclass(frozen=True)
class TrainResult:
    """What a training run measured; ``history`` has one row per epoch."""

    history: pd.DataFrame = field(repr=False)
    lr: float
    best_epoch: int
    seconds: float
    batch_losses: list[float] = field(repr=False)

    @property
    def best(self) -> dict:
        return self.history.iloc[self.best_epoch - 1].to_dict()


def _show_bar(progress: bool | None) -> bool:
    return sys.stdout.isatty() if progress is None else progress


def _quiet_unless(show_bar: bool, learn: Learner) -> ExitStack:
    """Without a bar, also silence fastai's raw per-epoch print: History prints a clean line instead."""
    stack = ExitStack()
    if not show_bar:
        stack.enter_context(learn.no_bar())
        stack.enter_context(learn.no_logging())
    return stack


def find_lr(learn: Learner, *, progress: bool | None = None) -> float:
    """Run fastai's ``lr_find`` and return its 'valley' suggestion (the curve stays on the learner's recorder).

    Example: ``lr = find_lr(learn)`` → ``0.0012``.
    """
    saved_path = learn.path
    # lr_find saves the weights to learn.path and restores them; keep that scratch file out of the data folder.
    with tempfile.TemporaryDirectory(prefix="petclf-lr-find-") as scratch, _quiet_unless(_show_bar(progress), learn):
        learn.path = Path(scratch)
        try:
            suggestion = learn.lr_find(show_plot=False)
        finally:
            learn.path = saved_path
    lr = float(suggestion.valley)
    if not math.isfinite(lr) or lr <= 0:
        raise UsageError("lr_find could not suggest a learning rate (the loss never fell); pass lr= / --lr.")
    _log.info(f"lr_find suggests lr {lr:.2e}")
    return lr


def train(learn: Learner, *, epochs: int = 5, freeze_epochs: int = 1, lr: float | None = None,
          keep_best: bool = True, progress: bool | None = None) -> TrainResult:
    """Train ``learn``: fine-tune (frozen head first) when its body is pretrained, else train all layers.

    With ``lr=None`` the learning rate comes from ``lr_find``. When ``keep_best`` is on, the
    weights of the best validation epoch are restored at the end.

    Example: ``result = train(learn, epochs=4)``; ``result.history`` has one row per epoch.
    """
    if epochs < 1 or freeze_epochs < 0:
        raise UsageError(f"epochs must be ≥ 1 and freeze_epochs ≥ 0. Received: epochs={epochs}, "
                         f"freeze_epochs={freeze_epochs}.")
    if lr is None:
        lr = find_lr(learn, progress=progress)
    pretrained = learn.opt is not None and learn.opt.frozen_idx > 0 or _body_frozen(learn)
    freeze_epochs = freeze_epochs if pretrained else 0
    history = History(total_epochs=epochs + freeze_epochs, print_lines=not _show_bar(progress))
    cbs: list[Callback] = [history] + ([KeepBest()] if keep_best else [])
    start = time.perf_counter()
    with _quiet_unless(_show_bar(progress), learn):
        if pretrained:
            learn.fine_tune(epochs, base_lr=lr, freeze_epochs=freeze_epochs, cbs=cbs)
        else:
            # A random body gains nothing from a frozen phase: train every layer from the start.
            learn.unfreeze()
            learn.fit_one_cycle(epochs, lr, cbs=cbs)
    seconds = time.perf_counter() - start
    best = cbs[1].best_epoch if keep_best else len(history.rows)
    if keep_best and best != len(history.rows):
        _log.info(f"restored the weights of epoch {best} (best validation error)")
    return TrainResult(history=history.frame(), lr=lr, best_epoch=best, seconds=seconds,
                       batch_losses=history.batch_losses)


def _body_frozen(learn: Learner) -> bool:
    first = next(iter(learn.model.parameters()), None)
    return first is not None and not first.requires_grad
