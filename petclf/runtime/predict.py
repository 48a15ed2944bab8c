"""Predict with a saved model directory, preprocessing images exactly as validation does."""
from __future__ import annotations

import csv as csv_module
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from petclf.core.atomic import atomic_path
from petclf.core.defaults import DEFAULT_THRESHOLD, MULTI_LABEL
from petclf.core.destinations import output_file
from petclf.core.errors import UsageError, require_positive
from petclf.core.safe_text import csv_cell, printable
from petclf.data.images import Presizer
from petclf.data.images import IMAGE_EXTENSIONS
from petclf.data.pipeline import Pipeline
from petclf.runtime.device import pick_device, pick_precision
from petclf.runtime.modeldir import load_model
from petclf.runtime.pickled import load_pickled_learner
from petclf.runtime.preprocess import PixelClassifier

if TYPE_CHECKING:
    from petclf.runtime.graphs import GraphNet

__all__ = ["DEFAULT_THRESHOLD", "DEFAULT_TOPK", "Predictor", "ReadBatch", "expand_images", "labels_over",
           "predict_files", "top_classes"]

ImageLike = str | Path | Image.Image
#: Classes ``predict`` returns when not told (single-label models).
DEFAULT_TOPK = 3
# Mean probabilities of exactly 0 or 1 would make infinite scores; this keeps them finite in fp32.
_TTA_EPS = 1e-7


