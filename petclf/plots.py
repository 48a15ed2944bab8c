"""Training plots written as PNG files (matplotlib's object API: no global pyplot state)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .train import TrainResult

__all__ = ["save_lr_find_plot", "save_loss_plot"]


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def save_lr_find_plot(recorder, lr: float, path: Path) -> Path:
    """Loss against learning rate from the last ``lr_find``, with the chosen rate marked."""
    lrs, losses = np.array(recorder.lrs), np.array([float(x) for x in recorder.losses])
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.axvline(lr, color="tab:red", linestyle="--", label=f"chosen lr {lr:.2e}")
    ax.set(xlabel="learning rate", ylabel="loss (smoothed)", title="lr_find")
    ax.legend()
    return _save(fig, path)


def save_loss_plot(result: TrainResult, path: Path) -> Path:
    """Smoothed training loss per batch and validation loss per epoch on one axis."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    n_batches = len(result.batch_losses)
    ax.plot(np.arange(1, n_batches + 1), result.batch_losses, label="train (smoothed)")
    epochs = len(result.history)
    if epochs and n_batches:
        per_epoch = n_batches / epochs
        ax.plot(np.arange(1, epochs + 1) * per_epoch, result.history.valid_loss, "o-", label="valid")
    ax.set(xlabel="batch", ylabel="loss", title="training and validation loss")
    ax.legend()
    return _save(fig, path)
