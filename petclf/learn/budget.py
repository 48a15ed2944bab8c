"""Training to a time budget: measure a few steps, then plan epochs and steps so the whole job ends in time.

The plan is made in training steps, not whole epochs, so that a budget shorter than one
epoch still trains a model (each epoch then stops after the planned number of batches of its
shuffled order, and the one-cycle schedule is shaped for those steps), and a budget between
two epoch counts is not left half unused.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from fastai.callback.core import Callback, CancelFitException, CancelTrainException
from fastai.learner import Learner

from petclf.core import log
from petclf.core.atomic import write_json_atomic
from petclf.core.errors import UsageError
from petclf.core.defaults import OOD_FIT_IMAGES
from petclf.core.processes import is_main
from petclf.learn.batchnorm import MAX_BATCHES
from petclf.learn.distributed import bare, broadcast
from petclf.learn.precision import autocast_for, channels_last_for

__all__ = ["FORWARD_SHARE", "INFERENCE_SHARE", "OVERRUN", "PLAN_FILE", "SLACK", "BudgetClock", "BudgetPlan",
           "BudgetTooShort", "Deadline", "StepCap", "measure_step", "plan_budget"]

#: A forward pass costs about this share of a training step (forward + backward + update).
FORWARD_SHARE = 0.35
#: Seconds from the last training step to the last file written that do not grow with the data
#: (model file, plots, report), measured at 1–3 s on a 2-core CPU; kept as a reserve.
WRITE_SECONDS = 3.0
#: Share of the budget held back for what the measurement cannot see (a slower moment of the machine).
SLACK = 0.04
#: An inference forward pass (eval mode, no gradients) costs at most about this share of a training step: measured
#: 0.25 for tf_efficientnet_lite0 (18 of 72 ms per image at 224 px) and 0.29 for resnet34 (44 of 153 ms) on a
#: 2-core CPU. The body features' pace, divided by it, estimates a training step without timing one.
INFERENCE_SHARE = 0.25
#: How far past its budget a job may end before it counts as late: the smallest job that cannot end within it
#: is refused.
OVERRUN = 0.10


class BudgetTooShort(UsageError):
    """A time budget that not even the smallest job fits in (exit code 2)."""


@dataclass(frozen=True)
class BudgetPlan:
    """How a time budget is spent; recorded in summary.json."""

    budget_s: float  # the whole job's budget
    left_s: float  # what was left of it when training was planned
    step_s: float  # measured seconds per training batch
    epochs: int  # planned epochs (whole or shortened)
    steps_per_epoch: int  # training batches per epoch (≤ the loader's length)
    full_epoch_steps: int  # the loader's length
    planned_train_s: float  # epochs × (steps × step_s + valid_s)
    reserve_s: float  # kept for evaluation and files after training
    valid_s: float = 0.0  # estimated seconds of one validation pass

    def as_dict(self) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: object) -> "BudgetPlan":
        """The plan a file recorded, every field checked (a damaged or edited file raises ``ValueError``).

        Example: ``BudgetPlan.from_dict(json.loads(path.read_text()))``.
        """
        if not isinstance(data, dict) or set(data) != {f.name for f in fields(cls)}:
            raise ValueError("not a budget plan")
        counts = ("epochs", "steps_per_epoch", "full_epoch_steps")
        for name, value in data.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not number or value < 0 or (name in counts and value != int(value)):
                raise ValueError(f"{name} is {value!r}")
        if not 1 <= data["steps_per_epoch"] <= data["full_epoch_steps"]:
            raise ValueError(f"steps_per_epoch is {data['steps_per_epoch']!r}")
        return cls(**{k: int(v) if k in counts else float(v) for k, v in data.items()})


def measure_step(learn: Learner, *, steps: int = 2) -> float:
    """Seconds per training batch of ``learn`` (data loading included), timed on a copy of its network.

    The first batch pays one-time costs and is not counted; of the ``steps`` timed after it the fastest
    counts (one timed step of a resnet34 at 128 px still ran 25% slower than the epochs' steps).
    The learner's weights, optimizer and random state are not touched.

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
                eval_images: int, bs: int, max_epochs: int | None, extra_forward: int = 0,
                extra_steps: int = 0) -> BudgetPlan:
    """Epochs and steps per epoch that fill ``left_s`` seconds with as many training steps as fit.

    Every epoch ends with a validation pass (``valid_steps`` batches); after training, ``eval_images``
    are predicted once more and the files written — that is held back first, with ``extra_forward``
    forward-only batches and ``extra_steps`` training batches that run outside the planned epochs
    (BatchNorm refresh, frozen epochs).

    Example: ``plan_budget(budget_s=60, left_s=55, step_s=0.5, full_epoch_steps=22, valid_steps=6,
    eval_images=359, bs=64, max_epochs=None).epochs`` → ``4``.
    """
    forward = FORWARD_SHARE * step_s
    reserve = (WRITE_SECONDS + forward * (math.ceil(eval_images / bs) + extra_forward) + step_s * extra_steps
               + SLACK * budget_s)
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
                      planned_train_s=best_epochs * (best_steps * step_s + valid_s), reserve_s=reserve, valid_s=valid_s)


