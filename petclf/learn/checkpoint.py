"""Per-epoch checkpoints, written atomically, and the state needed to resume a run after a crash or kill.

A checkpoint holds tensors and plain values only, so it loads with ``weights_only=True``
(no code can run from it). Each file is written to a temporary name, flushed and renamed,
so a kill during the write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from petclf.core import log
from petclf.core.atomic import atomic_path
from petclf.core.errors import PetclfError
from petclf.learn.distributed import bare
from petclf.learn.epochs import CompletedEpochCallback
from petclf.learn.optim import opt_state
from petclf.learn.task import selection_key

__all__ = ["Checkpoint", "ResumeState", "load_checkpoint", "save_atomic", "CHECKPOINT_FILE", "BEST_FILE"]

CHECKPOINT_FILE = "last.pt"
BEST_FILE = "best.pt"


def save_atomic(obj: object, path: Path) -> None:
    """``torch.save`` through ``atomic_path`` (fsync, then rename): the old file survives any crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def _plain(obj: object) -> object:
    """Tensors, numbers, strings and containers only (fastcore's ``L`` becomes a list), for weights_only loads."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "L":
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):  # before float: np.float64 is a float subclass but pickles as numpy
        return obj.item()
    if isinstance(obj, torch.Tensor) or obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}")


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_gauss": random.getstate()[2]}
    np_state = np.random.get_state()
    state.update(numpy_keys=torch.from_numpy(np_state[1].astype(np.int64)), numpy_pos=int(np_state[2]))
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class ResumeState:
    """What a checkpoint says about the interrupted run."""

    epochs_done: int
    lr: float
    rows: list[dict]
    batch_losses: list[float]
    best_epoch: int
    best_key: tuple[float, float] | None
    model: dict = field(repr=False)
    opt: dict = field(repr=False)
    rng: dict = field(repr=False)
    best_model: dict | None = field(default=None, repr=False)

    def restore_rng(self) -> None:
        _set_rng_state(self.rng)


def load_checkpoint(directory: Path) -> ResumeState | None:
    """The state in ``directory/last.pt``, or None when there is none."""
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        best = torch.load(directory / BEST_FILE, map_location="cpu", weights_only=True) \
            if (directory / BEST_FILE).is_file() else None
    except Exception as err:  # noqa: BLE001 - any damage means the same thing to the user
        raise PetclfError(f"the checkpoint in {directory} cannot be read ({err}); delete {directory} to start over.") \
            from None
    state = ResumeState(epochs_done=int(raw["epochs_done"]), lr=float(raw["lr"]), rows=list(raw["rows"]),
                        batch_losses=list(raw["batch_losses"]), best_epoch=int(raw["best_epoch"]),
                        best_key=tuple(raw["best_key"]) if raw.get("best_key") is not None else None,
                        model=raw["model"], opt=raw["opt"], rng=raw["rng"])
    return _with_best(state, best)


def _with_best(state: ResumeState, best: dict | None) -> ResumeState:
    """Attach the best epoch's weights, only when ``best.pt`` holds the epoch ``last.pt`` names as best.

    The two files are written one after the other; when only one of them made it (a full disk),
    the newest epoch stands in as the best, so the weights kept always match the epoch reported.
    """
    if state.best_epoch == 0:  # trained without keeping the best epoch
        return state
    if state.best_epoch == state.epochs_done:
        return replace(state, best_model=state.model)
    if best is not None and "model" in best and best.get("epoch") == state.best_epoch:
        return replace(state, best_model=best["model"])
    log.warn(f"the checkpoint does not hold the weights of epoch {state.best_epoch} (best so far); "
             f"epoch {state.epochs_done} stands in as the best.")
    last = state.rows[-1]  # History's row of epoch epochs_done
    return replace(state, best_model=state.model, best_epoch=state.epochs_done,
                   best_key=selection_key(last))


class Checkpoint(CompletedEpochCallback):
    """After every completed epoch, save model, optimizer, progress and RNG states to ``directory``."""

    order = 70  # after History (60) and KeepBest (65) have taken in the epoch

    def __init__(self, directory: Path, *, lr: float, saved_epochs: int = 0) -> None:
        self.directory, self.lr = Path(directory), lr
        self.saved_epochs = saved_epochs  # the epochs the newest checkpoint on disk holds
        self.saved_best = 0  # the epoch whose weights best.pt holds (0: none written by this run)

    def after_completed_epoch(self) -> None:
        try:
            self._save()
        except OSError as err:
            # Stopping would throw away the epoch just trained; the next epoch tries again.
            log.warn(f"could not write the checkpoint after epoch {len(self.learn.history.rows)} in "
                     f"{self.directory} ({err.strerror or err}); training goes on. A crash now would resume "
                      + (f"after epoch {self.saved_epochs}." if self.saved_epochs else "from the start."))
        else:
            self.saved_epochs = len(self.learn.history.rows)

    def _save(self) -> None:
        history, keep_best = self.learn.history, getattr(self.learn, "keep_best", None)
        model_state = {k: v.detach().cpu() for k, v in bare(self.learn.model).state_dict().items()}
        # The best epoch may be a head-only one on cached features, which writes no checkpoint of its own.
        if keep_best is not None and keep_best.best_state is not None and keep_best.best_epoch != self.saved_best:
            save_atomic({"epoch": keep_best.best_epoch, "model": keep_best.best_state}, self.directory / BEST_FILE)
            self.saved_best = keep_best.best_epoch
        save_atomic(_plain({
            "epochs_done": len(history.rows), "lr": self.lr, "rows": history.rows,
            "batch_losses": history.batch_losses, "model": model_state,
            "opt": opt_state(self.learn.opt),
            "best_epoch": keep_best.best_epoch if keep_best else 0,
            "best_key": list(keep_best.best_key) if keep_best and keep_best.best_key else None,
            "rng": _rng_state(),
        }), self.directory / CHECKPOINT_FILE)
