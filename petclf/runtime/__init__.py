"""A trained model at work, without fastai: model directories, networks, prediction, export, device choice."""
from __future__ import annotations

from petclf.core.lazy import lazy_exports

_EXPORTS = {
    "pick_device": "petclf.runtime.device",
    "pick_precision": "petclf.runtime.device",
    "Explainer": "petclf.runtime.explain",
    "Explanation": "petclf.runtime.explain",
    "export_onnx": "petclf.runtime.export",
    "onnx_input": "petclf.runtime.export",
    "LoadedModel": "petclf.runtime.modeldir",
    "load_model": "petclf.runtime.modeldir",
    "read_meta": "petclf.runtime.modeldir",
    "write_model_dir": "petclf.runtime.modeldir",
    "build_network": "petclf.runtime.network",
    "register_arch": "petclf.runtime.network",
    "registered_archs": "petclf.runtime.network",
    "export_fastai": "petclf.runtime.pickled",
    "load_pickled_learner": "petclf.runtime.pickled",
    "Predictor": "petclf.runtime.predict",
    "ReadBatch": "petclf.runtime.predict",
    "PixelClassifier": "petclf.runtime.preprocess",
    "export_model": "petclf.runtime.targets",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
