"""Predict with a saved model directory, preprocessing images exactly as validation does.

``Predictor`` is one class (reading, TTA, calibration, the "unknown" flag, backends); its twin for a trusted
fastai pickle, ``petclf.runtime.pickled.PickledPredictor``, mirrors the part of its interface ``petclf predict`` uses.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from petclf.core.defaults import DEFAULT_THRESHOLD, MULTI_LABEL
from petclf.core.errors import UsageError
from petclf.data.images import ImageLike, Presizer
from petclf.data.pipeline import Pipeline
from petclf.runtime.device import pick_device, pick_precision
from petclf.runtime.modeldir import load_model
from petclf.runtime.ood import features_at, split_network
from petclf.runtime.preprocess import PixelClassifier
from petclf.runtime.trust import ScoredNetwork, Unknown, load_unknown

if TYPE_CHECKING:
    from petclf.runtime.graphs import GraphNet

__all__ = ["Answer", "DEFAULT_THRESHOLD", "DEFAULT_TOPK", "ImageLike", "Predictor", "ReadBatch", "UNKNOWN",
           "labels_over", "top_classes"]

#: Classes ``predict`` returns when not told (single-label models).
DEFAULT_TOPK = 3
#: The answer of ``--reject-unknown`` (and ``Predictor(reject_unknown=True)``) for an image unlike the training ones.
UNKNOWN = "unknown"
# Mean probabilities of exactly 0 or 1 would make infinite scores; this keeps them finite in fp32.
_TTA_EPS = 1e-7


class ReadBatch(NamedTuple):
    """One batch of ``Predictor.iter_readable``: the images read, their scores, (image, reason) for the rest, and
    the images' OOD scores (None for a model without an "unknown" detector)."""

    items: list
    logits: torch.Tensor
    failed: list
    ood: torch.Tensor | None = None


class Answer(NamedTuple):
    """One image's answer: ``top`` as ``predict`` gives it, the OOD score (higher: less like the training images;
    None without a detector) and whether it is over the "unknown" threshold."""

    top: list[tuple[str, float]]
    ood_score: float | None
    unknown: bool


