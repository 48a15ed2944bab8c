"""The report's top losses beside their heat maps: what made the model answer, and where the right answer's evidence is.

Each worst item gets a row: the image as the network read it (presized, centre crop) and two Grad-CAM maps
(``petclf.runtime.explain``). Single-label: the predicted class's and the actual class's. Multi-label: the worst
label added (predicted, not given: the most likely such) and the worst label missed (given, not predicted: the
least likely such); an item without an added label shows its most likely predicted label instead, one without a
missed label its least likely given label. It costs one float32 forward and backward pass of a batch of two
copies of each image, ``k`` images in all (9 by default).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from petclf.core import log
from petclf.core.errors import PetclfError, UsageError
from petclf.evaluate.interpretation import Interpretation
from petclf.evaluate.multilabel import MultiLabelInterpretation
from petclf.runtime.explain import EXPLAIN_EXTRA, Explainer, explain_available

__all__ = ["heatmap_explainer", "plot_top_loss_heatmaps"]

#: One row of the figure: the item's path, its loss, and (label, title) of the two maps; a label None is no map.
_Row = tuple[str, float, list[tuple[str | None, str]]]


def heatmap_explainer(model_dir: str | Path) -> Explainer | None:
    """The explainer of the report's heat maps, built once for every split; None (with a warning) when captum is not
    installed or the network cannot be rebuilt here (a custom architecture).

    Example: ``heatmap_explainer("runs/pets/model")`` → ``Explainer(...)``.
    """
    if not explain_available():
        log.warn(f"no heat maps in the report: captum is not installed (pip install 'petclf[{EXPLAIN_EXTRA}]').")
        return None
    try:
        return Explainer(model_dir)
    except PetclfError as err:  # a custom architecture this process cannot rebuild: the rest of the report stands
        log.warn(f"no heat maps in the report: {err}")
        return None


def plot_top_loss_heatmaps(interp: Interpretation | MultiLabelInterpretation, explainer: Explainer, *,
                           k: int = 9) -> Figure | None:
    """A figure of the ``k`` top losses of ``interp``: image, heat map of the predicted and of the actual class
    (multi-label: of the worst added and the worst missed label, see the module's docstring); None when no item
    can be read.

    Example: ``save_figure(plot_top_loss_heatmaps(interp, Explainer(d)), "top_losses_heatmaps.png")``.
    """
    rows = []
    for path, loss, panels in (_multi_label_rows(interp, k) if isinstance(interp, MultiLabelInterpretation)
                               else _single_label_rows(interp, k)):
        try:
            pixels = explainer.read(path)
        except UsageError:
            continue  # gone since the evaluation: the figure shows the others
        labels = [label for label, _ in panels if label is not None]
        maps = iter(explainer.explain_pixels(pixels, label=labels))
        pictures = [(next(maps).overlay() if label is not None else pixels, title) for label, title in panels]
        rows.append([(pixels, f"loss {loss:.2f}"), *pictures])
    if not rows:
        return None
    fig = Figure(figsize=(6.6, 2.3 * len(rows)))
    for r, panels in enumerate(rows):
        for c, (picture, title) in enumerate(panels):
            ax = fig.add_subplot(len(rows), 3, 3 * r + c + 1)
            ax.imshow(np.asarray(picture))
            ax.set_title(title, fontsize=8, parse_math=False)
            ax.axis("off")
    fig.suptitle("top losses: where the model looked (Grad-CAM)", parse_math=False)
    return fig


def _single_label_rows(interp: Interpretation, k: int) -> list[_Row]:
    # The evaluation's probabilities (flip TTA included where the model uses it), as the table shows.
    return [(item.path, item.loss, [(item.predicted, f"predicted {item.predicted} ({item.prob_predicted:.2f})"),
                                     (item.actual, f"actual {item.actual} ({item.prob_actual:.2f})")])
            for item in interp.top_losses(k).itertuples()]


def _multi_label_rows(interp: MultiLabelInterpretation, k: int) -> list[_Row]:
    rows: list[_Row] = []
    for i in interp.worst(k) if interp.items else ():
        probs, given, predicted = interp.probs[i], interp.targets[i].astype(bool), interp.preds[i]
        wrong = _first(interp.classes, probs, [("added", predicted & ~given, max), ("predicted", predicted, max),
                                               ("most likely", np.ones_like(given), max)])
        right = _first(interp.classes, probs, [("missed", given & ~predicted, min), ("given", given, min)])
        rows.append((interp.items[i], float(interp.losses[i]), [wrong, right]))
    return rows


def _first(classes: tuple[str, ...], probs: np.ndarray, choices: list) -> tuple[str | None, str]:
    """(label, title) of the first of ``choices`` — (word, mask of labels, ``max`` or ``min`` by probability) —
    whose mask holds a label; (None, 'no label given') when none does."""
    for word, mask, pick in choices:
        if mask.any():
            j = pick(np.flatnonzero(mask), key=lambda c: probs[c])
            return classes[j], f"{word} {classes[j]} ({probs[j]:.2f})"
    return None, "no label given"
