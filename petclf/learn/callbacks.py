"""The recipe's fastai callbacks: the epoch history, the best epoch across phases, early and non-finite stops."""
from __future__ import annotations

import math
import time

import pandas as pd
import torch
from fastai.callback.core import Callback, CancelFitException
from torch import nn

from petclf.learn.distributed import bare
from petclf.learn.epochs import CompletedEpochCallback
from petclf.learn.task import selection_key

__all__ = ["HISTORY_COLUMNS", "EarlyStop", "History", "KeepBest", "StopOnNonFinite"]

#: history.csv's columns for a single-label task (multi-label: accuracy_multi and f1_micro instead of the
#: error rate and accuracy).
HISTORY_COLUMNS = ["epoch", "phase", "train_loss", "valid_loss", "error_rate", "accuracy", "seconds"]


class History(CompletedEpochCallback):
    """Records one row per epoch and the smoothed batch losses; prints a plain line per epoch if asked."""

    order = 60  # after fastai's Recorder (50), which computes the epoch's values

    def __init__(self, *, total_epochs: int, print_lines: bool, rows: list[dict] | None = None,
                 batch_losses: list[float] | None = None) -> None:
        self.total_epochs, self.print_lines = total_epochs, print_lines
        self.rows: list[dict] = list(rows or [])
        self.batch_losses: list[float] = list(batch_losses or [])
        self.phase_override: str | None = None  # set while a head-only learner trains the frozen phase

    def before_fit(self) -> None:
        opt = self.learn.opt
        self.phase = self.phase_override or ("frozen" if opt is not None and opt.frozen_idx > 0 else "unfrozen")

    def before_epoch(self) -> None:
        super().before_epoch()
        self.start = time.perf_counter()

    def after_batch(self) -> None:
        if self.training:
            self.batch_losses.append(float(self.learn.smooth_loss))

    def after_completed_epoch(self) -> None:
        values = self.epoch_values()
        row = {"epoch": len(self.rows) + 1, "phase": self.phase, **values,
               "seconds": round(time.perf_counter() - self.start, 2)}
        self.rows.append(row)
        if self.print_lines:
            figures = "  ".join(f"{name} {value:.4f}" for name, value in values.items())
            print(f"epoch {row['epoch']}/{self.total_epochs} {row['phase']:<8} {figures}  {row['seconds']:.1f}s",
                  flush=True)

    def frame(self) -> pd.DataFrame:
        # Each row holds its columns in order: epoch, phase, the losses, the task's metrics, seconds.
        return pd.DataFrame(self.rows) if self.rows else pd.DataFrame(columns=HISTORY_COLUMNS)


class StopOnNonFinite(Callback):
    """Stops training at the first batch whose loss is NaN or infinite, and remembers where.

    Every step after such a batch would train on NaN weights; the epochs before it stay usable.
    """

    order = -9  # before the callbacks that record the batch

    def __init__(self) -> None:
        self.message = ""

    # Before the backward pass, so no step is taken with a NaN gradient.
    def after_loss(self) -> None:
        if self.training and not torch.isfinite(self.learn.loss).all():
            self.message = (f"the training loss became {float(self.learn.loss.detach())} in epoch {self.learn.epoch + 1}, "
                            f"batch {self.learn.iter + 1}")
            raise CancelFitException()


class KeepBest(CompletedEpochCallback):
    """Remember the weights of the epoch with the lowest validation error (multi-label: highest micro-F1;
    ties: lower valid loss) across every phase of the recipe, and put them back when training ends.

    ``model`` is the whole network: the head-only epochs on cached features run on a small learner of the head
    alone, and the best of those epochs is the whole network as it stood then.
    """

    order = 65

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.best_key: tuple[float, float] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = 0
        self.epochs_seen = 0
        self.current_is_best = True

    def after_completed_epoch(self) -> None:
        self.epochs_seen += 1
        key = selection_key(self.epoch_values())
        # An epoch whose validation loss is NaN or infinite holds broken weights: never the one to keep.
        self.current_is_best = math.isfinite(key[1]) and (self.best_key is None or key < self.best_key)
        if self.current_is_best:
            self.best_key, self.best_epoch = key, self.epochs_seen
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in bare(self.model).state_dict().items()}

    @property
    def epochs_since_best(self) -> int:
        return self.epochs_seen - self.best_epoch

    def restore(self) -> None:
        """Put the best epoch's weights back into the network (once the whole recipe has run)."""
        if self.best_state is not None and not self.current_is_best:
            bare(self.model).load_state_dict(self.best_state)
            self.current_is_best = True


class EarlyStop(CompletedEpochCallback):
    """Ends a fit once ``patience`` epochs in a row have not beaten the best epoch of any phase so far.

    The weights are not touched: ``KeepBest`` restores the best ones when the recipe ends.
    """

    order = 66  # right after KeepBest has judged the epoch

    def __init__(self, best: KeepBest, *, patience: int) -> None:
        self.best, self.patience = best, patience
        self.stopped_after = 0  # the epoch (numbered across phases) after which a fit was ended

    def after_completed_epoch(self) -> None:
        if self.best.epochs_since_best >= self.patience and self.epoch + 1 < self.n_epoch:
            self.stopped_after = self.best.epochs_seen
            raise CancelFitException()
