"""The training recipe: learning rate, one-cycle training (fine-tuning when pretrained), BatchNorm statistics
for the final weights, best-epoch restore, and a time budget."""
from __future__ import annotations

import json
import math
import tempfile
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import fastai.callback.progress  # noqa: F401 - Learner.no_bar, used here
import fastai.callback.schedule  # noqa: F401 - Learner.lr_find and fit_one_cycle, used here
import pandas as pd
import torch
from fastai.callback.core import Callback, CancelFitException
from fastai.learner import Learner

from petclf.core import log
from petclf.core.errors import TrainingDiverged, UsageError, require_non_negative, require_positive
from petclf.core.atomic import write_json_atomic
from petclf.core.defaults import DEFAULT_LR
from petclf.core.options import DEFAULT_EPOCHS, TrainOptions, parse_duration, require_lr
from petclf.core.processes import is_main, world_size
from petclf.learn.batchnorm import MAX_BATCHES, RefreshBatchNorm
from petclf.learn.budget import SLACK, BudgetPlan, Deadline, StepCap, measure_step, plan_budget
from petclf.learn.checkpoint import Checkpoint, ResumeState
from petclf.learn.distributed import bare, broadcast, distributed
from petclf.learn.epochs import CompletedEpochCallback
from petclf.learn.features import supports_feature_cache, train_head
from petclf.learn.optim import load_opt_state
from petclf.learn.task import selection_key

_DEFAULTS = TrainOptions()

__all__ = ["History", "KeepBest", "StopOnNonFinite", "TrainResult", "find_lr", "train"]

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
    ties: lower valid loss) and put them back when training ends."""

    order = 65

    def __init__(self) -> None:
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
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in bare(self.learn.model).state_dict().items()}

    def restore(self, learn: Learner) -> None:
        """Put the best epoch's weights back into ``learn`` (once the whole recipe has run)."""
        if self.best_state is not None and not self.current_is_best:
            learn.model.load_state_dict(self.best_state)
            self.current_is_best = True


@dataclass(frozen=True)
class TrainResult:
    """What a training run measured; ``history`` has one row per epoch."""

    history: pd.DataFrame = field(repr=False)
    lr: float
    best_epoch: int
    seconds: float
    batch_losses: list[float] = field(repr=False)
    diverged: str = ""  # where the loss turned NaN or infinite, when it did (training stopped there)
    budget: BudgetPlan | None = None  # how a time budget was spent, when there was one

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
    log.info(f"lr_find suggests lr {lr:.2e}")
    return lr


@dataclass(frozen=True)
class Phase:
    """One one-cycle fit of the recipe; fastai's ``fine_tune`` is the frozen + unfrozen pair."""

    name: str  # 'frozen' (head and BatchNorm only) or 'unfrozen' (every layer)
    epochs: int
    lr_max: float | slice
    pct_start: float
    div: float


def plan_phases(*, pretrained: bool, epochs: int, freeze_epochs: int, lr: float) -> list[Phase]:
    """The recipe as phases: fastai's fine_tune for a pretrained body, one all-layer cycle from scratch."""
    if not pretrained:
        # A random body gains nothing from a frozen phase: train every layer from the start.
        return [Phase("unfrozen", epochs, lr, 0.25, 25.0)]
    phases = [Phase("frozen", freeze_epochs, slice(lr), 0.99, 25.0)] if freeze_epochs else []
    # As fine_tune: half the rate, spread 100× across layer groups (discriminative learning rates).
    return phases + [Phase("unfrozen", epochs, slice(lr / 2 / 100, lr / 2), 0.3, 5.0)]