class _FirstBatches:
    """The first ``n`` batches of a fastai DataLoader (its other attributes pass through)."""

    def __init__(self, dl, n: int) -> None:
        self.dl, self.n = dl, n

    def __len__(self) -> int:
        return min(self.n, len(self.dl))

    def __iter__(self):
        return itertools.islice(iter(self.dl), len(self))

    def __getattr__(self, name: str):
        return getattr(self.dl, name)


class StepCap(Callback):
    """Ends every training epoch after ``steps`` batches, with the one-cycle schedule shaped for them
    (``steps`` may change between epochs: ``Deadline`` adjusts it to the measured pace)."""

    order = -5  # before the callbacks that read the epoch's length

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.last = 0  # batches in the epoch under way

    def before_train(self) -> None:
        # fastai takes the epoch's length from len(learn.dl), and the schedule advances by
        # 1 / (length × epochs) a batch from epoch / epochs: a shorter loader makes each epoch's share of
        # the cycle end with its last planned step. (Cancelling the epoch instead would make fastai's
        # Recorder drop the epoch's training loss.)
        self.learn.dl = _FirstBatches(self.learn.dl, self.steps)
        self.last = len(self.learn.dl)


class Deadline(Callback):
    """Keeps a fit within ``deadline`` (a ``time.perf_counter()`` value), re-planning after each epoch at the
    pace it measured: with a ``StepCap``, the batches of the epochs left are set so that they end at the
    deadline (more or fewer than planned); when not even one batch an epoch fits, the fit is shortened —
    the one-cycle schedule then ends with the new last epoch — or stopped.

    The first plan comes from a few timed steps, which leave out per-epoch costs (validation set-up,
    checkpoints, callbacks) and include a warm-up; the epochs measure them.
    """

    order = 75  # after KeepBest and Checkpoint have taken in the epoch

    def __init__(self, deadline: float, *, cap: StepCap | None = None, full_steps: int = 0,
                 valid_s: float = 0.0) -> None:
        self.deadline, self.cap, self.full_steps, self.valid_s = deadline, cap, full_steps, valid_s

    def before_fit(self) -> None:
        self.fit_start = time.perf_counter()
        self.epochs_timed = 0
        self.planned_at_start = self.n_epoch

    def before_epoch(self) -> None:
        self.start = time.perf_counter()

    def after_batch(self) -> None:
        # The epochs' plan comes from an estimate; a batch that would leave no time for the validation after it
        # ends the epoch's training here (the validation still runs, and the best epoch is kept).
        if self.training and time.perf_counter() > self.deadline - self.valid_s:
            raise CancelTrainException()

    def after_cancel_epoch(self) -> None:
        self.skipped = True  # on resume, fastai cancels the epochs already done

    def after_epoch(self) -> None:
        if getattr(self, "skipped", False):
            self.skipped = False
            return
        self.epochs_timed += 1
        done, planned = self.epoch + 1, self.n_epoch
        if done >= planned:
            if planned < self.planned_at_start:
                raise CancelFitException()  # fastai counts to the n_epoch the fit began with
            return
        now = time.perf_counter()
        if self.cap is not None and self.cap.last:
            step_s = max(now - self.start - self.valid_s, 1e-3) / self.cap.last
            steps = min(self.full_steps, math.floor(((self.deadline - now) / (planned - done) - self.valid_s) / step_s))
            if steps >= 1:
                if abs(steps - self.cap.steps) > max(1, self.cap.steps // 10):
                    log.info(f"time budget: {step_s:.2f} s per batch measured; {steps} batches an epoch from here "
                             f"(planned {self.cap.steps})")
                self.cap.steps = steps
                return
        pace = (now - self.fit_start) / self.epochs_timed  # seconds per epoch, one-time costs included
        fits = done + max(0, math.floor((self.deadline - now) / pace))
        if fits >= planned:
            return
        if fits == done:
            log.warn(f"time budget: epochs take {pace:.1f} s, longer than planned; training stops after epoch "
                     f"{done} to end in time (the best epoch so far is kept).")
            raise CancelFitException()
        log.info(f"time budget: epochs take {pace:.1f} s, longer than planned: {fits} epochs instead of {planned}, "
                 "the learning-rate schedule shortened to match")
        # fastai advances the schedule by 1 / (batches × n_epoch) a batch from epoch / n_epoch at each epoch's
        # start, so a smaller n_epoch compresses the rest of the cycle to end with the new last epoch.
        self.learn.n_epoch = fits


#: The plan of a budgeted run, beside its checkpoints: a resumed run keeps the schedule it started with.
PLAN_FILE = "budget.json"
#: Seconds per batch of a head-only epoch on cached features (a small MLP on feature rows), with a margin: 10 epochs
#: on 1,500 rows took under a second on a 2-core CPU. Held back for them when a budget is checked.
HEAD_BATCH_S = 0.004
#: Images of the feature pass (after its first batch) whose pace decides whether the smallest job fits the budget.
PACE_IMAGES = 256
#: An all-layer phase shorter than this many batches (or one epoch, when that is shorter) is not worth its cost
#: after a trained head: a budget that leaves less trains the head alone.
MIN_BODY_STEPS = 50


class BudgetClock:
    """Keeps a training job within ``budget_s`` seconds counted from ``started`` (a ``time.perf_counter()`` value).

    For a pretrained body on cached features, the feature pass is the measurement: its first
    batches tell whether the smallest job (features, head, evaluation, files) can end within the
    budget (+``OVERRUN``) — if not, the job is refused there, saying what it needs — and its pace
    estimates the all-layer steps, which run only when at least one useful epoch fits. Otherwise
    a training step is timed (``measure_step``).

    Example: ``clock = BudgetClock(learn, budget_s=60, started=t0)``; ``plan = clock.plan(max_epochs=5, …)``.
    """

    def __init__(self, learn: Learner, *, budget_s: float, started: float, head_epochs: int = 0) -> None:
        self.learn, self.budget_s, self.started = learn, budget_s, started
        self.forward_s_per_image: float | None = None  # measured by the feature pass, when there is one
        self.head_epochs = head_epochs
        self._first: tuple[int, float] | None = None
        self._checked = False

    def eval_images(self) -> int:
        """Images the evaluation after training predicts (validation and test; for a single-label model also the
        "unknown" detector's pass over training images and validation images)."""
        holder = getattr(self.learn, "petclf_spec", None)
        if holder is None:
            return len(self.learn.dls.valid_ds)
        dataset = holder.dataset
        ood = 0 if dataset.multi_label else min(dataset.count("train"), OOD_FIT_IMAGES) + dataset.count("valid")
        return dataset.count("valid") + dataset.count("test") + ood

    def check_head(self, done: int, total: int, elapsed: float) -> None:
        """Progress hook of the feature pass: once the pace is known, refuse a budget the smallest job cannot keep."""
        if self._checked:
            return
        if self._first is None:  # the first batch pays one-time costs: the pace is taken after it
            self._first = (done, elapsed)
            return
        counted = done - self._first[0]
        # One batch's pace ran 20-30% slow on a 2-core CPU (a 30 s budget that the job kept was refused): a few
        # batches, or a tenth of the pass, make the estimate.
        if counted < min(PACE_IMAGES, total // 10) and done < total:
            return
        pace = (elapsed - self._first[1]) / counted
        self._checked = True
        now = time.perf_counter() - self.started
        features_left = pace * (total - done)
        evaluation = pace * self.eval_images()
        rows = total - len(self.learn.dls.valid.dataset)  # training views: the head's batches come from them
        heads = HEAD_BATCH_S * self.head_epochs * math.ceil(rows / self.learn.dls.train.bs)
        needed = now + features_left + heads + evaluation + WRITE_SECONDS
        if needed > self.budget_s * (1 + OVERRUN):
            raise BudgetTooShort(
                f"time budget {self.budget_s:.0f} s is too short: the smallest job — set-up {now - elapsed:.0f} s, "
                f"body features of {total} images ≈ {pace * total:.0f} s, the head ≈ {heads:.0f} s, evaluation ≈ "
                f"{evaluation:.0f} s, files ≈ {WRITE_SECONDS:.0f} s — needs about {needed:.0f} s. Pass --time-budget "
                f"{math.ceil(needed * (1 + SLACK))}s or more, a smaller --size, or a faster body.")

    def plan(self, *, max_epochs: int | None, pretrained: bool, head_left: int, stored: Path | None,
             resume_from: int) -> BudgetPlan:
        """The all-layer epochs and batches per epoch that fit in what is left (``epochs=0``: the head alone).

        ``max_epochs`` caps the epochs (None: as many as fit; 0: the head alone). ``stored`` is where the plan is
        kept for a resumed run (read when ``resume_from`` > 0, else written).
        """
        if resume_from and stored is not None and stored.is_file():
            try:
                return BudgetPlan.from_dict(json.loads(stored.read_text()))
            except (OSError, ValueError) as err:
                log.warn(f"{stored} cannot be read ({err}): the rest of the run is planned again.")
        learn = self.learn
        full = len(learn.dls.train)
        left = self.budget_s - (time.perf_counter() - self.started)
        extra_forward, extra_steps = min(MAX_BATCHES, full), 0
        if self.forward_s_per_image is not None:
            step_s = self.forward_s_per_image * learn.dls.train.bs / INFERENCE_SHARE
        else:
            step_s = broadcast(measure_step(learn))  # every process follows process 0's plan
            extra_steps = full * head_left  # head-only epochs through the whole body, when not on cached features
        plan = plan_budget(budget_s=self.budget_s, left_s=left, step_s=step_s, full_epoch_steps=full,
                           valid_steps=len(learn.dls.valid), eval_images=self.eval_images(), bs=learn.dls.valid.bs,
                           max_epochs=max_epochs, extra_forward=extra_forward, extra_steps=extra_steps)
        fits = plan.planned_train_s + plan.reserve_s <= left
        if pretrained and self.forward_s_per_image is not None and (
                max_epochs == 0 or not fits or plan.epochs * plan.steps_per_epoch < min(MIN_BODY_STEPS, full)):
            needed = min(MIN_BODY_STEPS, full) * step_s + plan.valid_s
            if max_epochs != 0:
                log.info(f"time budget {self.budget_s:.0f} s: {max(left, 0):.0f} s left after the head; a useful "
                         f"all-layer phase needs about {needed + plan.reserve_s:.0f} s at {step_s:.2f} s per batch "
                         "(estimated): the head alone is trained")
            plan = replace(plan, epochs=0, steps_per_epoch=0, planned_train_s=0.0)
        elif not fits:
            log.warn(f"time budget {self.budget_s:.0f} s: even one shortened epoch does not fit in the "
                     f"{max(left, 0):.0f} s left after setting up; training {plan.steps_per_epoch} step(s) anyway, "
                     "so the run ends late.")
        if plan.epochs:
            log.info(f"time budget {self.budget_s:.0f} s: {left:.0f} s left for training at {step_s:.2f} s per batch"
                     f" → {plan.epochs} epoch(s) of {plan.steps_per_epoch}/{full} batches")
        if stored is not None and is_main():
            write_json_atomic(stored, plan.as_dict())
        return plan

    def callbacks(self, plan: BudgetPlan) -> list[Callback]:
        """The callbacks that keep the all-layer epochs to ``plan`` (none for a head-only plan)."""
        if not plan.epochs:
            return []
        cap = StepCap(plan.steps_per_epoch)
        # The training deadline: the budget's end less what the evaluation and the files need (the slack the
        # plan held back is the training's to use).
        deadline = self.started + plan.budget_s - plan.reserve_s + SLACK * plan.budget_s
        return [cap, Deadline(deadline, cap=cap, full_steps=plan.full_epoch_steps, valid_s=plan.valid_s)]
