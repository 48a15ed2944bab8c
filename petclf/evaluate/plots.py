"""Figures as PNG (matplotlib's object API: no global pyplot state), and the training plots."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from petclf.data.images import read_rgb

__all__ = ["figure_png", "image_grid", "save_figure", "save_lr_find_plot", "save_loss_plot", "thumbnail"]


def figure_png(fig: Figure) -> bytes:
    """The figure laid out and rendered as PNG bytes (100 dpi)."""
    FigureCanvasAgg(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write the figure as a PNG file at ``path``."""
    path = Path(path)
    path.write_bytes(figure_png(fig))
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
    return save_figure(fig, path)


class LossHistory(Protocol):
    """What the loss plot reads from a training result (``petclf.learn.TrainResult`` is one).

    A protocol rather than the class itself: evaluation sits below training and imports nothing from it.
    """

    batch_losses: Sequence[float]
    history: pd.DataFrame  # one row per epoch, with a valid_loss column


def save_loss_plot(result: LossHistory, path: Path) -> Path:
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
    return save_figure(fig, path)


def thumbnail(path: str) -> np.ndarray:
    """An image file as a ≤256 px RGB array for a figure; a grey square when it cannot be read."""
    # Shown from the original file, so no de-normalisation can go wrong.
    try:
        img = read_rgb(path, min_side=256)
        img.thumbnail((256, 256))
        return np.asarray(img)
    except (OSError, ValueError):
        return np.full((32, 32, 3), 200, dtype=np.uint8)


def image_grid(paths: Sequence[str], titles: Sequence[str], *, suptitle: str, fontsize: float = 9) -> Figure:
    """A square-ish grid of the images at ``paths`` (thumbnails), each under its title; drawn as typed, never as math.

    Example: ``image_grid(["a.jpg"], ["cat/dog"], suptitle="top losses")``.
    """
    cols = int(np.ceil(np.sqrt(max(len(paths), 1))))
    rows = int(np.ceil(len(paths) / cols)) if len(paths) else 1
    fig = Figure(figsize=(3.3 * cols, 3.5 * rows))
    for i, (path, title) in enumerate(zip(paths, titles)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(thumbnail(path))
        ax.set_title(title, fontsize=fontsize, parse_math=False)
        ax.axis("off")
    fig.suptitle(suptitle, parse_math=False)
    return fig
