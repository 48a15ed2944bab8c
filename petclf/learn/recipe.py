"""The training recipe: learning rate; for a pretrained body the head on cached features, then every layer while
validation says it pays; from scratch one all-layer cycle; BatchNorm statistics for the final weights, the best
epoch of any phase restored, and a time budget."""
from __future__ import annotations

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
from fastai.callback.core import Callback
from fastai.learner import Learner

from petclf.core import log
from petclf.core.errors import TrainingDiverged, UsageError, require_non_negative
from petclf.core.defaults import DEFAULT_LR, OOD_FIT_IMAGES
from petclf.core.options import (DEFAULT_EPOCHS, DEFAULT_PRETRAINED_EPOCHS, UNSET, TrainOptions, parse_duration,
                                 require_lr, resolve_options)
from petclf.core.processes import is_main, world_size
from petclf.learn.batchnorm import RefreshBatchNorm
from petclf.learn.budget import PLAN_FILE, BudgetClock, BudgetPlan
from petclf.learn.callbacks import EarlyStop, History, KeepBest, StopOnNonFinite
from petclf.learn.checkpoint import Checkpoint, ResumeState
from petclf.learn.distributed import bare, broadcast, data_parallel
from petclf.learn.features import cache_features, supports_feature_cache, train_head
from petclf.learn.learner import run_settings_callback
from petclf.learn.optim import load_opt_state
from petclf.runtime.device import pick_precision

__all__ = ["TrainResult", "find_lr", "train"]


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
    """One one-cycle fit of the recipe: the head alone (body frozen), or every layer."""

    name: str  # 'frozen' (head and BatchNorm only) or 'unfrozen' (every layer)
    epochs: int
    lr_max: float | slice
    pct_start: float
    div: float


#: The head-only phase's one cycle spends nearly all of it warming up, as fastai's ``fine_tune``.
HEAD_PCT_START = 0.99


def head_phase(epochs: int, lr: float) -> Phase:
    """The head-only phase of a pretrained body (through the whole body, when features are not cached)."""
    return Phase("frozen", epochs, slice(lr), HEAD_PCT_START, 25.0)


def body_phase(epochs: int, lr: float, *, pretrained: bool) -> Phase:
    """The all-layer phase: from scratch one plain cycle; for a pretrained body ``fine_tune``'s — half the rate,
    spread 100× across the layer groups (discriminative learning rates)."""
    if not pretrained:
        return Phase("unfrozen", epochs, lr, 0.25, 25.0)
    return Phase("unfrozen", epochs, slice(lr / 2 / 100, lr / 2), 0.3, 5.0)


