"""Whole jobs behind the commands: training a folder end to end, predicting files, the demo, the pretrained-model
zoo."""
from __future__ import annotations

from petclf.core.lazy import lazy_exports

_EXPORTS = {
    "DEMO_OPTIONS": "petclf.jobs.demo",
    "DemoResult": "petclf.jobs.demo",
    "run_demo": "petclf.jobs.demo",
    "expand_images": "petclf.data.listing",
    "explain_files": "petclf.jobs.explain",
    "predict_files": "petclf.jobs.predict",
    "RunResult": "petclf.jobs.run",
    "train_folder": "petclf.jobs.run",
    "classify": "petclf.jobs.zoo",
    "compare": "petclf.jobs.zoo",
    "compare_to": "petclf.jobs.zoo",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
