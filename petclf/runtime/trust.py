"""What makes a single-label model's answers trustworthy: its temperature and its "unknown" detector.

A model directory stores, in ``petclf.json``, the ``temperature`` fitted on the validation split
(``petclf.runtime.temperature``) and an ``unknown`` object: the OOD score's ``kind``, the
``threshold`` over which an image is flagged unknown, the validation ``accept``-ance it was chosen
at, and ``curve``, the thresholds at acceptances 0.50, 0.505, …, 1.00 (the validation scores'
quantiles) so that another acceptance can be chosen at prediction time without the validation
images. Tensors a score needs (feature statistics) are in ``ood.safetensors``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from petclf.core.errors import ModelFileError, UsageError
from petclf.core.options import require_acceptance
from petclf.data.images import Presizer
from petclf.data.pipeline import Pipeline
from petclf.runtime.modelcheck import CURVE_LOW, CURVE_POINTS, check_header_length
from petclf.runtime.modeldir import read_tensors, save_tensors
from petclf.runtime.ood import (OODScore, features_at, fit_ood_score, load_ood_score, split_network,
                               threshold_at_acceptance)
from petclf.runtime.preprocess import PixelClassifier

__all__ = ["MAX_OOD_FILE_BYTES", "OOD_FILE", "ScoredNetwork", "Unknown", "fit_unknown", "load_unknown", "network_dims",
           "network_outputs", "save_unknown"]

OOD_FILE = "ood.safetensors"
#: A score's tensors (a few thousand training features at most) stay far under this; a larger file is not ours.
MAX_OOD_FILE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Unknown:
    """A fitted OOD score and where its "unknown" threshold lies.

    Example: ``Unknown(score, threshold=-4.1, accept=0.95, curve=curve).threshold_for(0.99)`` → ``-3.2``.
    """

    score: OODScore = field(repr=False)
    threshold: float
    accept: float
    curve: tuple[float, ...] = field(repr=False)

    def threshold_for(self, accept: float) -> float:
        """The threshold that keeps ``accept`` (0.5 to 1) of the validation images known, from the stored curve."""
        require_acceptance(unknown=accept)
        grid = np.linspace(CURVE_LOW, 1.0, CURVE_POINTS)
        return float(np.interp(accept, grid, np.asarray(self.curve)))

    def meta(self) -> dict:
        """The ``unknown`` object of ``petclf.json``."""
        return {"kind": self.score.kind, "threshold": self.threshold, "accept": self.accept, "curve": list(self.curve)}


class ScoredNetwork(nn.Module):
    """A petclf network that also scores how out-of-distribution each input is: (N, classes + 1) out, the logits
    then the OOD score (fp32).

    ``features`` and ``rest`` are the network cut where the score takes its features
    (``split_network(model, at=features_at(score.kind))``).

    Example: ``ScoredNetwork(*split_network(model, at="pooled"), score)(x)[:, -1]`` → the OOD scores.
    """

    def __init__(self, features: nn.Module, rest: nn.Module, score: OODScore) -> None:
        super().__init__()
        self.features, self.rest, self.score = features, rest, score

    def forward(self, x: Tensor) -> Tensor:
        features = self.features(x)
        logits = self.rest(features).float()
        return torch.cat([logits, self.score(features.float(), logits)[:, None]], dim=1)


class _FeaturesAndLogits(nn.Module):
    def __init__(self, model: nn.Module, *, at: str) -> None:
        super().__init__()
        self.features, self.rest = split_network(model, at=at)

    def forward(self, x: Tensor) -> Tensor:
        features = self.features(x)
        return torch.cat([self.rest(features), features], dim=1)


def network_dims(model: nn.Module, *, at: str) -> tuple[int, int]:
    """(feature width at ``at``, classes) of a petclf network, read off its layers (no forward pass).

    Example: ``network_dims(resnet_net, at="linear")`` → ``(512, 37)``.
    """
    _, rest = split_network(model, at=at)
    first = next(m for m in rest.modules() if isinstance(m, (nn.Linear, nn.BatchNorm1d)))
    width = first.in_features if isinstance(first, nn.Linear) else first.num_features
    return width, [m for m in rest.modules() if isinstance(m, nn.Linear)][-1].out_features


def network_outputs(model: nn.Module, pipeline: Pipeline, images: Sequence[str | Path], *, at: str = "linear",
                    bs: int = 64, device: str | torch.device = "cpu") -> tuple[Tensor, Tensor, list[int]]:
    """(features, logits, indices of the images read) of ``images`` through ``model`` in eval mode, preprocessed
    as validation does, the features taken at ``at`` (see ``split_network``); unreadable images are left out.

    Example: ``features, logits, kept = network_outputs(model, pipeline, paths)``.
    """
    width, classes = network_dims(model, at=at)
    net = PixelClassifier(_FeaturesAndLogits(model, at=at), pipeline).to(device).eval()
    presize = Presizer(pipeline.presize)
    outs, kept = [], []
    for start in range(0, len(images), bs):
        read = presize.read_readable(images[start:start + bs])
        kept += [start + k for k in read.kept]
        if read.pixels is not None:
            with torch.inference_mode():
                outs.append(net(torch.from_numpy(read.pixels).to(device)).float().cpu())
    both = torch.cat(outs) if outs else torch.zeros(0, classes + width)
    return both[:, classes:], both[:, :classes], kept


def fit_unknown(model: nn.Module, pipeline: Pipeline, *, kind: str, accept: float,
                train: tuple[Sequence[str | Path], Sequence[int]], valid: Sequence[str | Path], bs: int = 64,
                device: str | torch.device = "cpu") -> Unknown:
    """Fit the OOD score ``kind`` on the ``train`` (images, class indices) and set its threshold so that
    ``accept`` of the ``valid`` images stay known.

    Example: ``fit_unknown(net, pipeline, kind="energy", accept=0.95, train=(paths, labels), valid=valid_paths)``.
    """
    was_training = model.training
    model.eval()
    try:
        at = features_at(kind)
        features, logits, kept = network_outputs(model, pipeline, list(train[0]), at=at, bs=bs, device=device)
        labels = torch.as_tensor([int(train[1][k]) for k in kept], dtype=torch.long)
        score = fit_ood_score(kind, features=features, logits=logits, labels=labels)
        features, logits, _ = network_outputs(model, pipeline, list(valid), at=at, bs=bs, device=device)
    finally:
        model.train(was_training)
    if not len(logits):
        raise UsageError("no validation image could be read to set the 'unknown' threshold.")
    with torch.inference_mode():
        scores = score(features, logits)
    curve = tuple(threshold_at_acceptance(scores, float(a)) for a in np.linspace(CURVE_LOW, 1.0, CURVE_POINTS))
    return Unknown(score=score, threshold=threshold_at_acceptance(scores, accept), accept=float(accept), curve=curve)


def save_unknown(directory: str | Path, unknown: Unknown) -> None:
    """Write the score's tensors (if it has any) as ``ood.safetensors`` in a model directory.

    Example: ``save_unknown("runs/pets/model", unknown)``.
    """
    tensors = unknown.score.tensors()
    path = Path(directory) / OOD_FILE
    if not tensors:
        path.unlink(missing_ok=True)
        return
    save_tensors(path, tensors)


def load_unknown(directory: str | Path, meta: dict, model: nn.Module) -> Unknown | None:
    """The model directory's "unknown" detector (None for a model without one), its tensors checked.

    Example: ``load_unknown("runs/pets/model", loaded.meta, loaded.model)``.
    """
    info = meta.get("unknown")
    if info is None:
        return None
    path = Path(directory) / OOD_FILE
    tensors: dict[str, Tensor] = {}
    if path.exists():
        if path.stat().st_size > MAX_OOD_FILE_BYTES:
            raise ModelFileError(f"{path} is larger than {MAX_OOD_FILE_BYTES // 2**20} MB; the model directory is damaged.")
        check_header_length(path)
        tensors = read_tensors(path)
    width, classes = network_dims(model, at=features_at(info["kind"]))
    score = load_ood_score(info["kind"], tensors, feature_dim=width, classes=classes)
    return Unknown(score=score.eval(), threshold=float(info["threshold"]), accept=float(info["accept"]),
                   curve=tuple(float(v) for v in info["curve"]))
