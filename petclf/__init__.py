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

# fastai's import trips a torch deprecation notice about its own code that users can do nothing about.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)

__version__ = "0.1.0"

from .artifact import LoadedModel as LoadedModel
from .artifact import load_model as load_model
from .artifact import save_model as save_model
from .data import Dataset as Dataset
from .data import find_dataset as find_dataset
from .device import pick_device as pick_device
from .device import pick_precision as pick_precision
from .errors import DataError as DataError
from .errors import PetclfError as PetclfError
from .errors import UsageError as UsageError
from .errors import WeightsUnavailableError as WeightsUnavailableError
from .export import export_fastai as export_fastai
from .export import export_onnx as export_onnx
from .export import load_pickled_learner as load_pickled_learner
from .interpret import Interpretation as Interpretation
from .interpret import interpret as interpret
from .interpret import interpret_saved as interpret_saved
from .learner import quick_learner as quick_learner
from .learner import run_spec as run_spec
from .predict import Predictor as Predictor
from .report import report_saved_model as report_saved_model
from .report import write_report as write_report
from .run import TrainOptions as TrainOptions
from .run import train_folder as train_folder
from .train import TrainResult as TrainResult
from .train import find_lr as find_lr
from .train import train as train

__all__ = [
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
