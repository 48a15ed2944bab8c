"""Out-of-sample class probabilities for every labelled image, by k-fold cross-validation.

Two ways, by cost:

* ``features``: a body computes each image's embedding once (a saved model's, or a pretrained
  one); each fold's head is a logistic regression fitted on the embeddings of the other folds.
  Seconds after the embeddings.
* ``trainings``: k networks trained from scratch with the train options, each on k-1 folds,
  predicting the fold it never saw: k times the cost of one training (lr_find, if asked for, runs once).

Either way every image also gets its mean cosine distance to its nearest other images (the runtime's
``knn`` out-of-distribution score) in an embedding space where it was not trained on as a labelled
example (for the outlier check).

The heads go through scikit-learn's ``cross_val_predict`` with the folds as a ``PredefinedSplit``.
The trainings do not: ``cross_val_predict`` wants an estimator that fits arrays in memory and is
cloned per fold, while a fold here is a fastai learner built on file paths (its split passed as a
record), lr_find runs for the first fold only and its rate is reused, and the fold's own network
also gives the held-out images' centroid distances. An estimator wrapper would hide all three.
"""
from __future__ import annotations

import copy
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from petclf.core import log
from petclf.core.errors import DataError, UsageError, WeightsUnavailableError
from petclf.core.options import TrainOptions
from petclf.data.dataset import LabelledImages
from petclf.data.pipeline import Pipeline, make_pipeline
from petclf.runtime.network import ConcatPool2d
from petclf.runtime.ood import DEFAULT_KNN_K, fit_ood_score
from petclf.runtime.predict import Predictor

__all__ = ["OutOfSample", "assign_folds", "embed", "centroid_distances", "knn_distances", "pretrained_body",
           "probabilities_from_features", "probabilities_from_trainings"]


@dataclass(frozen=True)
class OutOfSample:
    """Out-of-sample probabilities (n, classes) and what they cost."""

    probs: np.ndarray
    classes: tuple[str, ...]
    distances: np.ndarray  # mean cosine distance to the nearest other images, knn_distances (n,)
    features: np.ndarray | None  # (n, d) embeddings in one space (features method), else None
    method: str  # 'model', 'pretrained' or 'trainings'
    folds: int
    seconds: dict = field(default_factory=dict)  # embeddings / heads / trainings, measured


def assign_folds(labels: np.ndarray, folds: int, *, seed: int) -> np.ndarray:
    """Each image's fold (0..folds-1), stratified by label, so every fold holds every class it can."""
    from sklearn.model_selection import StratifiedKFold  # noqa: PLC0415 - scikit-learn comes with fastai

    if folds < 2:
        raise UsageError(f"folds must be 2 or more (5 is usual). Received: folds={folds}.")
    if len(labels) < folds:
        raise DataError(f"{len(labels)} images cannot be split into {folds} folds: pass fewer --folds.")
    fold = np.zeros(len(labels), dtype=int)
    with warnings.catch_warnings():  # classes smaller than the fold count: sklearn warns, and still splits
        warnings.simplefilter("ignore", UserWarning)
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        for k, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
            fold[held] = k
    return fold


def _extractor(model: nn.Module) -> nn.Module:
    """The body and the pooling of a petclf network (``Sequential(body, head)``): image → embedding."""
    if (isinstance(model, nn.Sequential) and len(model) == 2 and isinstance(model[1], nn.Sequential)
            and isinstance(model[1][0], (ConcatPool2d, nn.AdaptiveAvgPool2d))):
        return nn.Sequential(model[0], model[1][:2])
    raise UsageError("the audit needs a petclf network (a body, then a head starting with pooling) to compute "
                     "embeddings; this model is an nn.Module used whole. Audit with --no-pretrained instead "
                     "(k trainings from scratch).")


