"""``interpret(learn)``: the one way into an ``Interpretation`` that takes a fastai ``Learner``.

It lives beside the learner so that ``petclf.evaluate`` (judging a saved model, ``petclf report``)
never imports fastai. The module is not called ``interpret``: a package attribute would then be the
module or the function depending on what was imported first.
"""
from __future__ import annotations

import fastai.callback.progress  # noqa: F401 - registers Learner.no_bar, used below
import torch
from fastai.learner import Learner

from petclf.core.errors import UsageError
from petclf.evaluate.interpretation import AnyInterpretation, Interpretation
from petclf.evaluate.multilabel import MultiLabelInterpretation

__all__ = ["interpret"]

_SPLITS = {"valid": 1, "test": 2}  # index into learn.dls.loaders


def interpret(learn: Learner, *, split: str = "valid") -> AnyInterpretation:
    """Predict ``split`` ('valid' or 'test') once with ``learn`` and return an ``Interpretation``
    (a ``MultiLabelInterpretation``, at threshold 0.5, for a multi-label learner).

    Example: ``interpret(learn).most_confused().head()``.
    """
    index = _SPLITS.get(split)
    if index is None:
        raise UsageError(f"split must be 'valid' or 'test'. Received: split={split!r}.")
    if index >= len(learn.dls.loaders):
        raise UsageError("this learner has no test split: the data needs a test/ folder (train/valid/test layout).")
    dl = learn.dls.loaders[index]
    with learn.no_bar(), learn.no_logging():
        probs, targets = learn.get_preds(dl=dl)
    items = list(dl.items["path"]) if hasattr(dl.items, "columns") else [str(i) for i in dl.items]
    # fastai returns its TensorBase subclasses; plain tensors convert to NumPy without its dispatch.
    probs = probs.as_subclass(torch.Tensor).float().numpy()
    targets = targets.as_subclass(torch.Tensor).numpy()
    if targets.ndim == 2:  # fastai's MultiCategoryBlock: one-hot targets, sigmoid probabilities
        return MultiLabelInterpretation.from_arrays(probs, targets, classes=list(learn.dls.vocab), items=items,
                                                    split=split)
    return Interpretation.from_arrays(probs, targets, classes=list(learn.dls.vocab), items=items, split=split)