def train(learn: Learner, *, epochs: int | None = _DEFAULTS.epochs, freeze_epochs: int = _DEFAULTS.freeze_epochs,
          lr: float | None = None, lr_find: bool = _DEFAULTS.lr_find, keep_best: bool = True,
          progress: bool | None = None, checkpoints: str | Path | None = None, resume: ResumeState | None = None,
          feature_cache: bool = _DEFAULTS.feature_cache, time_budget: float | str | None = _DEFAULTS.time_budget,
          started: float | None = None, cbs: Sequence[Callback] = ()) -> TrainResult:
    """Train ``learn``: fine-tune (frozen head first) when its body is pretrained, else train all layers.

    With ``lr=None`` the learning rate is ``DEFAULT_LR`` (2e-3; fine-tuning's base rate for a
    pretrained body, as in fastai's ``fine_tune``), or with ``lr_find=True`` lr_find's suggestion.
    Before each fit's last validation, BatchNorm statistics are recomputed for the final weights
    (``petclf.learn.batchnorm``). When ``keep_best`` is on, the
    weights of the best validation epoch are restored at the end. With ``checkpoints`` a
    checkpoint is written after every epoch; pass ``resume=load_checkpoint(dir)`` to go on
    from one. With ``feature_cache`` the frozen epochs train the head on body features
    computed once (see ``petclf.learn.features``).

    ``time_budget`` (seconds, or text such as ``'10m'``) plans the epochs, and the batches per
    epoch, from the measured time of a few steps so that training, evaluation and files end
    within it, counted from ``started`` (a ``time.perf_counter()`` value; default: now). With
    ``epochs`` as well, the smaller wins; without either, ``epochs`` is 5.

    ``cbs`` (fastai callbacks) take part in every epoch of every phase. In the frozen epochs on
    cached features they run on the small head-only learner (``learn.model`` is the head, the
    batches are features); lr_find does not run them.

    Example: ``result = train(learn, epochs=4)``; ``train(learn, time_budget="2m").budget`` is the plan followed.
    """
    started = time.perf_counter() if started is None else started
    if epochs is not None:
        require_positive(epochs=epochs)
    require_non_negative(freeze_epochs=freeze_epochs)
    require_lr(lr)
    budget_s = None if time_budget is None else parse_duration(time_budget)
    pretrained = (learn.opt is not None and learn.opt.frozen_idx > 0) or _body_frozen(learn)
    if resume is not None:
        lr = resume.lr
    elif lr is None and lr_find:
        lr = broadcast(find_lr(learn, progress=progress))  # every process trains with process 0's choice
    elif lr is None:
        lr = DEFAULT_LR
    plan = None
    if budget_s is not None:
        plan = _budget_plan(learn, budget_s=budget_s, started=started, max_epochs=epochs, pretrained=pretrained,
                            freeze_epochs=freeze_epochs, feature_cache=feature_cache, checkpoints=checkpoints,
                            resume=resume)
        epochs = plan.epochs
    phases = plan_phases(pretrained=pretrained, epochs=epochs or DEFAULT_EPOCHS, freeze_epochs=freeze_epochs, lr=lr)
    history = History(total_epochs=sum(p.epochs for p in phases), print_lines=is_main() and not _show_bar(progress),
                      rows=resume.rows if resume else None, batch_losses=resume.batch_losses if resume else None)
    best = KeepBest() if keep_best else None
    stop = StopOnNonFinite()
    user = list(cbs)
    cbs = [stop, history, *user, RefreshBatchNorm()] + ([best] if best else [])
    if checkpoints is not None and is_main():
        cbs.append(Checkpoint(Path(checkpoints), lr=lr, saved_epochs=resume.epochs_done if resume else 0))
    if plan is not None:
        cap = StepCap(plan.steps_per_epoch)
        # The training deadline: the budget's end less what the evaluation and the files need (the slack the
        # plan held back is the training's to use).
        deadline = started + plan.budget_s - plan.reserve_s + SLACK * plan.budget_s
        cbs += [cap, Deadline(deadline, cap=cap, full_steps=plan.full_epoch_steps, valid_s=plan.valid_s)]
    # Heads trained apart in each process would diverge; under a launcher the frozen phase runs data-parallel.
    feature_cache = feature_cache and world_size() <= 1
    done = _restore(learn, resume, best)
    start = time.perf_counter()
    offset = 0
    with _quiet_unless(_show_bar(progress), learn), distributed(learn):
        for phase in phases:
            if stop.message:
                break
            skip = min(max(done - offset, 0), phase.epochs)
            offset += phase.epochs
            if skip == phase.epochs:
                continue
            if phase.name == "frozen" and skip == 0 and feature_cache and supports_feature_cache(learn):
                learn.freeze()
                history.phase_override = "frozen"
                train_head(learn, phase.epochs, float(phase.lr_max.stop), cbs=[stop, history, *user],
                           pct_start=phase.pct_start, show_bar=_show_bar(progress))
                history.phase_override = None
                if best is not None:  # head-only epochs are not candidates, but they are numbered
                    best.epochs_seen = len(history.rows)
                continue
            learn.freeze() if phase.name == "frozen" else learn.unfreeze()
            if resume is not None and skip > 0:
                if not load_opt_state(learn.opt, resume.opt):
                    log.warn("the checkpoint's optimizer state comes from another optimizer (an older petclf?); "
                             "training goes on from its weights with fresh optimizer moments.")
                resume.restore_rng()
            learn.fit_one_cycle(phase.epochs, phase.lr_max, pct_start=phase.pct_start, div=phase.div,
                                cbs=cbs, start_epoch=skip)
    seconds = time.perf_counter() - start
    if stop.message and (best is None or best.best_state is None):
        raise TrainingDiverged(f"{stop.message} (lr {lr:.2e}), before any epoch that could be kept was complete: "
                               "nothing usable was kept. Pass a smaller learning rate (--lr, e.g. 1e-3) and check "
                               "the images for NaN or extreme values.")
    if best is not None:
        best.restore(learn)
    best_epoch = best.best_epoch if best else len(history.rows)
    if stop.message:
        log.warn(f"{stop.message} (lr {lr:.2e}); training stopped and the weights of epoch {best_epoch} "
                 "(the best epoch with a finite loss) were kept.")
    if best is not None and best_epoch != len(history.rows):
        log.info(f"restored the weights of epoch {best_epoch} (best validation error)")
    return TrainResult(history=history.frame(), lr=lr, best_epoch=best_epoch, seconds=seconds,
                       batch_losses=history.batch_losses, diverged=stop.message, budget=plan)


