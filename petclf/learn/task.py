"""What changes with the task: one label per image (softmax) or several (a sigmoid per label), and class balance.

Single-label learners train with cross-entropy and report error rate and accuracy each epoch;
multi-label learners train with binary cross-entropy on each label's logit (fastai's
``MultiCategoryBlock`` recipe) and report ``accuracy_multi`` and micro-F1 at 0.5 (the decision
threshold itself is chosen on the validation set after training). ``balance`` counters skewed
classes by weighting the loss or by sampling training images.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import sklearn.metrics as skm
import torch
from fastai.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat
from fastai.metrics import ActivationType, accuracy, accuracy_multi, error_rate, skm_to_fastai

from petclf.core.defaults import MULTI_LABEL, SINGLE_LABEL
from petclf.data.dataset import LabelledImages

__all__ = ["MAX_POS_WEIGHT", "class_weights", "epoch_metrics", "loss_for", "sample_weights", "selection_key",
           "task_name"]

#: A label seen in 1 of 10,000 images would get a positive weight of 9,999 and swamp every other label.
MAX_POS_WEIGHT = 100.0


def task_name(dataset: LabelledImages) -> str:
    """'multi_label' or 'single_label'."""
    return MULTI_LABEL if dataset.multi_label else SINGLE_LABEL


def epoch_metrics(task: str) -> list:
    """The fastai metrics shown after every epoch, by task (their names become history.csv's columns)."""
    if task == MULTI_LABEL:
        f1_micro = skm_to_fastai(skm.f1_score, thresh=0.5, activation=ActivationType.Sigmoid, flatten=False,
                                 average="micro", zero_division=0, name="f1_micro")
        return [accuracy_multi, f1_micro]
    return [error_rate, accuracy]


def selection_key(values: Mapping[str, float]) -> tuple[float, float]:
    """How epochs compare (lower is better): error rate, or 1 − micro-F1 for multi-label; then validation loss."""
    first = 1.0 - values["f1_micro"] if "f1_micro" in values else values.get("error_rate", math.nan)
    return float(first), float(values.get("valid_loss", math.nan))


def _train_counts(dataset: LabelledImages) -> np.ndarray:
    counts = dataset.class_counts("train")
    return np.array([counts.get(c, 0) for c in dataset.classes], dtype=np.float64)


def class_weights(dataset: LabelledImages) -> torch.Tensor:
    """Loss weights that give every class the same total weight: ``n / (classes × n_c)`` (mean weight 1).

    For a multi-label dataset: each label's positive weight, negatives over positives (capped at
    ``MAX_POS_WEIGHT``), as ``BCEWithLogitsLoss(pos_weight=…)`` takes it.

    Example: ``class_weights(find_dataset("skewed"))`` → ``tensor([0.36, …, 6.8])``.
    """
    counts = _train_counts(dataset)
    if dataset.multi_label:
        negatives = dataset.count("train") - counts
        return torch.tensor(np.clip(negatives / np.maximum(counts, 1), 1.0, MAX_POS_WEIGHT), dtype=torch.float32)
    return torch.tensor(counts.sum() / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)


def sample_weights(dataset: LabelledImages, frame) -> np.ndarray:
    """A drawing weight per row of ``frame`` (train rows count; others get 0): rare classes drawn as often as common.

    Multi-label: an image is as rare as its rarest label; an image without labels as rare as such images are.
    """
    counts = dataset.class_counts("train")
    negatives = 1
    if dataset.multi_label:
        frame_labels = dataset.frame.label[dataset.frame.split == "train"]
        negatives = max(1, int((frame_labels.map(len) == 0).sum()))
    rarity = (lambda labels: max((1.0 / counts[label] for label in labels), default=1.0 / negatives)) \
        if dataset.multi_label else (lambda label: 1.0 / counts[label])
    return np.array([rarity(label) if split == "train" else 0.0 for label, split in zip(frame.label, frame.split)])


def loss_for(dataset: LabelledImages, *, balance: str, device: torch.device):
    """The training loss: cross-entropy or per-label BCE with logits, class-weighted when ``balance='weights'``
    (``quick_learner`` has checked ``balance``)."""
    weights = class_weights(dataset).to(device) if balance == "weights" else None
    if dataset.multi_label:
        return BCEWithLogitsLossFlat(pos_weight=weights) if weights is not None else BCEWithLogitsLossFlat()
    return CrossEntropyLossFlat(weight=weights)