class ReadBatch(NamedTuple):
    """One batch of ``Predictor.iter_readable``: the images read, their scores, and (image, reason) for the rest."""

    items: list
    logits: torch.Tensor
    failed: list


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
    """

    def __init__(self, model_dir: str | Path, *, device: str | torch.device | None = None,
                 precision: str = "auto", arch: Callable | nn.Module | None = None, tta: bool | None = None,
                 backend: str = "torch", int8: bool = False, graph: str | Path | None = None) -> None:
        """``tta``: also score each image's horizontal mirror and average the probabilities (flip-invariant
        photos only, not text or digits); ``None`` uses the model's own setting (``petclf train --tta``), so that
        predictions match its report. Example: ``Predictor("runs/pets/model", tta=True)``.

        ``backend``: 'torch', or 'onnxruntime' / 'openvino' running the model's exported graph on the CPU (its
        fp32 graph, exported and cached on first use; ``int8=True`` its ``petclf export --int8`` graph; ``graph``
        a given ONNX file). Example: ``Predictor("runs/pets/model", backend="onnxruntime", int8=True)``."""
        loaded = load_model(model_dir, arch=arch)
        multi_label = loaded.meta.get("task") == MULTI_LABEL
        net = None
        if backend != "torch" or int8 or graph is not None:
            net = _graph_net(model_dir, backend=backend, int8=int8, graph=graph, multi_label=multi_label)
        self._setup(loaded.model, loaded.classes, loaded.pipeline, device=device, precision=precision,
                    multi_label=multi_label, thresholds=loaded.meta.get("thresholds"),
                    tta=bool(loaded.meta.get("tta", False)) if tta is None else tta, net=net)
        self.meta = loaded.meta

    @classmethod
    def from_network(cls, model: nn.Module, classes: Sequence[str], pipeline: Pipeline, *,
                     device: str | torch.device | None = None, precision: str = "auto", multi_label: bool = False,
                     thresholds: Sequence[float] | None = None, tta: bool = False) -> "Predictor":
        """A predictor for a network in memory (its classes and preprocessing given), without a model directory.

        The network is used as it is (fused and cast in place): pass a copy to keep the original.
        ``multi_label`` models give each label a sigmoid probability, compared with ``thresholds``
        (one per class; default 0.5). ``tta`` averages the probabilities of each image and its horizontal
        mirror: for flip-invariant photos, not text or digits (see ``Predictor``).

        Example: ``Predictor.from_network(copy.deepcopy(net), ["cat", "dog"], make_pipeline(size=224))``.
        """
        predictor = cls.__new__(cls)
        predictor._setup(model, classes, pipeline, device=device, precision=precision, multi_label=multi_label,
                         thresholds=thresholds, tta=tta)
        predictor.meta = {}
        return predictor

    def _setup(self, model: nn.Module, classes, pipeline, *, device, precision: str, multi_label: bool,
               thresholds: Sequence[float] | None, tta: bool = False, net: "GraphNet | None" = None) -> None:
        self.tta = bool(tta)
        self.backend = "torch" if net is None else net.backend
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
        if net is None:
            model = _fuse_conv_bn(model).to(dtype=dtype, memory_format=torch.channels_last)
            self.net = PixelClassifier(model, self.pipeline, dtype=dtype).to(self.device).eval()
        else:
            self.net = net  # the exported graph stands in for the forward call; all else stays as with torch
        self._presize = Presizer(self.pipeline.presize)
        self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
        self._prefetch = ThreadPoolExecutor(max_workers=1)

    def pixels(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """(N, presize, presize, 3) uint8: the images read and centre-cropped as in validation."""
        # PIL decodes and resizes without the GIL, so threads read a batch on every core.
        arrays = list(self._pool.map(self._read, images))
        return torch.from_numpy(np.stack(arrays))

    def _read(self, image: ImageLike) -> np.ndarray:
        """One image's presized pixels, or a UsageError that says why the file cannot be read."""
        try:
            return self._presize(image)
        except (FileNotFoundError, IsADirectoryError):
            raise UsageError(f"image {image} does not exist.") from None
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
            raise UsageError(f"cannot read {image} as an image ({err}).") from None

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
        if not self.tta:
            return self.net(pixels)
        n = pixels.shape[0]
        # One batch of 2N: on a CPU one call costs less than two of N (less dispatch, better use of the cores).
        both = self.net(torch.cat([pixels, pixels.flip(2)])).float()
        # Probabilities are averaged, not logits: a confident view must not be outvoted by a scale of scores.
        if self.multi_label:
            probs = both.sigmoid()
            return torch.logit((probs[:n] + probs[n:]) / 2, eps=_TTA_EPS)
        probs = both.softmax(dim=1)
        return ((probs[:n] + probs[n:]) / 2).clamp_min(_TTA_EPS).log()

    def predict(self, image: ImageLike, *, topk: int | None = None) -> list[tuple[str, float]]:
        """The ``topk`` (default 3) most likely classes of one image with their probabilities; for a multi-label
        model, every label at or over its threshold, most likely first (``topk``: the top-k of all labels).

        Example: ``Predictor(d).predict("seven_3.jpg", topk=1)`` → ``[('seven', 0.998)]``.
        """
        return self.decide(self.logits([image]), topk=topk)[0]

    def predict_batch(self, images: Iterable[ImageLike], *, bs: int = 64,
                      topk: int | None = None) -> list[list[tuple[str, float]]]:
        """Predict many images, ``bs`` at a time, as ``predict`` does; results come in the order given.

        Example: ``Predictor(d).predict_batch(["a.jpg", "b.jpg"], topk=1)`` → ``[[('cat', 0.97)], [('dog', 0.88)]]``.
        """
        return [top for logits in self.iter_logits(list(images), bs=bs) for top in self.decide(logits, topk=topk)]

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
                logits = torch.zeros(0, len(self.classes))
            else:
                with torch.inference_mode():
                    logits = self.scores(pixels.to(self.device)).cpu()
            yield ReadBatch(items, logits, failed)

    def _pixels_skipping(self, images: Sequence[ImageLike]) -> tuple[torch.Tensor | None, list, list]:
        def attempt(image: ImageLike) -> tuple[np.ndarray | None, str]:
            try:
                return self._read(image), ""
            except UsageError as err:
                return None, str(err)

        results = list(self._pool.map(attempt, images))
        kept = [(image, array) for image, (array, _) in zip(images, results) if array is not None]
        failed = [(image, reason) for image, (array, reason) in zip(images, results) if array is None]
        pixels = torch.from_numpy(np.stack([a for _, a in kept])) if kept else None
        return pixels, [image for image, _ in kept], failed

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities from the scores of ``logits``/``iter_logits``: softmax, or each label's sigmoid for a
        multi-label model.

        Example: ``pred.probabilities(pred.logits(["a.jpg"]))`` → a (1, classes) tensor.
        """
        return logits.float().sigmoid() if self.multi_label else logits.float().softmax(dim=1)



def _graph_net(model_dir: str | Path, *, backend: str, int8: bool, graph: str | Path | None,
               multi_label: bool) -> "GraphNet":
    """The graph ``Predictor`` runs on a non-torch backend (see ``petclf.runtime.graphs``)."""
    from petclf.runtime.graphs import GraphNet, graph_for, require_runtime  # noqa: PLC0415 - only for those backends

    if backend == "torch":
        raise UsageError("an ONNX graph (int8 or a given file) runs on backend 'onnxruntime' or 'openvino', not "
                         "'torch': pass backend='onnxruntime'.")
    require_runtime(backend)
    return GraphNet(graph_for(model_dir, int8=int8, graph=graph), backend=backend, multi_label=multi_label)


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


def expand_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders replaced by the image files inside them (sorted, recursive)."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            files.append(item)
    return files


class _PickledPredictor:
    """fastai's own ``Learner.predict`` for an ``export.pkl`` the user chose to trust, one image at a time."""

    def __init__(self, path: str | Path) -> None:
        import fastai.callback.progress  # noqa: F401, PLC0415 - Learner.no_bar, used here

        self.learn = load_pickled_learner(path, trust=True)
        self.classes = tuple(self.learn.dls.vocab)
        self.multi_label = False

    def decide(self, logits: torch.Tensor, *, topk: int | None = None) -> list[list[tuple[str, float]]]:
        """As ``Predictor.decide`` for a single-label fastai learner."""
        return top_classes(logits.softmax(dim=1), self.classes, DEFAULT_TOPK if topk is None else topk)

    def iter_readable(self, images: Sequence[ImageLike], *, bs: int = 64) -> Iterator[ReadBatch]:
        """As ``Predictor.iter_readable``; the scores are log-probabilities, so their softmax is fastai's output."""
        for start in range(0, len(images), bs):
            items, rows, failed = [], [], []
            for image in images[start:start + bs]:
                try:
                    with self.learn.no_bar():
                        probs = self.learn.predict(Path(image) if not isinstance(image, Image.Image) else image)[2]
                except (OSError, ValueError, UnidentifiedImageError) as err:
                    failed.append((image, f"cannot read {image} as an image ({err})."))
                    continue
                items.append(image)
                rows.append(probs.float().clamp_min(1e-12).log())
            yield ReadBatch(items, torch.stack(rows) if rows else torch.zeros(0, len(self.classes)), failed)


