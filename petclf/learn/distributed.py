"""Training on several processes (GPUs or CPU cores) through fastai's Accelerate integration.

Launch the unchanged command with ``torchrun --nproc_per_node N`` or ``accelerate launch``;
each process trains on its own shard of every batch list and PyTorch DDP averages gradients.
``--bs`` is per process, so the global batch is ``bs × N``; the learning rate is used as
given (scale it yourself if you scale the global batch).

fastai's ``DistributedTrainer`` and ``DistributedDL`` assume CUDA (they broadcast indices as CUDA
tensors and ask the wrapped model for a ``.device``); the subclasses here place tensors on the
process group's own device, so the same path runs on CPU processes with gloo.
"""
from __future__ import annotations

import atexit
from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch
import torch.distributed as dist
from fastai.callback.progress import ProgressCallback
from fastai.learner import Learner

from petclf.core.processes import is_main, world_size

__all__ = ["bare", "broadcast", "data_parallel", "main_process_first"]


def bare(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DistributedDataParallel wrapper (or the network itself)."""
    return getattr(model, "module", model)


def _init_group() -> None:
    if world_size() > 1 and not dist.is_initialized():
        from accelerate import PartialState  # noqa: PLC0415 - sets up the process group the launcher described

        PartialState(cpu=not torch.cuda.is_available())  # without cpu=True Accelerate sees one CPU process
        atexit.register(_close_group)


def _close_group() -> None:
    # A gloo group still alive at interpreter shutdown can abort the process (SIGABRT,
    # "terminate called without an active exception") after its work is done: close it first.
    if dist.is_initialized():
        dist.destroy_process_group()


def main_process_first():
    """Context in which process 0 runs first (building caches), the others after it."""
    if world_size() <= 1:
        return nullcontext()
    _init_group()
    from accelerate import PartialState  # noqa: PLC0415

    return PartialState(cpu=not torch.cuda.is_available()).main_process_first()


def broadcast(value: object) -> object:
    """Process 0's ``value`` in every process (e.g. the learning rate lr_find chose)."""
    if world_size() <= 1:
        return value
    _init_group()
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _trainer_classes():
    from fastai.distributed import DistributedDL, DistributedTrainer  # noqa: PLC0415 - needs accelerate

    class GroupDL(DistributedDL):
        """fastai's ``DistributedDL`` with the index broadcast on the process group's device."""

        def _broadcast(self, t, rank):
            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            t = torch.tensor(t, dtype=torch.long, device=device)
            dist.broadcast(t, rank)
            return t.cpu().tolist()

    class GroupTrainer(DistributedTrainer):
        """fastai's ``DistributedTrainer``, wrapping loaders with ``GroupDL`` on the learner's device."""

        def _wrap_dl(self, dl):
            return dl if isinstance(dl, DistributedDL) else GroupDL(dl, device=self.learn.dls.device)

    return GroupTrainer


@contextmanager
def data_parallel(learn: Learner) -> Iterator[Learner]:
    """Train ``learn`` data-parallel across the launched processes; does nothing in a single process.

    Example::

        with data_parallel(learn):          # under `torchrun --nproc_per_node 2 train.py`
            learn.fit_one_cycle(3, 1e-3)
    """
    if world_size() <= 1:
        yield learn
        return
    _init_group()
    on_gpu = learn.dls.device.type == "cuda"
    trainer = _trainer_classes()(sync_bn=on_gpu, cpu=not on_gpu)  # SyncBatchNorm needs CUDA
    learn.add_cb(trainer)
    progress = [cb for cb in learn.cbs if isinstance(cb, ProgressCallback)]
    if not is_main():
        learn.remove_cbs(progress)
    try:
        yield learn
    finally:
        learn.remove_cb(trainer)
        if not is_main():
            learn.add_cbs(progress)
