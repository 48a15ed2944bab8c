"""Training on fastai: the learner, the recipe, optimizer, precision, frozen features, checkpoints, processes."""
from __future__ import annotations

from petclf.core.lazy import lazy_exports

_EXPORTS = {
    "Checkpoint": "petclf.learn.checkpoint",
    "ResumeState": "petclf.learn.checkpoint",
    "load_checkpoint": "petclf.learn.checkpoint",
    "interpret": "petclf.learn.judge",
    "RunSettings": "petclf.learn.learner",
    "learner_predictor": "petclf.learn.learner",
    "quick_learner": "petclf.learn.learner",
    "run_settings": "petclf.learn.learner",
    "make_dataloaders": "petclf.learn.loaders",
    "ArchRecord": "petclf.learn.models",
    "build_model": "petclf.learn.models",
    "TrainResult": "petclf.learn.recipe",
    "find_lr": "petclf.learn.recipe",
    "train": "petclf.learn.recipe",
    "save_model": "petclf.learn.save",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