#: The plan of a budgeted run, beside its checkpoints: a resumed run keeps the schedule it started with.
PLAN_FILE = "budget.json"


def _budget_plan(learn: Learner, *, budget_s: float, started: float, max_epochs: int | None, pretrained: bool,
                 freeze_epochs: int, feature_cache: bool, checkpoints: str | Path | None,
                 resume: ResumeState | None) -> BudgetPlan:
    stored = Path(checkpoints) / PLAN_FILE if checkpoints is not None else None
    if resume is not None and stored is not None and stored.is_file():
        try:
            return BudgetPlan(**json.loads(stored.read_text()))
        except (OSError, ValueError, TypeError):
            log.warn(f"{stored} cannot be read: the rest of the run is planned again.")
    step_s = broadcast(measure_step(learn))  # every process follows process 0's plan
    full = len(learn.dls.train)
    left = budget_s - (time.perf_counter() - started)
    # Outside the planned epochs: BatchNorm statistics refreshed once per fit, and the frozen epochs, which come
    # first and are not shortened (on cached features about one forward pass over the training images,
    # through the whole body a full epoch each).
    extra_forward, extra_steps = min(MAX_BATCHES, full), 0
    if pretrained and freeze_epochs:
        if feature_cache:
            extra_forward += full
        else:
            extra_steps += full * freeze_epochs
    spec = getattr(learn, "petclf_spec", None)
    eval_images = spec.dataset.count("valid") + spec.dataset.count("test") if spec else len(learn.dls.valid_ds)
    plan = plan_budget(budget_s=budget_s, left_s=left, step_s=step_s, full_epoch_steps=full,
                       valid_steps=len(learn.dls.valid), eval_images=eval_images, bs=learn.dls.valid.bs,
                       max_epochs=max_epochs, extra_forward=extra_forward, extra_steps=extra_steps)
    if plan.planned_train_s + plan.reserve_s > left:
        log.warn(f"time budget {budget_s:.0f} s: even one shortened epoch does not fit in the {max(left, 0):.0f} s "
                 f"left after setting up; training {plan.steps_per_epoch} step(s) anyway, so the run ends late.")
    log.info(f"time budget {budget_s:.0f} s: {left:.0f} s left for training at {step_s:.2f} s per batch → "
             f"{plan.epochs} epoch(s) of {plan.steps_per_epoch}/{full} batches")
    if stored is not None and is_main():
        write_json_atomic(stored, plan.as_dict())
    return plan


def _restore(learn: Learner, resume: ResumeState | None, best: KeepBest | None) -> int:
    """Load an interrupted run's weights and best-epoch record; returns the epochs already done."""
    if resume is None:
        return 0
    learn.model.load_state_dict(resume.model)
    if best is not None:
        best.best_key, best.best_epoch = resume.best_key, resume.best_epoch
        best.epochs_seen = resume.epochs_done
        best.best_state = resume.best_model
        best.current_is_best = resume.best_epoch == resume.epochs_done
    log.info(f"resuming after epoch {resume.epochs_done} (lr {resume.lr:.2e})")
    return resume.epochs_done


def _body_frozen(learn: Learner) -> bool:
    first = next(iter(learn.model.parameters()), None)
    return first is not None and not first.requires_grad