def predict_files(model_dir: str | Path, inputs: Sequence[str | Path], *, topk: int | None = None,
                  csv: str | Path | None = None, bs: int = 64, trust_pickle: bool = False,
                  tta: bool | None = None, backend: str = "torch", int8: bool = False,
                  graph: str | Path | None = None) -> int:
    """Print predictions for image files and folders, as ``Predictor.predict`` makes them (top-k classes, or the
    labels over their thresholds for a multi-label model); unreadable files are reported, not fatal.

    Returns 0 when every file was predicted, 1 when some could not be read.

    Example: ``predict_files("runs/pets/model", ["photos/"], csv="preds.csv")``.
    """
    require_positive(bs=bs)
    if topk is not None:
        require_positive(topk=topk)
    csv_path = output_file(csv) if csv is not None else None
    if Path(model_dir).is_file() and trust_pickle:
        predictor = _PickledPredictor(model_dir)
    else:
        predictor = Predictor(model_dir, precision="auto", tta=tta, backend=backend, int8=int8, graph=graph)
    files = expand_images(inputs)
    if not files:
        raise UsageError(f"no image files found in {printable(', '.join(map(str, inputs)))}.")
    rows, failed = [], []
    batches = predictor.iter_readable(files, bs=bs)
    if sys.stderr.isatty() and len(files) > bs:
        from fastprogress.fastprogress import progress_bar  # noqa: PLC0415 - only for a terminal

        batches = progress_bar(batches, total=-(-len(files) // bs))
    for batch in batches:
        failed += batch.failed
        probs = predictor.probabilities(batch.logits) if predictor.multi_label else None
        for k, (file, top) in enumerate(zip(batch.items, predictor.decide(batch.logits, topk=topk))):
            rows.append((file, top, None if probs is None else probs[k].tolist()))
            shown = ", ".join(f"{printable(label)} {p:.1%}" for label, p in top) or "no label over its threshold"
            print(f"{printable(file)}: {shown}")
    for file, reason in failed:
        print(f"petclf: skipped {printable(file)}: {printable(reason)}", file=sys.stderr)
    if csv_path is not None:
        if predictor.multi_label:
            delim = (predictor.meta.get("data") or {}).get("label_delim") or ";"
            _write_label_sets(csv_path, rows, failed, classes=predictor.classes, delim=delim)
        else:
            _write_predictions(csv_path, rows, failed, topk=topk or DEFAULT_TOPK)
    return 1 if failed else 0


def _write_predictions(path: Path, rows: list, failed: list, *, topk: int) -> None:
    # Whole or not at all; names are defused for spreadsheets (a file may be named '=HYPERLINK(...)').
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv_module.writer(f)
        writer.writerow(["path"] + [c for k in range(1, topk + 1) for c in (f"label_{k}", f"prob_{k}")] + ["error"])
        for file, top, _ in rows:
            writer.writerow([csv_cell(str(file))] + [v for label, p in top for v in (csv_cell(label), f"{p:.6f}")]
                            + [""] * (2 * (topk - len(top))) + [""])
        for file, reason in failed:
            writer.writerow([csv_cell(str(file))] + [""] * (2 * topk) + [csv_cell(reason)])


def _write_label_sets(path: Path, rows: list, failed: list, *, classes: Sequence[str], delim: str) -> None:
    """Multi-label predictions: the labels over their thresholds (joined by the training table's delimiter, as
    a table petclf reads), then every label's probability."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv_module.writer(f)
        writer.writerow(["path", "labels"] + [csv_cell(f"prob_{c}") for c in classes] + ["error"])
        for file, top, probs in rows:
            writer.writerow([csv_cell(str(file)), csv_cell(delim.join(label for label, _ in top))]
                            + [f"{p:.6f}" for p in probs] + [""])
        for file, reason in failed:
            writer.writerow([csv_cell(str(file)), ""] + [""] * len(classes) + [csv_cell(reason)])
