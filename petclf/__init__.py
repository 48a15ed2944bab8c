"""petclf: train, judge and ship an image classifier in a few lines or one command.

Example::

    from petclf import quick_learner, train, save_model, Predictor
    learn = quick_learner("pets/images", arch="resnet34")
    train(learn, epochs=4)
    save_model(learn, "pets-model")
    Predictor("pets-model").predict("cat.jpg")
"""
from __future__ import annotations

import warnings

from petclf.core.lazy import lazy_exports

# fastai's import trips a torch deprecation notice about its own code that users can do nothing about.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)

__version__ = "0.1.0"

# Names load their module on first use (PEP 562), so `import petclf` and `petclf --help` stay
# fast: fastai and torch are imported only when something that needs them is touched.
_EXPORTS = {
    "LoadedModel": "petclf.runtime.modeldir",
    "load_model": "petclf.runtime.modeldir",
    "save_model": "petclf.learn.save",
    "CacheUsage": "petclf.data.cachedir",
    "cache_usage": "petclf.data.cachedir",
    "clear_cache": "petclf.data.cachedir",
    "Dataset": "petclf.data.layouts",
    "find_dataset": "petclf.data.layouts",
    "pick_device": "petclf.runtime.device",
    "pick_precision": "petclf.runtime.device",
    "DataError": "petclf.core.errors",
    "PetclfError": "petclf.core.errors",
    "UsageError": "petclf.core.errors",
    "WeightsUnavailableError": "petclf.core.errors",
    "export_fastai": "petclf.runtime.pickled",
    "export_onnx": "petclf.runtime.export",
    "load_pickled_learner": "petclf.runtime.pickled",
    "Interpretation": "petclf.evaluate.interpretation",
    "interpret": "petclf.learn.judge",
    "interpret_saved": "petclf.evaluate.interpretation",
    "MultiLabelInterpretation": "petclf.evaluate.multilabel",
    "choose_thresholds": "petclf.evaluate.multilabel",
    "TableSpec": "petclf.data.table",
    "quick_learner": "petclf.learn.learner",
    "run_spec": "petclf.learn.learner",
    "Predictor": "petclf.runtime.predict",
    "register_arch": "petclf.runtime.network",
    "report_saved_model": "petclf.evaluate.report",
    "write_report": "petclf.evaluate.report",
    "TrainOptions": "petclf.core.options",
    "train_folder": "petclf.jobs.run",
    "TrainResult": "petclf.learn.recipe",
    "find_lr": "petclf.learn.recipe",
    "train": "petclf.learn.recipe",
}


_lazy_getattr, _lazy_dir = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str) -> object:
    # `petclf.audit` is a package that is also callable (petclf.audit(...) runs petclf.audit.audit): importing it
    # binds it here, so it is the same object however it is reached.
    if name == "audit":
        import importlib  # noqa: PLC0415

        return importlib.import_module("petclf.audit")
    return _lazy_getattr(name)


def __dir__() -> list[str]:
    return sorted({*_lazy_dir(), "audit"})


__all__ = [
    "CacheUsage",
    "DataError",
    "Dataset",
    "Interpretation",
    "LoadedModel",
    "MultiLabelInterpretation",
    "PetclfError",
    "Predictor",
    "TableSpec",
    "TrainOptions",
    "TrainResult",
    "UsageError",
    "WeightsUnavailableError",
    "__version__",
    "audit",
    "cache_usage",
    "choose_thresholds",
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
    "register_arch",
    "report_saved_model",
    "run_spec",
    "save_model",
    "train",
    "train_folder",
    "write_report",
]
