"""``save_model``: a trained learner as a petclf model directory (``runtime.modeldir`` reads it without fastai)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import fastai
import torch
import torchvision
from fastai.learner import Learner

from petclf.core.defaults import MULTI_LABEL
from petclf.core.errors import UsageError
from petclf.learn.distributed import bare
from petclf.learn.learner import run_settings
from petclf.learn.trust import Trust
from petclf.runtime.modeldir import write_model_dir
from petclf.runtime.trust import save_unknown
from petclf.runtime.predict import DEFAULT_THRESHOLD

__all__ = ["save_model"]


def _versions() -> dict[str, str]:
    from petclf import __version__  # noqa: PLC0415 - the package's own version, set before its parts load

    return {"petclf": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "fastai": fastai.__version__}


def save_model(learn: Learner, directory: str | Path, *, summary: dict | None = None,
               thresholds: Sequence[float] | None = None, tta: bool = False, trust: Trust | None = None) -> Path:
    """Write ``learn``'s network as a petclf model directory and return its path.

    A multi-label model keeps its decision ``thresholds`` (one per class; default 0.5 each, or
    those ``choose_thresholds`` picked on the validation set). ``tta`` is the model's default for
    flip test-time augmentation when a ``Predictor`` loads it. ``trust`` (single-label, from ``fit_trust``) adds
    the calibration temperature and the "unknown" detector.

    Example: ``save_model(learn, "runs/pets/model")`` → ``Path('runs/pets/model')``.
    """
    spec = run_settings(learn)
    if thresholds is not None and len(thresholds) != len(spec.classes):
        raise UsageError(f"expected one threshold per class ({len(spec.classes)}). Received {len(thresholds)}.")
    meta = {
        "arch": {"name": spec.arch.name, "source": spec.arch.source, "n_out": spec.arch.n_out,
                 "head": "fastai-default"},
        "classes": list(spec.classes),
        "preprocessing": {"size": spec.pipeline.size, "presize": spec.pipeline.presize,
                          "resize": "shorter side to presize, centre crop, then bilinear to size",
                          "augment": spec.pipeline.augment, "mean": list(spec.pipeline.mean),
                          "std": list(spec.pipeline.std), "input": "RGB, 0..1 floats before normalisation"},
        # No data path: a shared model file should not carry the trainer's directory layout.
        "data": {"layout": spec.layout, "label_pat": spec.label_pat, "valid_pct": spec.valid_pct,
                 "seed": spec.seed, **(spec.table or {})},
        "task": spec.task,
        **({"thresholds": [float(t) for t in thresholds or [DEFAULT_THRESHOLD] * len(spec.classes)]}
           if spec.task == MULTI_LABEL else {}),
        "precision": spec.precision,
        "tta": bool(tta),
        "versions": _versions(),
        "summary": summary or {},
    }
    if trust is not None and spec.task != MULTI_LABEL:
        meta["temperature"] = float(trust.temperature)
        if trust.unknown is not None:
            meta["unknown"] = trust.unknown.meta()
    path = write_model_dir(directory, bare(learn.model).state_dict(), meta)
    if trust is not None and trust.unknown is not None and spec.task != MULTI_LABEL:
        save_unknown(path, trust.unknown)
    return path
