"""fastai's pickle format (``export.pkl``), written for ``load_learner`` users and read only by explicit consent.

A pickle runs code when it is loaded. fastai itself is imported only when one of these is
called, so the rest of the runtime stays free of it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from petclf.core import log
from petclf.core.errors import UsageError

if TYPE_CHECKING:
    from fastai.learner import Learner

__all__ = ["export_fastai", "load_pickled_learner"]


def export_fastai(learn: "Learner", path: str | Path) -> Path:
    """Write fastai's ``export.pkl`` (a pickle of the whole Learner) for users of ``load_learner``.

    Prefer ``save_model``: a pickle runs code when loaded and breaks across library versions.

    Example: ``export_fastai(learn, "runs/pets/export.pkl")``.
    """
    path = Path(path).resolve()
    # petclf's own callbacks stay out, so the file loads with fastai alone.
    ours = [cb for cb in learn.cbs if type(cb).__module__.startswith("petclf.")]
    with learn.removed_cbs(ours):
        learn.export(path)
    return path


def load_pickled_learner(path: str | Path, *, trust: bool = False) -> "Learner":
    """Load a fastai ``export.pkl``; refuses unless ``trust=True`` because unpickling runs code from the file.

    Example: ``load_pickled_learner("export.pkl", trust=True)`` for a file you made yourself.
    """
    path = Path(path)
    if not trust:
        raise UsageError(
            f"{path} is a pickle: loading it runs whatever code its author put inside, so petclf will not load "
            "it unless you say you trust it (trust=True / --trust-pickle). For files from others ask for a petclf "
            "model directory (model.safetensors + petclf.json), which holds only tensors and JSON."
        )
    if not path.is_file():
        raise UsageError(f"{path} does not exist.")
    from fastai.learner import load_learner  # noqa: PLC0415

    log.warn(f"unpickling {path} because trust was given")
    return load_learner(path, cpu=not torch.cuda.is_available())
