"""Out-of-distribution scores: how unlike the training images an image is (higher = less like them).

Four usual scores, each an ``nn.Module`` of a batch's features (taken where ``features_at(kind)`` says:
the body's pooled features for the distances) and logits, built only of ops that
``torch.onnx.export(dynamo=True)`` and OpenVINO carry (matmul, topk, logsumexp, softmax), so the score
travels inside an exported graph (onnxruntime and OpenVINO at f32 match torch to 2e-5; OpenVINO's default bf16
on a CPU that has it moves the knn score by about 1e-3):

* ``msp``: minus the maximum softmax probability (Hendrycks & Gimpel 2017);
* ``energy``: minus the logsumexp of the logits (Liu et al. 2020);
* ``mahalanobis``: the smallest Mahalanobis distance to a class mean under one shared covariance
  (Lee et al. 2018), the covariance shrunk by scikit-learn's ``LedoitWolf``;
* ``knn``: the mean cosine distance to the ``k`` nearest training images (Sun et al. 2022). This is the
  score of cleanlab's ``OutOfDistribution`` on features (it averages the ``k`` nearest cosine distances of
  scikit-learn's ``NearestNeighbors``; its ``exp(-d/median)`` is monotone and so ranks identically), but
  cleanlab's object is a fitted scikit-learn estimator, pickled, which no ONNX graph can hold: here the
  same distances are one matmul and one ``topk`` over a stored bank of unit-length training features.

Which is the default, and why, is measured on real photos by ``benchmarks/trust.py`` (BENCHMARKS.md).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from petclf.core.defaults import DEFAULT_KNN_K
from petclf.core.errors import ModelFileError, UsageError
from petclf.runtime.network import ConcatPool2d

__all__ = ["OOD_KINDS", "DEFAULT_KNN_K", "FEATURE_POINTS", "MAX_OOD_BYTES", "OODScore", "features_at", "fit_ood_score",
           "load_ood_score", "split_network", "threshold_at_acceptance"]

#: The scores petclf can compute; ``DEFAULT_OOD_SCORE`` (petclf/core/defaults.py) picks one.
OOD_KINDS: tuple[str, ...] = ("msp", "energy", "mahalanobis", "knn")
#: The largest bank of training features (bytes, float32) a ``knn`` score keeps: more training images are
#: subsampled to fit. 20 MB is 10,240 images of fastai's 512-wide head features.
MAX_OOD_BYTES = 20 * 2**20
#: The most neighbours a stored ``knn`` score may ask for (a stranger's file sets ``k``).
_MAX_K = 1000
#: Points of a petclf network where a score can take its features (``split_network``'s ``at``).
FEATURE_POINTS = ("pooled", "linear")
_FEATURES_AT = {"msp": "linear", "energy": "linear", "mahalanobis": "pooled", "knn": "pooled"}


class OODScore(nn.Module):
    """Base of the scores: ``forward(features, logits)`` → one score per image, higher = less like training.

    Example::

        score = fit_ood_score("knn", features=train_feats, logits=train_logits, labels=train_labels)
        unknown = score(feats, logits) > threshold_at_acceptance(score(valid_feats, valid_logits), 0.95)
    """

    kind: str = ""

    def forward(self, features: Tensor, logits: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def tensors(self) -> dict[str, Tensor]:
        """What a model file stores to rebuild this score with ``load_ood_score`` (empty for msp and energy)."""
        return {}


class _MaxSoftmax(OODScore):
    kind = "msp"

    def forward(self, features: Tensor, logits: Tensor) -> Tensor:
        return -torch.softmax(logits.float(), dim=1).amax(dim=1)


class _Energy(OODScore):
    kind = "energy"

    def forward(self, features: Tensor, logits: Tensor) -> Tensor:
        return -torch.logsumexp(logits.float(), dim=1)


class _Mahalanobis(OODScore):
    """min over classes of ‖(x − μ_c) L‖², with L Lᵀ the shared precision matrix: stored as L and μ L."""

    kind = "mahalanobis"

    def __init__(self, transform: Tensor, means: Tensor) -> None:
        super().__init__()
        self.register_buffer("transform", transform.float().contiguous())
        self.register_buffer("means", means.float().contiguous())

    def forward(self, features: Tensor, logits: Tensor) -> Tensor:
        z = features.float() @ self.transform
        # ‖z − m‖² expanded so that it is two matmuls and no (N, C, D) intermediate
        sq = (z * z).sum(1, keepdim=True) - 2.0 * (z @ self.means.T) + (self.means * self.means).sum(1)
        return sq.amin(dim=1)

    def tensors(self) -> dict[str, Tensor]:
        return {"transform": self.transform, "means": self.means}


class _Knn(OODScore):
    """Mean cosine distance to the ``k`` nearest rows of a bank of unit-length training features."""

    kind = "knn"

    def __init__(self, bank: Tensor, k: int) -> None:
        super().__init__()
        # Kept in float32 (or the dtype the network is cast to), converted once here: converting a float16 bank
        # on every call cost more than the matmul (serve latency at concurrency 1 went from 21 to 37 ms).
        self.register_buffer("bank", bank.float().contiguous())
        self._file_dtype, self.k = bank.dtype, int(k)

    def forward(self, features: Tensor, logits: Tensor) -> Tensor:
        x = features.float()
        unit = x / torch.clamp(torch.linalg.vector_norm(x, dim=1, keepdim=True), min=1e-12)
        nearest = torch.topk((unit.to(self.bank.dtype) @ self.bank.T).float(), self.k, dim=1).values
        return 1.0 - nearest.mean(dim=1)

    def tensors(self) -> dict[str, Tensor]:
        # as fitted: float16 halves the file (the figures of BENCHMARKS.md "trust" are the same to 4 decimals)
        return {"bank": self.bank.to(self._file_dtype), "k": torch.tensor(self.k, dtype=torch.int64)}


def _check_inputs(features: Tensor, logits: Tensor, labels: Tensor) -> None:
    if features.ndim != 2 or logits.ndim != 2 or labels.ndim != 1:
        raise UsageError(f"fit_ood_score needs features (N, D), logits (N, C) and labels (N,). Received shapes: "
                         f"{tuple(features.shape)}, {tuple(logits.shape)}, {tuple(labels.shape)}.")
    if not (len(features) == len(logits) == len(labels)) or len(features) < 2:
        raise UsageError(f"fit_ood_score needs the same N ≥ 2 rows in features, logits and labels. Received: "
                         f"{len(features)}, {len(logits)}, {len(labels)}.")
    if not (torch.isfinite(features).all() and torch.isfinite(logits).all()):
        raise UsageError("fit_ood_score received NaN or infinite features or logits: check the network's outputs.")


def _fit_mahalanobis(features: np.ndarray, labels: np.ndarray, classes: int) -> _Mahalanobis:
    from sklearn.covariance import LedoitWolf  # noqa: PLC0415 - scikit-learn only when fitting

    means = np.zeros((classes, features.shape[1]))
    centred = np.empty_like(features)
    for c in range(classes):
        rows = labels == c
        if rows.any():  # a class without training rows keeps a zero mean: it is then seldom the nearest
            means[c] = features[rows].mean(0)
            centred[rows] = features[rows] - means[c]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    precision = (precision + precision.T) / 2  # exactly symmetric for the Cholesky factor
    factor = np.linalg.cholesky(precision)  # precision = L Lᵀ, so (x−μ)ᵀ P (x−μ) = ‖(x−μ) L‖²
    return _Mahalanobis(torch.from_numpy(factor).float(), torch.from_numpy(means @ factor).float())


def fit_ood_score(kind: str, *, features: Tensor, logits: Tensor, labels: Tensor, k: int = DEFAULT_KNN_K,
                  max_bytes: int = MAX_OOD_BYTES, half: bool = True, seed: int = 0) -> OODScore:
    """Fit a score of ``kind`` on the training split's features (see ``split_network``), logits and labels.

    ``knn`` keeps its bank of unit-length training features in float16 (``half``; the scores move by about
    1e-4, see BENCHMARKS.md) and at most ``max_bytes`` of it: a random subsample of rows beyond that.

    Example: ``fit_ood_score("knn", features=f, logits=z, labels=y)(f_new, z_new)`` → ``tensor([0.12, ...])``.
    """
    if kind not in OOD_KINDS:
        raise UsageError(f"unknown out-of-distribution score {kind!r}: choose one of {', '.join(OOD_KINDS)}.")
    _check_inputs(features, logits, labels)
    if kind == "msp":
        return _MaxSoftmax()
    if kind == "energy":
        return _Energy()
    if kind == "mahalanobis":
        feats = features.detach().double().cpu().numpy()
        codes = labels.detach().cpu().numpy().astype(int)
        if codes.min() < 0 or codes.max() >= logits.shape[1]:
            raise UsageError(f"labels must be class indices 0..{logits.shape[1] - 1} (the logits' columns).")
        return _fit_mahalanobis(feats, codes, logits.shape[1])
    if not 1 <= k <= _MAX_K:
        raise UsageError(f"k must be between 1 and {_MAX_K} (10 is usual). Received: k={k}.")
    feats = features.detach().float().cpu().numpy()  # float32 is what the bank stores: no double copy
    unit = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    rows = max(1, max_bytes // ((2 if half else 4) * feats.shape[1]))
    if len(unit) > rows:
        unit = unit[np.sort(np.random.default_rng(seed).choice(len(unit), rows, replace=False))]
    bank = torch.from_numpy(unit).to(torch.float16 if half else torch.float32)
    return _Knn(bank, min(k, len(unit)))


def _tensor(tensors: dict[str, Tensor], name: str, shape: tuple, what: str) -> Tensor:
    value = tensors[name]
    if not isinstance(value, Tensor) or value.dtype not in (torch.float32, torch.float16):
        raise ModelFileError(f"the out-of-distribution score's {name!r} must be a float32 or float16 tensor; "
                             f"found {getattr(value, 'dtype', type(value).__name__)}. Re-save the model with petclf.")
    if tuple(value.shape) != shape:
        raise ModelFileError(f"the out-of-distribution score's {name!r} has shape {tuple(value.shape)}; expected "
                             f"{shape} ({what}). The model directory is damaged or was edited: re-save it.")
    if not torch.isfinite(value).all():
        raise ModelFileError(f"the out-of-distribution score's {name!r} holds NaN or infinite values: "
                             "re-save the model.")
    return value


def load_ood_score(kind: str, tensors: dict[str, Tensor], *, feature_dim: int, classes: int) -> OODScore:
    """Rebuild a score from ``OODScore.tensors()`` as read from a model file, every name, shape and dtype checked.

    Example: ``load_ood_score("knn", safetensors.torch.load_file(path), feature_dim=512, classes=37)``.
    """
    if kind not in OOD_KINDS:
        raise ModelFileError(f"the model declares an unknown out-of-distribution score {kind!r}; petclf knows "
                             f"{', '.join(OOD_KINDS)}. Re-save the model with this petclf.")
    expected = {"msp": set(), "energy": set(), "mahalanobis": {"transform", "means"}, "knn": {"bank", "k"}}[kind]
    if set(tensors) != expected:
        raise ModelFileError(f"the {kind} out-of-distribution score needs the tensors {sorted(expected)}; the model "
                             f"file holds {sorted(tensors)}. The model directory is damaged: re-save it.")
    if kind == "msp":
        return _MaxSoftmax()
    if kind == "energy":
        return _Energy()
    if kind == "mahalanobis":
        return _Mahalanobis(_tensor(tensors, "transform", (feature_dim, feature_dim), "features × features").float(),
                            _tensor(tensors, "means", (classes, feature_dim), "classes × features").float())
    k = tensors["k"]
    if not isinstance(k, Tensor) or k.dtype != torch.int64 or k.numel() != 1:
        raise ModelFileError("the knn out-of-distribution score's 'k' must be one int64: re-save the model.")
    bank = tensors["bank"]
    rows = bank.shape[0] if isinstance(bank, Tensor) and bank.ndim == 2 else -1
    most = max(1, MAX_OOD_BYTES // (bank.element_size() * feature_dim)) if isinstance(bank, Tensor) else 0
    if not 1 <= rows <= most:
        raise ModelFileError(f"the knn score's bank has {rows} rows; expected 1 to {most} for {feature_dim} "
                             f"features (at most {MAX_OOD_BYTES // 2**20} MB). Re-save the model.")
    bank = _tensor(tensors, "bank", (rows, feature_dim), "training images × features")
    if not 1 <= int(k) <= min(rows, _MAX_K):
        raise ModelFileError(f"the knn score's k is {int(k)}; expected 1 to {min(rows, _MAX_K)}. Re-save the model.")
    return _Knn(bank, int(k))


def features_at(kind: str) -> str:
    """Where in the network ``kind`` takes its features: ``'pooled'`` (the body's pooled features, as the audit's
    embeddings) or ``'linear'`` (the input of the last Linear; msp and energy use only the logits).

    The distance scores are measured far better on the body's pooled features than on the 512 head features
    trained on the few labelled images (BENCHMARKS.md, "trust"), so ``split_network(model, at=features_at(kind))``.

    Example: ``features_at("knn")`` → ``'pooled'``.
    """
    if kind not in OOD_KINDS:
        raise UsageError(f"unknown out-of-distribution score {kind!r}: choose one of {', '.join(OOD_KINDS)}.")
    return _FEATURES_AT[kind]


def split_network(model: nn.Module, *, at: str = "linear") -> tuple[nn.Module, nn.Module]:
    """A petclf network (``Sequential(body, head)``, the head ending in ``nn.Linear``) as (features, the rest).

    ``at="linear"``: everything up to the input of the last Linear, and that ``nn.Linear``. ``at="pooled"``:
    the body and the head's pooling (fastai's concatenated max and average pooling, flattened), and the rest of
    the head. Either way ``rest(features(x)) == model(x)``.

    Example: ``features, rest = split_network(load_model("model").model, at=features_at("knn"))``.
    """
    if at not in FEATURE_POINTS:
        raise UsageError(f"at must be one of {', '.join(FEATURE_POINTS)}. Received: at={at!r}.")
    if (isinstance(model, nn.Sequential) and len(model) == 2 and isinstance(model[1], nn.Sequential)
            and len(model[1]) >= 1 and isinstance(model[1][-1], nn.Linear)):
        body, head = model
        if at == "linear":
            return nn.Sequential(body, head[:-1]), head[-1]
        if len(head) > 2 and isinstance(head[0], (ConcatPool2d, nn.AdaptiveAvgPool2d)):
            return nn.Sequential(body, head[:2]), head[2:]
    raise UsageError(f"an out-of-distribution score needs a petclf network, Sequential(body, head) with the head "
                     f"starting with pooling and ending in nn.Linear; this model is a {type(model).__name__} used "
                     "whole. Train it with petclf's head (an arch name or a backbone) to get an 'unknown' answer.")


def threshold_at_acceptance(scores: Tensor, accept: float) -> float:
    """The score at or under which a share ``accept`` of ``scores`` (in-distribution, e.g. validation) falls.

    An image is 'unknown' when its score is above it; ``accept=1`` accepts every one of ``scores``.

    Example: ``threshold_at_acceptance(torch.arange(1., 101.), 0.95)`` → ``95.0``.
    """
    if not (isinstance(accept, (int, float)) and 0.0 < accept <= 1.0):
        raise UsageError(f"the acceptance must be a share in (0, 1], e.g. 0.95. Received: {accept!r}.")
    values = scores.detach().flatten().double()
    if values.numel() == 0 or not torch.isfinite(values).all():
        raise UsageError("threshold_at_acceptance needs at least one finite in-distribution score.")
    ordered = torch.sort(values).values
    index = min(len(ordered), max(1, math.ceil(accept * len(ordered) - 1e-9))) - 1
    return float(ordered[index])
