"""Training to a time budget: measure a few steps, then plan epochs and steps so the whole job ends in time.

The plan is made in training steps, not whole epochs, so that a budget shorter than one
epoch still trains a model (each epoch then stops after the planned number of batches of its
shuffled order, and the one-cycle schedule is shaped for those steps), and a budget between
two epoch counts is not left half unused.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import torch
from fastai.callback.core import Callback, CancelFitException, CancelTrainException
from fastai.learner import Learner

from petclf.core import log
from petclf.learn.distributed import bare
from petclf.learn.precision import autocast_for, channels_last_for

__all__ = ["FORWARD_SHARE", "BudgetPlan", "StepCap", "Deadline", "plan_budget", "measure_step"]

#: A forward pass costs about this share of a training step (forward + backward + update).
FORWARD_SHARE = 0.35
#: Seconds from the last training step to the last file written that do not grow with the data
#: (model file, plots, report), measured at 1–3 s on a 2-core CPU; kept as a reserve.
WRITE_SECONDS = 3.0
#: Share of the budget held back for what the measurement cannot see (a slower moment of the machine).
SLACK = 0.04


@dataclass(frozen=True)
class BudgetPlan:
    """How a time budget is spent; recorded in summary.json."""

    budget_s: float  # the whole job's budget
    left_s: float  # what was left of it when training was planned
    step_s: float  # measured seconds per training batch
    epochs: int  # planned epochs (whole or shortened)
    steps_per_epoch: int  # training batches per epoch (≤ the loader's length)
    full_epoch_steps: int  # the loader's length
    planned_train_s: float  # epochs × (steps × step_s + validation)
    reserve_s: float  # kept for evaluation and files after training

    def as_dict(self) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def measure_step(learn: Learner, *, steps: int = 2) -> float:
    """Seconds per training batch of ``learn`` (data loading included), timed on a copy of its network.

    The first batch pays one-time costs and is not counted; the learner's weights, optimizer and
    random state are not touched.

    Example: ``measure_step(learn)`` → ``0.41``.
    """
    model = copy.deepcopy(bare(learn.model)).train()
    if channels_last_for(learn):
        model = model.to(memory_format=torch.channels_last)
    loss_func = learn.loss_func
    times: list[float] = []
    with torch.random.fork_rng(devices=[]):
        batches = iter(learn.dls.train)
        for _ in range(steps + 1):
            start = time.perf_counter()
            try:
                *xb, yb = next(batches)
            except StopIteration:
                break
            if channels_last_for(learn):
                xb = [x.contiguous(memory_format=torch.channels_last) for x in xb]
            with autocast_for(learn):
                pred = model(*xb)
            loss_func(pred.float(), yb).backward()
            times.append(time.perf_counter() - start)
    del model
    return min(times[1:] or times)


def plan_budget(*, budget_s: float, left_s: float, step_s: float, full_epoch_steps: int, valid_steps: int,
                eval_images: int, bs: int, max_epochs: int | None) -> BudgetPlan:
    """Epochs and steps per epoch that fill ``left_s`` seconds with as many training steps as fit.

    Every epoch ends with a validation pass (``valid_steps`` batches); after training, ``eval_images``
    are predicted once more and the files written — that is held back first.

    Example: ``plan_budget(budget_s=60, left_s=55, step_s=0.5, full_epoch_steps=22, valid_steps=6,
    eval_images=359, bs=64, max_epochs=None).epochs`` → ``3``.
    """
    forward = FORWARD_SHARE * step_s
    reserve = WRITE_SECONDS + forward * math.ceil(eval_images / bs) + SLACK * budget_s
    usable = max(left_s - reserve, 0.0)
    valid_s = forward * valid_steps
    best_epochs, best_steps = 1, 1
    limit = max_epochs or 10_000
    for epochs in range(1, limit + 1):
        per_epoch = (usable / epochs - valid_s) / step_s
        steps = min(full_epoch_steps, math.floor(per_epoch))
        if steps < 1:
            break
        if steps * epochs > best_steps * best_epochs:
            best_epochs, best_steps = epochs, steps
        if steps < full_epoch_steps and epochs * steps < best_epochs * best_steps:
            break  # more, shorter epochs only add validation passes from here on
    return BudgetPlan(budget_s=budget_s, left_s=left_s, step_s=step_s, epochs=best_epochs,
                      steps_per_epoch=best_steps, full_epoch_steps=full_epoch_steps,
                      planned_train_s=best_epochs * (best_steps * step_s + valid_s), reserve_s=reserve)


class StepCap(Callback):
    """Ends every training epoch after ``steps`` batches, with the one-cycle schedule shaped for them."""

    order = -5  # after TrainEvalCallback (-10) has reset the epoch, before the schedulers read it

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def before_batch(self) -> None:
        if not self.training:
            return
        # fastai sets n_iter to the loader's length when the epoch starts; the schedule's progress per
        # batch is 1 / (n_iter × n_epoch), so n_iter = steps makes the cycle end with the last planned step.
        if self.iter == 0:
            self.learn.n_iter = min(self.steps, self.learn.n_iter)
        # Here rather than after the last planned batch, so that every callback has recorded that one.
        if self.iter >= self.steps:
            raise CancelTrainException()


class Deadline(Callback):
    """Stops after an epoch when the next one would end past ``deadline`` (a ``time.perf_counter()`` value)
    by more than half an epoch: a machine that slowed down must not overrun the budget by much."""

    order = 70  # after KeepBest has seen the epoch

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.stopped_after = 0

    def before_epoch(self) -> None:
        self.start = time.perf_counter()

    def after_epoch(self) -> None:
        now = time.perf_counter()
        epoch_s = now - self.start
        if self.epoch + 1 < self.n_epoch and now + 1.5 * epoch_s > self.deadline:
            self.stopped_after = self.epoch + 1
            log.warn(f"time budget: epoch {self.epoch + 1} took {epoch_s:.1f} s, longer than planned; "
                     "training stops here to end in time (the best epoch so far is kept).")
            raise CancelFitException()
