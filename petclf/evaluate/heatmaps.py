"""The report's top losses beside their heat maps: what made the model answer, and where the right class's evidence is.

Each worst item gets a row: the image as the network read it (presized, centre crop), its Grad-CAM
for the predicted class, and for the actual class (``petclf.runtime.explain``). It costs one float32 forward
and backward pass of a batch of two copies of each image, ``k`` images in all (9 by default).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from petclf.core import log
from petclf.core.errors import PetclfError, UsageError
from petclf.evaluate.interpretation import Interpretation
from petclf.runtime.explain import EXPLAIN_EXTRA, Explainer, explain_available

__all__ = ["plot_top_loss_heatmaps"]


def plot_top_loss_heatmaps(interp: Interpretation, model_dir: str | Path, *, k: int = 9) -> Figure | None:
    """A figure of the ``k`` top losses of ``interp``: image, heat map of the predicted and of the actual class;
    None (with a warning) when captum is not installed, the network cannot be rebuilt here (a custom
    architecture) or no item can be read.

    Example: ``save_figure(plot_top_loss_heatmaps(interp, "runs/pets/model"), "top_losses_heatmaps.png")``.
    """
    if not explain_available():
        log.warn(f"no heat maps in the report: captum is not installed (pip install 'petclf[{EXPLAIN_EXTRA}]').")
        return None
    try:
        explainer = Explainer(model_dir)
    except PetclfError as err:  # a custom architecture this process cannot rebuild: the rest of the report stands
        log.warn(f"no heat maps in the report: {err}")
        return None
    rows = []
    for item in interp.top_losses(k).itertuples():
        try:
            pixels = explainer.read(item.path)
        except UsageError:
            continue  # gone since the evaluation: the figure shows the others
        predicted, actual = explainer.explain_pixels(pixels, label=[item.predicted, item.actual])
        rows.append((pixels, predicted, actual, item))
    if not rows:
        return None
    fig = Figure(figsize=(6.6, 2.3 * len(rows)))
    for r, (pixels, predicted, actual, item) in enumerate(rows):
        panels = [(pixels, f"loss {item.loss:.2f}"),
                  # The evaluation's probabilities (flip TTA included where the model uses it), as the table shows.
                  (predicted.overlay(), f"predicted {predicted.label} ({item.prob_predicted:.2f})"),
                  (actual.overlay(), f"actual {actual.label} ({item.prob_actual:.2f})")]
        for c, (picture, title) in enumerate(panels):
            ax = fig.add_subplot(len(rows), 3, 3 * r + c + 1)
            ax.imshow(np.asarray(picture))
            ax.set_title(title, fontsize=8, parse_math=False)
            ax.axis("off")
    fig.suptitle("top losses: where the model looked (Grad-CAM)", parse_math=False)
    return fig
