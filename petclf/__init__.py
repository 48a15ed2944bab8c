"""petclf: train, judge and ship an image classifier in a few lines or one command.

Example::

    from petclf import quick_learner, train, save_model, Predictor
    learn = quick_learner("pets/images", arch="resnet34")
    train(learn, epochs=4)
    save_model(learn, "pets-model")
    Predictor("pets-model").predict("cat.jpg")
"""
from __future__ import annotations

import importlib
import sys
import types
import warnings

# fastai's import trips a torch deprecation notice about its own code that users can do nothing about.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)

__version__ = "0.1.0"

# Names load their module on first use (PEP 562), so `import petclf` and `petclf --help` stay
# fast: fastai and torch are imported only when something that needs them is touched.
_EXPORTS = {
    "LoadedModel": "artifact",
    "load_model": "artifact",
    "save_model": "artifact",
    "CacheUsage": "cachedir",
    "cache_usage": "cachedir",
    "clear_cache": "cachedir",
    "Dataset": "data",
    "find_dataset": "data",
    "pick_device": "device",
    "pick_precision": "device",
    "DataError": "errors",
    "PetclfError": "errors",
    "UsageError": "errors",
    "WeightsUnavailableError": "errors",
    "export_fastai": "export",
    "export_onnx": "export",
    "load_pickled_learner": "export",
    "Interpretation": "interpret",
    "interpret": "interpret",
    "interpret_saved": "interpret",
    "quick_learner": "learner",
    "run_spec": "learner",
    "Predictor": "predict",
    "report_saved_model": "report",
    "write_report": "report",
    "TrainOptions": "options",
    "train_folder": "run",
    "TrainResult": "train",
    "find_lr": "train",
    "train": "train",
}


class _Package(types.ModuleType):
    """Keeps ``petclf.train`` and ``petclf.interpret`` the functions: importing the submodules of the
    same names would otherwise set these attributes to the modules."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'petclf' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "CacheUsage",
    "DataError",
    "Dataset",
    "Interpretation",
    "LoadedModel",
    "PetclfError",
    "Predictor",
    "TrainOptions",
    "TrainResult",
    "UsageError",
    "WeightsUnavailableError",
    "__version__",
    "cache_usage",
    "clear_cache",
    "export_fastai",
    "export_onnx",
    "find_dataset",
    "find_lr",
    "interpret",
    "interpret_saved",
    "load_model",
    "load_pickled_learner",
    "pick_device",
    "pick_precision",
    "quick_learner",
    "report_saved_model",
    "run_spec",
    "save_model",
    "train",
    "train_folder",
    "write_report",
]
