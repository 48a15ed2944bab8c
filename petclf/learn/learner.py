"""``quick_learner``: a folder of images in, a ready fastai ``Learner`` out."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import copy

import pandas as pd
import torch
import fastai.callback.progress  # noqa: F401 - registers Learner.no_bar, the progress bar
import fastai.callback.schedule  # noqa: F401 - registers lr_find, fit_one_cycle, fine_tune
from fastai.callback.core import Callback
from fastai.learner import Learner
from fastai.torch_core import set_seed
from torch import nn

from petclf.core import log
from petclf.core.defaults import BALANCES, MAX_SEED, MAX_SIZE, MIN_SIZE, MULTI_LABEL, SINGLE_LABEL
from petclf.core.errors import UsageError, require_between, require_positive
from petclf.core.options import UNSET, TrainOptions, resolve_options
from petclf.data.dataset import LabelledImages
from petclf.data.layouts import find_dataset
from petclf.data.saved_split import keep_split
from petclf.data.pipeline import Pipeline, make_pipeline
from petclf.data.scan import ScanReport, scan_dataset
from petclf.data.table import TableFormat
from petclf.learn.distributed import bare, broadcast, main_process_first
from petclf.learn.loaders import make_dataloaders
from petclf.learn.models import ArchRecord, build_model, check_arch
from petclf.learn.optim import fused_adam
from petclf.learn.precision import precision_callbacks
from petclf.learn.task import epoch_metrics, loss_for, task_name
from petclf.runtime.device import pick_device, pick_precision
from petclf.runtime.predict import Predictor

__all__ = ["quick_learner", "learner_predictor", "RunSettings", "run_settings", "run_settings_callback"]


@dataclass(frozen=True)
class RunSettings:
    """Everything about a learner that a saved model or a report needs to know."""

    arch: ArchRecord
    pipeline: Pipeline
    classes: tuple[str, ...]
    layout: str
    label_pat: str | None
    valid_pct: float
    data_path: str
    device: str
    precision: str
    pretrained: bool
    seed: int
    task: str = SINGLE_LABEL  # or MULTI_LABEL: several labels per image, a sigmoid each
    balance: str = "none"  # how skewed classes were countered: 'none', 'sampler', 'weights'
    table: dict | None = None  # csv layout: the columns and label delimiter used (TableFormat.as_meta)


class RunSettingsCallback(Callback):
    """Carries the ``RunSettings`` on the learner (``run_settings_callback(learn).spec``); does nothing in training."""

    def __init__(self, spec: RunSettings, scan: ScanReport, *, requested_precision: str = "auto") -> None:
        self.spec, self.scan = spec, scan
        # 'auto' lets inference-only passes (the body's cached features) pick their own precision: on a CPU, bf16
        # can pay for inference where it does not for training.
        self.requested_precision = requested_precision

    @property
    def dataset(self) -> LabelledImages:
        """The images used (after the scan left out unreadable ones)."""
        return self.scan.dataset


def run_settings_callback(learn: Learner) -> RunSettingsCallback | None:
    """The callback ``quick_learner`` put on ``learn`` (its RunSettings, scan and dataset), or None for another Learner.

    Found by its type, not by the attribute fastai derives from a callback's class name, so renaming the class
    cannot silently lose the run's settings.

    Example: ``run_settings_callback(learn).dataset.count("valid")`` → ``359``.
    """
    return next((cb for cb in learn.cbs if isinstance(cb, RunSettingsCallback)), None)


def run_settings(learn: Learner) -> RunSettings:
    """The ``RunSettings`` of a learner made by ``quick_learner``.

    Example: ``run_settings(learn).classes`` → ``('cat', 'dog')``.
    """
    holder = run_settings_callback(learn)
    if holder is None:
        raise UsageError("this Learner was not made by petclf.quick_learner, so it carries no petclf spec.")
    return holder.spec


def quick_learner(
    path: str | Path | pd.DataFrame,
    *,
    options: TrainOptions | None = None,
    arch: str | Callable | nn.Module = UNSET,
    size: int = UNSET,
    bs: int = UNSET,
    valid_pct: float = UNSET,
    seed: int = UNSET,
    label_pat: str | None = UNSET,
    layout: str = UNSET,
    pretrained: bool = UNSET,
    weights: str | Path | None = UNSET,
    device: str | torch.device | None = UNSET,
    precision: str = UNSET,
    augment: str = UNSET,
    num_workers: int | None = None,
    strict: bool = UNSET,
    cache: bool | None = UNSET,
    split: dict | None = None,
    images: str | Path | None = UNSET,
    fn_col: str | None = UNSET,
    label_col: str | None = UNSET,
    valid_col: str | None = UNSET,
    label_delim: str | None = UNSET,
    balance: str = UNSET,
) -> Learner:
    """Build a fastai ``Learner`` for the images in ``path``, ready for ``lr_find`` and ``fine_tune``.

    ``path`` is a folder (Pets file names, train/valid/test folders, or class folders; the
    layout is detected), or a table of file names and labels: a CSV/TSV file or a DataFrame
    (``images`` is the folder its names are relative to; ``fn_col``, ``label_col`` and
    ``valid_col`` name its columns when their names are unusual). ``label_delim``, or a column of
    lists, makes the task multi-label: a sigmoid per label, binary cross-entropy, metrics
    ``accuracy_multi`` and micro-F1 at 0.5. ``balance`` counters skewed classes: 'sampler'
    draws training images class-balanced, 'weights' weights the loss per class.

    Every image is checked first (unreadable files are skipped, or refused with ``strict``),
    the device is CUDA, then MPS, then CPU, and ``precision='auto'`` uses bf16 where the
    hardware computes it natively. Single-label metrics are error rate and accuracy. ``split``
    (a record from ``data.split_record``) fixes which files train and validate, as a resumed run needs.

    ``options`` (a ``TrainOptions``) gives every setting at once; keywords given beside it win. Left out, a
    setting is TrainOptions' default.

    Example::

        learn = quick_learner("pets/images", arch="resnet34")
        learn = quick_learner("pets/images", options=TrainOptions(arch="resnet18", size=160), bs=32)
        learn.fine_tune(4, base_lr=learn.lr_find().valley)
        learn = quick_learner("planet/train.csv", images="planet/train-jpg", label_delim=" ")
    """
    o = resolve_options(options, "quick_learner", arch=arch, size=size, bs=bs, valid_pct=valid_pct, seed=seed,
                        label_pat=label_pat, layout=layout, pretrained=pretrained, weights=weights, device=device,
                        precision=precision, augment=augment, strict=strict, cache=cache, images=images,
                        fn_col=fn_col, label_col=label_col, valid_col=valid_col, label_delim=label_delim,
                        balance=balance)
    arch, size, bs, valid_pct, seed, label_pat = o.arch, o.size, o.bs, o.valid_pct, o.seed, o.label_pat
    layout, pretrained, weights, device, precision, augment = o.layout, o.pretrained, o.weights, o.device, \
        o.precision, o.augment
    strict, cache, balance = o.strict, o.image_cache, o.balance
    require_positive(size=size, bs=bs)
    require_between(MIN_SIZE, MAX_SIZE, size=size)
    require_between(0, MAX_SEED, seed=seed)
    check_arch(arch)
    if balance not in BALANCES:
        raise UsageError(f"unknown balance {balance!r}: expected one of {', '.join(BALANCES)}.")
    dev = pick_device(device)
    prec = pick_precision(precision, dev)  # refuses an impossible choice before the scan
    set_seed(seed, reproducible=False)
    with main_process_first():  # process 0 fills the scan and image caches; the others then read them
        table = TableFormat.from_fields(o)
        dataset = find_dataset(path, layout=layout, label_pat=label_pat, valid_pct=valid_pct, seed=seed,
                               trainable=split is None, table=table)
        scan = scan_dataset(dataset if split is None else keep_split(dataset, split), strict=strict)
    dataset = scan.dataset  # a bs larger than its training set is reduced to fit by make_dataloaders
    built = build_model(arch, len(dataset.classes), pretrained=pretrained, weights=weights)
    if precision == "auto":  # every process trains in process 0's choice
        prec = broadcast(pick_precision(precision, dev, model=built.model, size=size, training=True))
    pipeline = make_pipeline(size=size, augment=augment, stats=built.stats)
    workers = default_num_workers(dev) if num_workers is None else num_workers
    with main_process_first():
        dls = make_dataloaders(dataset, pipeline, bs=bs, device=dev, num_workers=workers, cache=cache,
                               balanced=balance == "sampler")
    task = task_name(dataset)
    spec = RunSettings(arch=built.spec, pipeline=pipeline, classes=tuple(dataset.classes), layout=dataset.layout,
                   label_pat=label_pat, valid_pct=valid_pct,
                   data_path=str(dataset.root), device=str(dev), precision=prec,
                   pretrained=bool(pretrained or weights is not None), seed=seed, task=task, balance=balance,
                   table=dataset.table.as_meta() if dataset.table is not None else None)
    learn = Learner(dls, built.model, loss_func=loss_for(dataset, balance=balance, device=dev),
                    splitter=built.splitter, opt_func=fused_adam, metrics=epoch_metrics(task),
                    cbs=[RunSettingsCallback(spec, scan, requested_precision=precision),
                         *precision_callbacks(prec, dev)])
    if spec.pretrained:
        learn.freeze()
    log.info(f"data: {dataset.describe()}")
    log.info(f"model: {built.spec.name} ({'pretrained' if spec.pretrained else 'from scratch'}), "
             f"device {dev}, precision {prec}")
    return learn


def default_num_workers(device: torch.device) -> int:
    """Loader worker processes: none on a CPU (they would fight the model for cores), some on a GPU."""
    if device.type == "cpu":
        return 0
    return min(8, max(1, (torch.multiprocessing.cpu_count() or 2) - 1))


def learner_predictor(learn: Learner, *, precision: str = "auto", tta: bool = False,
                      temperature: float = 1.0) -> Predictor:
    """A ``Predictor`` for a learner made by ``quick_learner``, without saving it first (the learner is not changed).

    Example: ``learner_predictor(learn).predict("cat.jpg")``.
    """
    spec = run_settings(learn)
    model = copy.deepcopy(bare(learn.model)).float().cpu()
    return Predictor.from_network(model, spec.classes, spec.pipeline, device=learn.dls.device, precision=precision,
                                  multi_label=spec.task == MULTI_LABEL, tta=tta, temperature=temperature)