def train(learn: Learner, *, options: TrainOptions | None = None, epochs: int | None = UNSET,
          freeze_epochs: int = UNSET, lr: float | None = UNSET, lr_find: bool = UNSET, keep_best: bool = True,
          patience: int = UNSET, progress: bool | None = None,
          checkpoints: str | Path | None = None, resume: ResumeState | None = None,
          feature_cache: bool = UNSET, time_budget: float | str | None = UNSET,
          started: float | None = None, cbs: Sequence[Callback] = ()) -> TrainResult:
    """Train ``learn``: for a pretrained body the head first, then every layer only while validation says it pays;
    from scratch, every layer.

    A pretrained body (``quick_learner`` freezes it) first gets ``freeze_epochs`` head-only
    epochs — with ``feature_cache``, on body features computed once, the training photos and
    their mirror images (``petclf.learn.features``), so these epochs cost milliseconds. Then
    ``epochs`` all-layer epochs (default ``DEFAULT_PRETRAINED_EPOCHS``, none, for a pretrained body;
    ``DEFAULT_EPOCHS`` from scratch); a pretrained body's stop early once ``patience`` epochs in a row have not
    beaten the best epoch so far (``patience=0``: never). With ``keep_best`` the weights of
    the best validated epoch of any phase are restored at the end, so the model returned is never
    worse than one already seen.

    With ``lr=None`` the learning rate is ``DEFAULT_LR`` (2e-3; fine-tuning's base rate for a
    pretrained body, as in fastai's ``fine_tune``), or with ``lr_find=True`` lr_find's suggestion.
    Before each fit's last validation, BatchNorm statistics are recomputed for the final weights
    (``petclf.learn.batchnorm``). With ``checkpoints`` a checkpoint is written after every
    all-layer epoch; pass ``resume=load_checkpoint(dir)`` to go on from one.

    ``time_budget`` (seconds, or text such as ``'10m'``) makes the whole job — counted from
    ``started`` (a ``time.perf_counter()`` value; default: now), evaluation and files included —
    end within it: the epochs and batches per epoch are planned from the measured pace, a
    pretrained body trains only its head when not even one useful all-layer epoch fits, and a
    budget too short for even that is refused once the first images have been timed.

    ``cbs`` (fastai callbacks) take part in every epoch of every phase. In the head-only epochs on
    cached features they run on the small head-only learner (``learn.model`` is the head, the
    batches are features); lr_find does not run them.

    ``options`` (a ``TrainOptions``) gives the training settings at once (epochs, freeze_epochs, lr, lr_find,
    patience, feature_cache, time_budget; its other fields are the learner's); keywords given beside it win.

    Example: ``result = train(learn, epochs=4)``; ``train(learn, time_budget="2m").budget`` is the plan followed;
    ``train(learn, options=TrainOptions(epochs=2, lr=1e-3))``.
    """
    o = resolve_options(options, "train", epochs=epochs, freeze_epochs=freeze_epochs, lr=lr, lr_find=lr_find,
                        patience=patience, feature_cache=feature_cache, time_budget=time_budget)
    epochs, freeze_epochs, lr, lr_find, patience = o.epochs, o.freeze_epochs, o.lr, o.lr_find, o.patience
    feature_cache, time_budget = o.feature_cache, o.time_budget
    started = time.perf_counter() if started is None else started
    if epochs is not None:
        require_non_negative(epochs=epochs)
    require_non_negative(freeze_epochs=freeze_epochs)
    require_non_negative(patience=patience)
    require_lr(lr)
    budget_s = None if time_budget is None else parse_duration(time_budget)
    pretrained = (learn.opt is not None and learn.opt.frozen_idx > 0) or _body_frozen(learn)
    if epochs == 0 and not (pretrained and freeze_epochs):
        raise UsageError("epochs=0 trains nothing: a body trained from scratch (or freeze_epochs=0) needs at least "
                         "one all-layer epoch. Pass epochs=1 or more.")
    if resume is not None:
        lr = resume.lr
    elif lr is None and lr_find:
        lr = broadcast(find_lr(learn, progress=progress))  # every process trains with process 0's choice
    elif lr is None:
        lr = DEFAULT_LR
    head_epochs = freeze_epochs if pretrained else 0
    body_epochs = epochs if epochs is not None else (DEFAULT_PRETRAINED_EPOCHS if pretrained else DEFAULT_EPOCHS)
    # Heads trained apart in each process would diverge; under a launcher the frozen phase runs data-parallel.
    cached = bool(head_epochs) and feature_cache and world_size() <= 1 and supports_feature_cache(learn)
    history = History(total_epochs=head_epochs + body_epochs, print_lines=is_main() and not _show_bar(progress),
                      rows=resume.rows if resume else None, batch_losses=resume.batch_losses if resume else None)
    best = KeepBest(learn.model) if keep_best else None
    stop = StopOnNonFinite()
    user = list(cbs)
    fit_cbs = [stop, history, *user, RefreshBatchNorm()] + ([best] if best else [])
    # From scratch, a one-cycle schedule's early epochs at its peak rate are often worse than the ones before them
    # and still lead to the best ones: only a pretrained body's all-layer epochs stop early.
    early = EarlyStop(best, patience=patience) if best is not None and patience and pretrained else None
    if checkpoints is not None and is_main():
        fit_cbs.append(Checkpoint(Path(checkpoints), lr=lr, saved_epochs=resume.epochs_done if resume else 0))
    clock = None if budget_s is None else BudgetClock(learn, budget_s=budget_s, started=started,
                                                      eval_images=_eval_images(learn), head_epochs=head_epochs)
    done = _restore(learn, resume, best)
    plan = None
    start = time.perf_counter()
    with _quiet_unless(_show_bar(progress), learn), data_parallel(learn):
        if head_epochs and done < head_epochs and cached:
            learn.freeze()
            features = cache_features(learn, mirror=_mirrors(learn), progress=clock.check_head if clock else None,
                                      precision=_feature_precision(learn))
            history.phase_override = "frozen"
            head_cbs = [stop, history, *user] + ([best] if best else [])
            train_head(learn, features, head_epochs, lr, cbs=head_cbs, pct_start=HEAD_PCT_START,
                       show_bar=_show_bar(progress))
            history.phase_override = None
            done = head_epochs
            if clock is not None:
                clock.forward_s_per_image = features.seconds_per_image
        if clock is not None and not stop.message:
            plan = clock.plan(max_epochs=epochs, pretrained=pretrained, head_left=max(head_epochs - done, 0),
                              stored=None if checkpoints is None else Path(checkpoints) / PLAN_FILE,
                              resume_from=resume.epochs_done if resume else 0)
            body_epochs = plan.epochs
            history.total_epochs = head_epochs + body_epochs
            fit_cbs += clock.callbacks(plan)
        phases = ([head_phase(head_epochs, lr)] if head_epochs else []) + (
            [body_phase(body_epochs, lr, pretrained=pretrained)] if body_epochs else [])
        offset = 0
        for phase in phases:
            skip = min(max(done - offset, 0), phase.epochs)
            offset += phase.epochs
            if skip == phase.epochs or stop.message:
                continue
            learn.freeze() if phase.name == "frozen" else learn.unfreeze()
            if resume is not None and skip > 0:
                if not load_opt_state(learn.opt, resume.opt):
                    log.warn("the checkpoint's optimizer state comes from another optimizer (an older petclf?); "
                             "training goes on from its weights with fresh optimizer moments.")
                resume.restore_rng()
            phase_cbs = fit_cbs + ([early] if early is not None and phase.name == "unfrozen" else [])
            learn.fit_one_cycle(phase.epochs, phase.lr_max, pct_start=phase.pct_start, div=phase.div,
                                cbs=phase_cbs, start_epoch=skip)
    seconds = time.perf_counter() - start
    if stop.message and (best is None or best.best_state is None):
        raise TrainingDiverged(f"{stop.message} (lr {lr:.2e}), before any epoch that could be kept was complete: "
                               "nothing usable was kept. Pass a smaller learning rate (--lr, e.g. 1e-3) and check "
                               "the images for NaN or extreme values.")
    if best is not None:
        best.restore()
    best_epoch = best.best_epoch if best else len(history.rows)
    if stop.message:
        log.warn(f"{stop.message} (lr {lr:.2e}); training stopped and the weights of epoch {best_epoch} "
                 "(the best epoch with a finite loss) were kept.")
    if early is not None and early.stopped_after:
        log.info(f"stopped after epoch {early.stopped_after}: {early.patience} epoch(s) without beating epoch "
                 f"{best_epoch}")
    if best is not None and best_epoch != len(history.rows):
        log.info(f"restored the weights of epoch {best_epoch} (best validation error)")
    return TrainResult(history=history.frame(), lr=lr, best_epoch=best_epoch, seconds=seconds,
                       batch_losses=history.batch_losses, diverged=stop.message, budget=plan)


def _feature_precision(learn: Learner) -> str | None:
    """The body's feature pass runs at inference's precision, timed as prediction's is, when the precision was left
    to petclf (None: the training precision)."""
    holder = run_settings_callback(learn)
    if holder is None or holder.requested_precision != "auto":
        return None
    return pick_precision("auto", learn.dls.device, model=bare(learn.model), size=holder.spec.pipeline.size,
                          training=False)


def _mirrors(learn: Learner) -> bool:
    """Whether the training images' mirror images are fair training views (the augmentation flips)."""
    holder = run_settings_callback(learn)
    return holder is not None and holder.spec.pipeline.augment == "standard"


def _eval_images(learn: Learner) -> int:
    """Images the evaluation after training predicts: validation and test of a quick_learner's run, and for a
    single-label run the "unknown" detector's pass over training (at most ``OOD_FIT_IMAGES``) and validation
    images; of another Learner, whose test images petclf does not know, its validation set."""
    holder = run_settings_callback(learn)
    if holder is None:
        return len(learn.dls.valid_ds)
    dataset = holder.dataset
    ood = 0 if dataset.multi_label else min(dataset.count("train"), OOD_FIT_IMAGES) + dataset.count("valid")
    return dataset.count("valid") + dataset.count("test") + ood


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
