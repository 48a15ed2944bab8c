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
from petclf.core.options import TrainOptions
from petclf.data.layouts import Dataset, find_dataset, keep_split
from petclf.data.pipeline import Pipeline, make_pipeline
from petclf.data.scan import ScanReport, scan_dataset
from petclf.data.table import TableSpec
from petclf.learn.distributed import bare, broadcast, main_process_first
from petclf.learn.loaders import make_dataloaders
from petclf.learn.models import ArchSpec, build_model, check_arch
from petclf.learn.optim import fused_adam
from petclf.learn.precision import precision_callbacks
from petclf.learn.task import epoch_metrics, loss_for, task_name
from petclf.runtime.device import pick_device, pick_precision
from petclf.runtime.predict import Predictor

#: One source of truth: quick_learner's defaults are those of TrainOptions.
_DEFAULTS = TrainOptions()

__all__ = ["quick_learner", "learner_predictor", "RunSpec", "run_spec"]


@dataclass(frozen=True)
class RunSpec:
    """Everything about a learner that a saved model or a report needs to know."""

    arch: ArchSpec
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
    table: dict | None = None  # csv layout: the columns and label delimiter used (TableSpec.as_meta)


class PetclfSpec(Callback):
    """Carries the ``RunSpec`` on the learner (``learn.petclf_spec.spec``); does nothing in training."""

    def __init__(self, spec: RunSpec, scan: ScanReport, *, requested_precision: str = "auto") -> None:
        self.spec, self.scan = spec, scan
        # 'auto' lets inference-only passes (the body's cached features) pick their own precision: on a CPU, bf16
        # can pay for inference where it does not for training.
        self.requested_precision = requested_precision

    @property
    def dataset(self) -> Dataset:
        """The images used (after the scan left out unreadable ones)."""
        return self.scan.dataset


def run_spec(learn: Learner) -> RunSpec:
    """The ``RunSpec`` of a learner made by ``quick_learner``.

    Example: ``run_spec(learn).classes`` → ``('cat', 'dog')``.
    """
    holder = getattr(learn, "petclf_spec", None)
    if not isinstance(holder, PetclfSpec):
        raise UsageError("this Learner was not made by petclf.quick_learner, so it carries no petclf spec.")
    return holder.spec


def quick_learner(
    path: str | Path | pd.DataFrame,
    *,
    arch: str | Callable | nn.Module = _DEFAULTS.arch,
    size: int = _DEFAULTS.size,
    bs: int = _DEFAULTS.bs,
    valid_pct: float = _DEFAULTS.valid_pct,
    seed: int = _DEFAULTS.seed,
    label_pat: str | None = _DEFAULTS.label_pat,
    layout: str = _DEFAULTS.layout,
    pretrained: bool = _DEFAULTS.pretrained,
    weights: str | Path | None = _DEFAULTS.weights,
    device: str | torch.device | None = _DEFAULTS.device,
    precision: str = _DEFAULTS.precision,
    augment: str = _DEFAULTS.augment,
    num_workers: int | None = None,
    strict: bool = _DEFAULTS.strict,
    cache: bool | None = _DEFAULTS.image_cache,
    split: dict | None = None,
    images: str | Path | None = _DEFAULTS.images,
    fn_col: str | None = _DEFAULTS.fn_col,
    label_col: str | None = _DEFAULTS.label_col,
    valid_col: str | None = _DEFAULTS.valid_col,
    label_delim: str | None = _DEFAULTS.label_delim,
    balance: str = _DEFAULTS.balance,
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

    Example::

        learn = quick_learner("pets/images", arch="resnet34")
        learn.fine_tune(4, base_lr=learn.lr_find().valley)
        learn = quick_learner("planet/train.csv", images="planet/train-jpg", label_delim=" ")
    """
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
        table = TableSpec(images=None if images is None else str(images), fn_col=fn_col, label_col=label_col,
                          valid_col=valid_col, label_delim=label_delim)
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
    spec = RunSpec(arch=built.spec, pipeline=pipeline, classes=tuple(dataset.classes), layout=dataset.layout,
                   label_pat=label_pat, valid_pct=valid_pct,
                   data_path=str(dataset.root), device=str(dev), precision=prec,
                   pretrained=bool(pretrained or weights is not None), seed=seed, task=task, balance=balance,
                   table=dataset.table.as_meta() if dataset.table is not None else None)
    learn = Learner(dls, built.model, loss_func=loss_for(dataset, balance=balance, device=dev),
                    splitter=built.splitter, opt_func=fused_adam, metrics=epoch_metrics(task),
                    cbs=[PetclfSpec(spec, scan, requested_precision=precision), *precision_callbacks(prec, dev)])
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
    spec = run_spec(learn)
    model = copy.deepcopy(bare(learn.model)).float().cpu()
    return Predictor.from_network(model, spec.classes, spec.pipeline, device=learn.dls.device, precision=precision,
                                  multi_label=spec.task == MULTI_LABEL, tta=tta, temperature=temperature)