def _fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold BatchNorm into the convolution before it (inference only); unchanged if the model cannot be traced."""
    from torch.fx.experimental.optimization import fuse  # noqa: PLC0415

    try:
        # In place: the predictor owns its network, and a copy would double the weights in memory.
        return fuse(model.eval(), inplace=True)
    except Exception:  # noqa: BLE001 - tracing fails on data-dependent control flow; fusion is optional
        return model


class Predictor:
    """Predictions from a petclf model directory: the top-k classes, or for a multi-label model every label
    over its threshold.

    Example::

        pred = Predictor("runs/pets/model")
        pred.predict("my_cat.jpg", topk=3)   # [('Bengal', 0.91), ('Egyptian_Mau', 0.05), …]
        Predictor("runs/planet/model").predict("tile.jpg")   # [('clear', 0.97), ('primary', 0.93)]

    ``tta=True`` averages the probabilities of each image and its horizontal mirror (twice the compute): it
    helps on photos whose class does not change when flipped (pets, scenes), and is wrong for text or digits,
    where the model was trained without flips. Example: ``Predictor("runs/pets/model", tta=True)``.

    Probabilities are calibrated: a single-label model's logits are divided by the temperature fitted on its
    validation split (``self.temperature``; 1 for models saved before calibration). A single-label model trained
    by petclf also scores how unlike its training images each image is; ``judge``/``judge_batch`` return an
    ``Answer`` with that score and an ``unknown`` flag, while ``predict`` keeps returning the (class, probability)
    list — empty for an unknown image when ``reject_unknown=True``. Example:
    ``Predictor("runs/pets/model").judge("car.jpg")`` → ``Answer(top=[('Bengal', 0.41), …], ood_score=-2.9,
    unknown=True)``.
    """

    def __init__(self, model_dir: str | Path, *, device: str | torch.device | None = None,
                 precision: str = "auto", arch: Callable | nn.Module | None = None, tta: bool | None = None,
                 unknown: float | None = None, reject_unknown: bool = False, backend: str = "torch",
                 int8: bool = False, graph: str | Path | None = None, streams: int = 1) -> None:
        """``tta``: also score each image's horizontal mirror and average the probabilities (flip-invariant
        photos only, not text or digits); ``None`` uses the model's own setting (``petclf train --tta``), so that
        predictions match its report. ``unknown``: the share (0.5 to 1) of ordinary images to accept as known,
        instead of the acceptance the model was trained with (the threshold moves along the validation curve
        stored in the model; set ``unknown_threshold`` for a raw score threshold). ``reject_unknown``: answer
        nothing (``predict``) for images flagged unknown. Example:
        ``Predictor("runs/pets/model", unknown=0.99, reject_unknown=True)``.

        ``backend``: 'torch', or 'onnxruntime' / 'openvino' running the model's exported graph on the CPU (its
        fp32 graph, exported and cached on first use; ``int8=True`` its ``petclf export --int8`` graph; ``graph``
        a given ONNX file). ``streams``: on those backends, forwards that may run at once from as many threads,
        each on a share of the cores (``petclf serve --streams``; see ``GraphNet``); torch runs one at a time.
        Example: ``Predictor("runs/pets/model", backend="onnxruntime", int8=True)``."""
        loaded = load_model(model_dir, arch=arch)
        single = loaded.meta.get("task") != MULTI_LABEL
        detector = load_unknown(model_dir, loaded.meta, loaded.model) if single else None
        net = None
        if backend != "torch" or int8 or graph is not None:
            net = _graph_net(model_dir, backend=backend, int8=int8, graph=graph, multi_label=not single,
                             streams=streams)
        elif streams != 1:
            raise UsageError(f"streams={streams!r} applies to backend 'onnxruntime' or 'openvino'; the torch backend "
                             "runs one forward at a time on every core: leave streams out or pass a graph backend.")
        self._setup(loaded.model, loaded.classes, loaded.pipeline, device=device, precision=precision,
                    multi_label=not single, thresholds=loaded.meta.get("thresholds"),
                    tta=bool(loaded.meta.get("tta", False)) if tta is None else tta,
                    temperature=loaded.temperature, detector=detector,
                    unknown=unknown, reject_unknown=reject_unknown, net=net)
        self.meta = loaded.meta

    @classmethod
    def from_network(cls, model: nn.Module, classes: Sequence[str], pipeline: Pipeline, *,
                     device: str | torch.device | None = None, precision: str = "auto", multi_label: bool = False,
                     thresholds: Sequence[float] | None = None, tta: bool = False, temperature: float = 1.0,
                     detector: Unknown | None = None) -> "Predictor":
        """A predictor for a network in memory (its classes and preprocessing given), without a model directory.

        The network is used as it is (fused and cast in place): pass a copy to keep the original.
        ``multi_label`` models give each label a sigmoid probability, compared with ``thresholds``
        (one per class; default 0.5). ``tta`` averages the probabilities of each image and its horizontal
        mirror: for flip-invariant photos, not text or digits (see ``Predictor``). ``temperature`` and
        ``detector`` are a single-label model's calibration and "unknown" detector (``petclf.runtime.trust``).

        Example: ``Predictor.from_network(copy.deepcopy(net), ["cat", "dog"], make_pipeline(size=224))``.
        """
        predictor = cls.__new__(cls)
        predictor._setup(model, classes, pipeline, device=device, precision=precision, multi_label=multi_label,
                         thresholds=thresholds, tta=tta, temperature=temperature, detector=detector)
        predictor.meta = {}
        return predictor

    def accept_unknown(self, share: float) -> None:
        """Move the "unknown" threshold so that ``share`` (0.5 to 1) of ordinary images stay known, from the curve the
        model stores; a model without a detector refuses.

        Example: ``Predictor("runs/pets/model").accept_unknown(0.99)``.
        """
        if self.detector is None:
            raise UsageError("accept_unknown needs a single-label model trained with an 'unknown' detector (petclf "
                             "train writes one); this model has none: train it again with this petclf.")
        self.unknown_threshold = self.detector.threshold_for(share)
        self.unknown_accept = float(share)

    def _setup(self, model: nn.Module, classes, pipeline, *, device, precision: str, multi_label: bool,
               thresholds: Sequence[float] | None, tta: bool = False, temperature: float = 1.0,
               detector: Unknown | None = None, unknown: float | None = None, reject_unknown: bool = False,
               net: "GraphNet | None" = None) -> None:
        self.tta = bool(tta)
        self.temperature = float(temperature)
        self.detector, self.reject_unknown = detector, bool(reject_unknown)
        if (unknown is not None or reject_unknown) and detector is None:
            raise UsageError(f"{'unknown=' if unknown is not None else 'reject_unknown'} needs a single-label model "
                             "trained with an 'unknown' detector (petclf train writes one); this model has none: "
                             "train it again with this petclf.")
        if net is not None and detector is not None and not net.scores_ood:
            raise UsageError(f"the graph {net.path} has no 'ood_score' output, while this model has an 'unknown' "
                             "detector: export it again with this petclf (petclf export MODEL --int8, or leave "
                             "graph= out to use the cached fp32 graph).")
        #: The OOD score over which an image is flagged unknown (None: no detector); may be set directly.
        self.unknown_threshold: float | None = None
        #: The share of ordinary images that threshold keeps known (None: no detector, or a threshold set directly).
        self.unknown_accept: float | None = None
        if detector is not None and unknown is None:  # the threshold as fitted, not read back from the curve
            self.unknown_threshold, self.unknown_accept = detector.threshold, detector.accept
        elif detector is not None:
            self.accept_unknown(unknown)
        self.backend = "torch" if net is None else net.backend
        #: Forwards that may run at once (``scores`` and its kin are then safe from as many threads).
        self.streams = 1 if net is None else net.streams
        self.device = pick_device(device) if net is None else torch.device("cpu")
        self.precision = (pick_precision(precision, self.device, model=model, size=pipeline.size) if net is None
                          else net.precision)
        self.classes, self.pipeline = tuple(classes), pipeline
        self.multi_label = bool(multi_label)
        if thresholds is not None and len(thresholds) != len(self.classes):
            raise UsageError(f"expected one threshold per class ({len(self.classes)}). Received {len(thresholds)}.")
        self.thresholds = (tuple(float(t) for t in thresholds) if thresholds is not None
                           else (DEFAULT_THRESHOLD,) * len(self.classes)) if self.multi_label else None
        # Weights stored in the compute dtype: autocast would re-cast every weight on every call,
        # which dominates the cost of small batches.
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision, torch.float32)
        if net is not None:
            self.net = net  # the exported graph stands in for the forward call; all else stays as with torch
        else:
            if detector is not None:
                features, rest = split_network(model, at=features_at(detector.score.kind))
                model = ScoredNetwork(_fuse_conv_bn(features), rest, detector.score)
            else:
                model = _fuse_conv_bn(model)
            model = model.to(dtype=dtype, memory_format=torch.channels_last)
            self.net = PixelClassifier(model, self.pipeline, dtype=dtype).to(self.device).eval()
        self._presize = Presizer(self.pipeline.presize)
        self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
        self._prefetch = ThreadPoolExecutor(max_workers=1)

    def pixels(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """(N, presize, presize, 3) uint8: the images read and centre-cropped as in validation."""
        # PIL decodes and resizes without the GIL, so threads read a batch on every core.
        arrays = list(self._pool.map(self._presize.read, images))
        return torch.from_numpy(np.stack(arrays))

    def logits(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Raw fp32 scores, one row per image."""
        pixels = self.pixels(images).to(self.device)
        with torch.inference_mode():
            return self.scores(pixels).cpu()

    def scores(self, pixels: torch.Tensor) -> torch.Tensor:
        """Scores of (N, presize, presize, 3) uint8 pixels on the predictor's device (call under inference mode);
        with ``tta``, those of the mean probabilities of the images and their mirrors, so ``probabilities`` of
        them is that mean.

        Example: ``pred.scores(pred.pixels(["a.jpg"]))`` → a (1, classes) tensor.
        """
        return self.scores_and_ood(pixels)[0]

    def scores_and_ood(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``scores`` of the pixels and their OOD scores (None without a detector; with ``tta``, those of the
        images as given, as the threshold was chosen).

        Example: ``logits, ood = pred.scores_and_ood(pred.pixels(["a.jpg"]))``.
        """
        if not self.tta:
            return self._split(self.net(pixels))
        n = pixels.shape[0]
        # One batch of 2N: on a CPU one call costs less than two of N (less dispatch, better use of the cores).
        both, ood = self._split(self.net(torch.cat([pixels, pixels.flip(2)])).float())
        ood = None if ood is None else ood[:n]
        # Probabilities are averaged, not logits: a confident view must not be outvoted by a scale of scores.
        if self.multi_label:
            probs = both.sigmoid()
            return torch.logit((probs[:n] + probs[n:]) / 2, eps=_TTA_EPS), ood
        t = self.temperature
        probs = (both / t).softmax(dim=1)
        # Scaled back by t, so that ``probabilities`` (softmax of scores / t) is the mean calibrated probability.
        return ((probs[:n] + probs[n:]) / 2).clamp_min(_TTA_EPS).log() * t, ood

    def _split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.detector is None:
            return out, None
        return out[:, :-1], out[:, -1].float()

    def predict(self, image: ImageLike, *, topk: int | None = None) -> list[tuple[str, float]]:
        """The ``topk`` (default 3) most likely classes of one image with their probabilities; for a multi-label
        model, every label at or over its threshold, most likely first (``topk``: the top-k of all labels).

        Example: ``Predictor(d).predict("seven_3.jpg", topk=1)`` → ``[('seven', 0.998)]``.
        """
        return self.judge(image, topk=topk).top

    def judge(self, image: ImageLike, *, topk: int | None = None) -> Answer:
        """``predict``'s answer for one image with its OOD score and ``unknown`` flag.

        Example: ``Predictor(d).judge("car.jpg", topk=1)`` → ``Answer(top=[], ood_score=-1.2, unknown=True)`` with
        ``reject_unknown=True``.
        """
        return self.judge_batch([image], topk=topk)[0]

    def judge_batch(self, images: Iterable[ImageLike], *, bs: int = 64, topk: int | None = None) -> list[Answer]:
        """``judge`` for many images, ``bs`` at a time, in the order given.

        Example: ``[a.unknown for a in Predictor(d).judge_batch(paths)]`` → ``[False, True]``.
        """
        return [answer for batch in self._batches(list(images), bs=bs, skip=False)
                for answer in self.answers(batch.logits, batch.ood, topk=topk)]

    def answers(self, logits: torch.Tensor, ood: torch.Tensor | None, *, topk: int | None = None) -> list[Answer]:
        """Each row of scores and OOD scores as ``judge`` answers.

        Example: ``[pred.answers(b.logits, b.ood) for b in pred.iter_readable(paths)]``.
        """
        tops = self.decide(logits, topk=topk)
        if ood is None or self.unknown_threshold is None:
            return [Answer(top, None, False) for top in tops]
        answers = []
        for top, score in zip(tops, ood.tolist()):
            unknown = score > self.unknown_threshold
            answers.append(Answer([] if unknown and self.reject_unknown else top, score, unknown))
        return answers

    def predict_batch(self, images: Iterable[ImageLike], *, bs: int = 64,
                      topk: int | None = None) -> list[list[tuple[str, float]]]:
        """Predict many images, ``bs`` at a time, as ``predict`` does; results come in the order given.

        Example: ``Predictor(d).predict_batch(["a.jpg", "b.jpg"], topk=1)`` → ``[[('cat', 0.97)], [('dog', 0.88)]]``.
        """
        return [answer.top for answer in self.judge_batch(images, bs=bs, topk=topk)]

    def decide(self, logits: torch.Tensor, *, topk: int | None = None) -> list[list[tuple[str, float]]]:
        """Each row of scores as ``predict`` answers: the top-k classes, or the labels over their thresholds.

        Example: ``pred.decide(pred.logits(["a.jpg"]))`` → ``[[('cat', 0.97), ('dog', 0.02), ('fox', 0.01)]]``.
        """
        probs = self.probabilities(logits)
        if self.multi_label and topk is None:
            return labels_over(probs, self.classes, self.thresholds)
        return top_classes(probs, self.classes, DEFAULT_TOPK if topk is None else topk)

    def iter_logits(self, images: Sequence[ImageLike], *, bs: int = 64) -> Iterator[torch.Tensor]:
        """fp32 scores ``bs`` images at a time, in order; the next batch is read while the network runs.

        Example: ``probs = torch.cat([z.softmax(1) for z in Predictor(d).iter_logits(paths)])``.
        """
        for batch in self._batches(images, bs=bs, skip=False):
            yield batch.logits

    def iter_readable(self, images: Sequence[ImageLike], *, bs: int = 64) -> Iterator[ReadBatch]:
        """Like ``iter_logits``, but files that cannot be read (gone, damaged) are left out and named with a reason.

        Example: ``for b in Predictor(d).iter_readable(paths): print(b.items, b.failed)``.
        """
        return self._batches(images, bs=bs, skip=True)

    def _batches(self, images: Sequence[ImageLike], *, bs: int, skip: bool) -> Iterator[ReadBatch]:
        read = self._pixels_skipping if skip else (lambda chunk: (self.pixels(chunk), list(chunk), []))
        chunks = [images[i:i + bs] for i in range(0, len(images), bs)]
        pending = self._prefetch.submit(read, chunks[0]) if chunks else None
        for k in range(len(chunks)):
            pixels, items, failed = pending.result()
            if k + 1 < len(chunks):
                pending = self._prefetch.submit(read, chunks[k + 1])
            if pixels is None:
                logits, ood = torch.zeros(0, len(self.classes)), None
            else:
                with torch.inference_mode():
                    logits, ood = self.scores_and_ood(pixels.to(self.device))
                logits, ood = logits.cpu(), None if ood is None else ood.cpu()
            yield ReadBatch(items, logits, failed, ood)

    def _pixels_skipping(self, images: Sequence[ImageLike]) -> tuple[torch.Tensor | None, list, list]:
        read = self._presize.read_readable(images, mapper=self._pool.map)
        return (None if read.pixels is None else torch.from_numpy(read.pixels), [images[k] for k in read.kept],
                [(images[k], reason) for k, reason in read.failed])

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities from the scores of ``logits``/``iter_logits``: softmax at the model's temperature, or each
        label's sigmoid for a multi-label model.

        Example: ``pred.probabilities(pred.logits(["a.jpg"]))`` → a (1, classes) tensor.
        """
        if self.multi_label:
            return logits.float().sigmoid()
        return (logits.float() / self.temperature).softmax(dim=1)



def _graph_net(model_dir: str | Path, *, backend: str, int8: bool, graph: str | Path | None,
               multi_label: bool, streams: int) -> "GraphNet":
    """The graph ``Predictor`` runs on a non-torch backend (see ``petclf.runtime.graphs``)."""
    from petclf.runtime.graphs import GraphNet, graph_for, require_runtime  # noqa: PLC0415 - only for those backends

    if backend == "torch":
        raise UsageError("an ONNX graph (int8 or a given file) runs on backend 'onnxruntime' or 'openvino', not "
                         "'torch': pass backend='onnxruntime'.")
    require_runtime(backend)
    return GraphNet(graph_for(model_dir, int8=int8, graph=graph), backend=backend, multi_label=multi_label,
                    streams=streams)


def top_classes(probs: torch.Tensor, classes: Sequence[str], topk: int) -> list[list[tuple[str, float]]]:
    """For each row of ``probs`` (n, classes): the ``topk`` (class, probability) pairs, most likely first."""
    if topk < 1:
        raise UsageError(f"topk must be a positive integer. Received: topk={topk}.")
    values, indices = probs.topk(min(topk, len(classes)), dim=1)
    return [[(classes[i], float(p)) for p, i in zip(vs, ix)] for vs, ix in zip(values.tolist(), indices.tolist())]


def labels_over(probs: torch.Tensor, classes: Sequence[str],
                thresholds: Sequence[float]) -> list[list[tuple[str, float]]]:
    """For each row of ``probs`` (n, labels): the (label, probability) pairs at or over their thresholds, most likely
    first."""
    rows = []
    for row in probs.tolist():
        picked = [(classes[i], p) for i, p in enumerate(row) if p >= thresholds[i]]
        rows.append(sorted(picked, key=lambda pair: -pair[1]))
    return rows
