"""``TrainOptions``: the settings of one training run (light to import: the command line reads its defaults)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from petclf.core.defaults import (AUGMENTS, BALANCES, DEFAULT_BALANCE, DEFAULT_SEED, DEFAULT_UNKNOWN_ACCEPT,
                                  DEFAULT_VALID_PCT, LAYOUTS,
                                  MAX_LR, MIN_UNKNOWN_ACCEPT, MAX_SEED, MAX_SIZE, MIN_SIZE, PRECISIONS, THRESHOLD_MODES)
from petclf.core.errors import UsageError, require_between, require_fraction, require_non_negative, require_positive

__all__ = ["DEFAULT_EPOCHS", "DEFAULT_PRETRAINED_EPOCHS", "UNSET", "TrainOptions", "parse_duration",
           "require_acceptance", "require_lr", "require_threshold", "resolve_options"]

#: Epochs with all layers training from scratch when neither --epochs nor --time-budget says otherwise.
DEFAULT_EPOCHS = 5
#: All-layer epochs after the head of a pretrained body when neither --epochs nor --time-budget says otherwise: none.
#: The head on cached features is the fast answer; the body's epochs cost a full training pass each and, on the
#: photos measured (BENCHMARKS.md, "transfer learning"), did not pay for it by default. --epochs N or a time budget
#: adds them, stopped early when validation stops improving.
DEFAULT_PRETRAINED_EPOCHS = 0
#: Seconds per unit of a duration written as 90s, 10m, 1.5h.
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
#: A longer budget than a week is a typing error, not a plan.
MAX_BUDGET_S = 7 * 24 * 3600.0


def parse_duration(value: str | float | int) -> float:
    """Seconds in a duration: a number of seconds, or text such as ``'90s'``, ``'10m'``, ``'1.5h'``.

    Example: ``parse_duration("10m")`` → ``600.0``.
    """
    if isinstance(value, bool):
        seconds = math.nan
    elif isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        unit = _UNITS.get(text[-1:], None) if text else None
        try:
            seconds = float(text[:-1] if unit else text) * (unit or 1.0)
        except ValueError:
            seconds = math.nan
    if math.isfinite(seconds) and seconds <= 0:
        raise UsageError(f"a time budget must be a positive duration, and {value!r} is "
                         f"{'negative' if seconds < 0 else 'zero'}: give the time the whole job may take, such as "
                         "90s, 10m or 1.5h.")
    if not (math.isfinite(seconds) and seconds <= MAX_BUDGET_S):
        raise UsageError(f"a time budget must be a positive duration up to a week, such as 90s, 10m or 1.5h "
                         f"(a bare number is seconds). Received: {value!r}.")
    return seconds


def require_lr(lr: float | None) -> None:
    """Refuse a learning rate that is not a finite positive number up to ``MAX_LR`` (None: lr_find chooses)."""
    if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and 0 < lr <= MAX_LR):
        raise UsageError(f"lr must be a positive number up to {MAX_LR:g} (typical: 1e-4 to 1e-2). Received: lr={lr}.")


def require_threshold(threshold: str | float) -> None:
    """Refuse a multi-label threshold that is neither a mode ('auto', 'per-label') nor a number in (0, 1)."""
    if isinstance(threshold, str) and threshold in THRESHOLD_MODES:
        return
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise UsageError(f"threshold must be {' or '.join(map(repr, THRESHOLD_MODES))} or a number between 0 and 1 "
                         f"(e.g. 0.5). Received: threshold={threshold!r}.")


def require_acceptance(**values: float) -> None:
    """Refuse an "unknown" acceptance that is not a number from ``MIN_UNKNOWN_ACCEPT`` to 1, naming it: training,
    ``Predictor(unknown=)`` and ``ServeOptions`` check theirs with it.

    Example: ``require_acceptance(unknown_accept=1.5)`` raises ``unknown_accept is the share of ordinary images …``.
    """
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not MIN_UNKNOWN_ACCEPT <= value <= 1.0:
            raise UsageError(f"{name} is the share of ordinary images to keep known (as the validation images were), "
                             f"from {MIN_UNKNOWN_ACCEPT:g} to 1 (e.g. 0.95). Received: {name}={value!r}.")


@dataclass(frozen=True)
class TrainOptions:
    """Settings of one training run; written to ``config.json`` next to its results."""

    arch: str = "resnet34"  # torchvision or timm name; resnet18 is faster, resnet50 more accurate
    size: int = 224  # final image side; smaller trains faster on a CPU
    bs: int = 64  # lower it if memory runs out
    epochs: int | None = None  # all-layer epochs; None: DEFAULT_EPOCHS (DEFAULT_PRETRAINED_EPOCHS after a pretrained
    # body's head), or what the budget allows; 0 with a pretrained body trains the head alone
    time_budget: float | None = None  # seconds for the whole job (lr choice, training, evaluation, files)
    freeze_epochs: int = 10  # head-only epochs first, only for a pretrained body (milliseconds each on cached features)
    patience: int = 1  # all-layer epochs in a row without a new best before training stops; 0: never stop early
    lr: float | None = None  # None: DEFAULT_LR (2e-3), or lr_find's suggestion with lr_find=True
    lr_find: bool = False  # choose the rate with fastai's lr_find (and plot it) instead of the default
    # The options of reading the data carry their help (the command line's too) in their metadata.
    valid_pct: float = field(default=DEFAULT_VALID_PCT, metadata={"help": "held-out share without valid/"})
    seed: int = field(default=DEFAULT_SEED, metadata={"help": "split and initialisation seed"})
    label_pat: str | None = field(default=None, metadata={"help": "regex whose first group is the label (Pets layout)"})
    layout: str = field(default="auto", metadata={"help": "pets, folders, classes, csv (a table file) or auto"})
    images: str | None = None  # csv layout: the folder file names are relative to (default: the table's folder)
    fn_col: str | None = None  # csv layout: file name column (default: found by name, e.g. fname, image_id)
    label_col: str | None = None  # csv layout: label column (default: found by name, e.g. label, labels)
    valid_col: str | None = None  # csv layout: split column, is_valid or split (default: found by name)
    label_delim: str | None = None  # csv layout: splits a label cell into several labels (multi-label)
    balance: str = DEFAULT_BALANCE  # skewed classes: 'none', 'sampler' (balanced batches) or 'weights' (loss)
    threshold: str | float = "auto"  # multi-label: 'auto' (chosen on valid), 'per-label', or a number
    pretrained: bool = True  # False trains from scratch (no download needed)
    weights: str | None = None  # local weights file instead of a download
    device: str | None = None  # 'cpu', 'cuda', 'mps'; None picks the fastest
    precision: str = "auto"  # 'auto', 'fp32', 'bf16', 'fp16'
    augment: str = "standard"  # 'standard', 'no-flip' (text, digits), 'none'
    tta: bool = False  # evaluate (and predict, by default) on each image and its mirror; needs 'standard'
    strict: bool = field(default=False, metadata={"help": "stop on unreadable files instead of skipping them"})
    image_cache: bool | None = None  # decode each image once into a presized cache; None: when under 4 GiB
    feature_cache: bool = True  # frozen epochs train the head on body features computed once
    unknown_accept: float = DEFAULT_UNKNOWN_ACCEPT  # single-label: share of validation images the "unknown" threshold keeps known

    def validate(self) -> None:
        """Refuse impossible settings before any work starts."""
        require_positive(size=self.size, bs=self.bs)
        if self.epochs is not None:
            require_non_negative(epochs=self.epochs)
        if self.time_budget is not None:
            parse_duration(self.time_budget)
        require_between(MIN_SIZE, MAX_SIZE, size=self.size)
        require_non_negative(freeze_epochs=self.freeze_epochs, patience=self.patience, seed=self.seed)
        require_between(0, MAX_SEED, seed=self.seed)
        require_lr(self.lr)
        if self.lr_find and self.lr is not None:
            raise UsageError(f"lr_find chooses the learning rate, but lr={self.lr:g} was given too: keep one of them.")
        require_fraction(valid_pct=self.valid_pct)
        require_threshold(self.threshold)
        require_acceptance(unknown_accept=self.unknown_accept)
        if self.tta and self.augment != "standard":
            raise UsageError(f"tta mirrors images, but augment={self.augment!r} trains without mirrored images: "
                             "use tta only with augment='standard' (flip-invariant photos).")
        for name, value, choices in (("layout", self.layout, LAYOUTS), ("augment", self.augment, AUGMENTS),
                                     ("precision", self.precision, PRECISIONS), ("balance", self.balance, BALANCES)):
            if value not in choices:
                raise UsageError(f"unknown {name} {value!r}: expected one of {', '.join(choices)}.")



class _Unset:
    """A keyword not given to an entry point: its value comes from ``options`` (TrainOptions' default without)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<from options>"


#: Default of the keywords of ``quick_learner``, ``train`` and ``train_folder`` that ``options`` also sets.
UNSET: Any = _Unset()
#: Keywords whose name differs from their TrainOptions field: the one mapping between them.
_KEYWORD_FIELDS = {"cache": "image_cache"}


def resolve_options(options: TrainOptions | None, caller: str, /, **keywords: Any) -> TrainOptions:
    """``options`` (default ``TrainOptions()``) with each keyword that was given (not ``UNSET``) put in its place.

    Example: ``resolve_options(TrainOptions(arch="resnet50"), "train", epochs=3).epochs`` → ``3``.
    """
    if options is not None and not isinstance(options, TrainOptions):
        raise UsageError(f"{caller}: options must be a TrainOptions. Received: {type(options).__name__}.")
    names = {f.name for f in fields(TrainOptions)}
    given = {_KEYWORD_FIELDS.get(k, k): v for k, v in keywords.items() if v is not UNSET}
    unknown = sorted(set(given) - names)
    if unknown:
        raise UsageError(f"{caller} got unknown settings {', '.join(unknown)}: expected fields of TrainOptions "
                         f"({', '.join(sorted(names))}).")
    return replace(options or TrainOptions(), **given)
