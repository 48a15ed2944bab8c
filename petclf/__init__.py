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
from typing import TYPE_CHECKING

from petclf.core.lazy import lazy_exports

# fastai's import trips a torch deprecation notice about its own code that users can do nothing about.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)

__version__ = "0.1.0"

# Names load their module on first use (PEP 562), so `import petclf` and `petclf --help` stay
# fast: fastai and torch are imported only when something that needs them is touched. Only what
# users call, construct or catch is here; the rest (run_settings, pick_precision, CacheUsage, the
# classes functions return) is imported from its module, e.g. `from petclf.learn import run_settings`.
_EXPORTS = {
    "load_model": "petclf.runtime.modeldir",
    "save_model": "petclf.learn.save",
    "cache_usage": "petclf.data.cachedir",
    "clear_cache": "petclf.data.cachedir",
    "find_dataset": "petclf.data.layouts",
    "DataError": "petclf.core.errors",
    "PetclfError": "petclf.core.errors",
    "UsageError": "petclf.core.errors",
    "WeightsUnavailableError": "petclf.core.errors",
    "export_fastai": "petclf.runtime.pickled",
    "export_onnx": "petclf.runtime.export",
    "export_model": "petclf.runtime.targets",
    "load_pickled_learner": "petclf.runtime.pickled",
    "Interpretation": "petclf.evaluate.interpretation",
    "interpret_saved": "petclf.evaluate.interpretation",
    "interpret": "petclf.learn.judge",
    "MultiLabelInterpretation": "petclf.evaluate.multilabel",
    "choose_thresholds": "petclf.evaluate.multilabel",
    "TableFormat": "petclf.data.table",
    "quick_learner": "petclf.learn.learner",
    "Predictor": "petclf.runtime.predict",
    "Explainer": "petclf.runtime.explain",
    "register_arch": "petclf.runtime.network",
    "report_saved_model": "petclf.evaluate.report",
    "write_report": "petclf.evaluate.report",
    "TrainOptions": "petclf.core.options",
    "train_folder": "petclf.jobs.run",
    "find_lr": "petclf.learn.recipe",
    "train": "petclf.learn.recipe",
}

if TYPE_CHECKING:  # what IDEs and type checkers see; at run time the table above loads each on first use
    from petclf import audit
    from petclf.core.errors import DataError, PetclfError, UsageError, WeightsUnavailableError
    from petclf.core.options import TrainOptions
    from petclf.data.cachedir import cache_usage, clear_cache
    from petclf.data.layouts import find_dataset
    from petclf.data.table import TableFormat
    from petclf.evaluate.interpretation import Interpretation, interpret_saved
    from petclf.evaluate.multilabel import MultiLabelInterpretation, choose_thresholds
    from petclf.evaluate.report import report_saved_model, write_report
    from petclf.jobs.run import train_folder
    from petclf.learn.judge import interpret
    from petclf.learn.learner import quick_learner
    from petclf.learn.recipe import find_lr, train
    from petclf.learn.save import save_model
    from petclf.runtime.explain import Explainer
    from petclf.runtime.export import export_onnx
    from petclf.runtime.modeldir import load_model
    from petclf.runtime.network import register_arch
    from petclf.runtime.pickled import export_fastai, load_pickled_learner
    from petclf.runtime.predict import Predictor
    from petclf.runtime.targets import export_model


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


__all__ = sorted([*_EXPORTS, "audit", "__version__"])