def embed(model: nn.Module, pipeline: Pipeline, paths: list[str], *, device=None, precision: str = "auto",
          bs: int = 64) -> np.ndarray:
    """Embeddings (n, d) of ``paths``: ``model``'s body and pooling on validation-style pixels (``model`` is not changed)."""
    extractor = _extractor(copy.deepcopy(model).float().cpu()).eval()
    predictor = Predictor.from_network(extractor, ("embedding",), pipeline, device=device, precision=precision)
    out = []
    for batch in predictor.iter_readable(paths, bs=bs):
        if batch.failed:
            path, reason = batch.failed[0]
            raise DataError(f"{path} changed during the audit ({reason}): run the audit again.")
        out.append(batch.logits.numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_distances(features: np.ndarray, *, bank: np.ndarray | None = None, k: int = DEFAULT_KNN_K,
                  chunk: int = 1024) -> np.ndarray:
    """Mean cosine distance of each embedding to its ``k`` nearest rows of ``bank`` (default: the other embeddings).

    It is the runtime's ``knn`` out-of-distribution score (``petclf.runtime.ood``), so the audit and a saved
    model's 'unknown' answer agree on what "unlike the training images" means. Unlike the distance to the
    nearest class centroid, it does not flag the images of a class that forms several clusters (whose centroid
    lies between them): see BENCHMARKS.md, "trust" (audit outliers).

    Example: ``knn_distances(oof.features)`` → ``array([0.21, 0.18, …])``.
    """
    import torch  # noqa: PLC0415 - torch comes with the runtime this module already imports

    in_sample = bank is None
    reference = features if in_sample else bank
    # The embedding itself is its own nearest neighbour (distance 0) when it is in the bank: ask for one more
    # and rescale the mean over k+1 to a mean over the k others (exact: a self-match or an exact copy is 0).
    want = min(k + 1 if in_sample else k, len(reference))
    others = want - 1 if in_sample else want
    if others < 1:
        return np.zeros(len(features))
    ref = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    score = fit_ood_score("knn", features=ref, logits=torch.zeros(len(ref), 1), labels=torch.zeros(len(ref)),
                          k=want, max_bytes=max(ref.numel() * 4, 1), half=False)  # every image, exactly
    out = np.empty(len(features))
    with torch.inference_mode():
        for start in range(0, len(features), chunk):  # an (n, n) similarity matrix at once would not fit
            rows = torch.from_numpy(np.ascontiguousarray(features[start:start + chunk], dtype=np.float32))
            out[start:start + chunk] = score(rows, torch.zeros(len(rows), 1)).double().numpy()
    return out * want / others


def centroid_distances(features: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Cosine distance of each embedding to the nearest class centroid: the audit's outlier distance before
    ``knn_distances``, which misses images between a class's clusters (kept to compare the two)."""
    unit = _unit(features)
    centroids = np.stack([unit[codes == c].mean(0) if (codes == c).any() else np.zeros(unit.shape[1])
                          for c in range(n_classes)])
    return 1.0 - (unit @ _unit(centroids).T).max(1)


def probabilities_from_features(features: np.ndarray, codes: np.ndarray, n_classes: int, fold: np.ndarray, *,
                                seed: int) -> np.ndarray:
    """Out-of-sample probabilities from a logistic-regression head per fold, fitted on the other folds' embeddings."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.model_selection import PredefinedSplit, cross_val_predict  # noqa: PLC0415
    from sklearn.pipeline import make_pipeline as sk_pipeline  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

    head = sk_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1, random_state=seed))
    with warnings.catch_warnings():
        # A class smaller than the fold count is missing from some folds' training: its column is 0 there, which is
        # what the audit wants (that image's label is then unlikely); sklearn's warning would only alarm.
        warnings.filterwarnings("ignore", message="Number of classes in training fold", category=RuntimeWarning)
        found = cross_val_predict(head, features, codes, cv=PredefinedSplit(fold), method="predict_proba")
    # Its columns are the classes that have images at all, in order; a class without any stays 0.
    probs = np.zeros((len(codes), n_classes))
    probs[:, np.unique(codes)] = found
    return probs


def pretrained_body(options: TrainOptions, n_classes: int) -> tuple[nn.Module, Pipeline]:
    """A pretrained network (its head untrained) and its preprocessing, for embeddings."""
    from petclf.learn.models import build_model  # noqa: PLC0415 - fastai: only when this path runs

    try:
        built = build_model(options.arch, n_classes, pretrained=True, weights=options.weights)
    except WeightsUnavailableError as err:
        raise WeightsUnavailableError(f"{err} Or audit with --no-pretrained: k trainings from scratch, "
                                      "slower, no weights needed.") from None
    return built.model, make_pipeline(size=options.size, stats=built.stats)


def probabilities_from_trainings(data, dataset: LabelledImages, codes: np.ndarray, classes: tuple[str, ...],
                                 fold: np.ndarray, options: TrainOptions, *, per_class_reference: int = 64
                                 ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Train one network per fold (from the train options) and predict the fold it did not see.

    Returns (probs, distances, seconds). Distances use the fold's own network: the knn distances of its
    held-out images to up to ``per_class_reference`` of its training images per class, over their median
    (so that folds compare).
    """
    from petclf.learn.learner import learner_predictor, quick_learner, run_settings  # noqa: PLC0415
    from petclf.learn.recipe import train  # noqa: PLC0415
    from petclf.learn.distributed import bare  # noqa: PLC0415

    paths = list(dataset.frame.path)
    rel = [os.path.relpath(p, dataset.root) for p in paths]
    probs = np.zeros((len(paths), len(classes)))
    distances = np.zeros(len(paths))
    rng = np.random.default_rng(options.seed)
    lr, timings = options.lr, []
    for k in range(int(fold.max()) + 1):
        start = time.perf_counter()
        record = {"root": str(dataset.root), "files": {r: ("valid" if f == k else "train") for r, f in zip(rel, fold)}}
        learn = quick_learner(data, split=record, options=options)
        # keep_best off: choosing the epoch by the held-out fold's error would use the very labels under audit.
        result = train(learn, epochs=options.epochs, freeze_epochs=options.freeze_epochs, lr=lr,
                       lr_find=options.lr_find, progress=False,
                       feature_cache=options.feature_cache, keep_best=False)
        lr = result.lr  # with lr_find, it runs for the first fold only
        held = np.nonzero(fold == k)[0]
        predictor = learner_predictor(learn, precision=options.precision)
        fold_probs = np.concatenate([predictor.probabilities(z).numpy()
                                     for z in predictor.iter_logits([paths[i] for i in held])])
        column = {c: classes.index(c) for c in predictor.classes}
        probs[np.ix_(held, [column[c] for c in predictor.classes])] = fold_probs
        reference = np.concatenate([rng.permutation(np.nonzero((fold != k) & (codes == c))[0])[:per_class_reference]
                                    for c in range(len(classes))])
        rows = np.concatenate([held, reference])
        feats = embed(bare(learn.model), run_settings(learn).pipeline, [paths[i] for i in rows],
                      device=learn.dls.device, precision=options.precision)
        is_ref = np.zeros(len(rows), bool)
        is_ref[len(held):] = True
        held_distances = knn_distances(feats[~is_ref], bank=feats[is_ref])
        # Each fold's network has its own embedding space: distances are compared in units of the fold's median.
        distances[held] = held_distances / max(float(np.median(held_distances)), 1e-9)
        timings.append(time.perf_counter() - start)
        log.info(f"audit fold {k + 1}/{int(fold.max()) + 1}: trained and predicted {len(held)} held-out images "
                 f"in {timings[-1]:.0f} s")
    return probs, distances, {"trainings": sum(timings), "per_fold": timings, "lr": lr}
