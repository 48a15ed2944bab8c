"""Predict with a saved model directory, preprocessing images exactly as validation does."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from fastai.data.transforms import IntToFloatTensor, Normalize, ToTensor
from fastai.vision.core import PILImage
from fasttransform import Pipeline as TfmPipeline
from PIL import Image, UnidentifiedImageError
from torch import nn

from .artifact import load_model
from .data import Pipeline
from .device import pick_device, pick_precision
from .errors import UsageError
from .images import RGBImage

__all__ = ["Predictor", "valid_transforms"]

ImageLike = str | Path | Image.Image


def valid_transforms(pipeline: Pipeline) -> tuple[TfmPipeline, TfmPipeline]:
    """fastai's validation-mode item and batch transforms for ``pipeline`` (same code as training uses)."""
    item = TfmPipeline([*pipeline.item_tfms(), ToTensor()], split_idx=1)
    batch = TfmPipeline([IntToFloatTensor(), *pipeline.batch_tfms()], split_idx=1)
    return item, batch


class Predictor:
    """Top-k predictions from a petclf model directory.

    Example::

        pred = Predictor("runs/pets/model")
        pred.predict("my_cat.jpg", topk=3)   # [('Bengal', 0.91), ('Egyptian_Mau', 0.05), …]
    """

    def __init__(self, model_dir: str | Path, *, device: str | torch.device | None = None,
                 precision: str = "auto", arch: Callable | nn.Module | None = None) -> None:
        self.device = pick_device(device)
        self.precision = pick_precision(precision, self.device)
        loaded = load_model(model_dir, arch=arch, device=self.device)
        self.model, self.classes, self.pipeline = loaded.model, loaded.classes, loaded.pipeline
        self.meta = loaded.meta
        self._item, self._batch = valid_transforms(self.pipeline)

    def logits(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Raw fp32 scores, one row per image, for already-readable images."""
        items = [self._item(_open(img)) for img in images]
        xb = self._batch(torch.stack(items).to(self.device)).as_subclass(torch.Tensor)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype or torch.float32,
                                                    enabled=dtype is not None):
            return self.model(xb).float().cpu()

    def predict(self, image: ImageLike, *, topk: int = 3) -> list[tuple[str, float]]:
        """The ``topk`` most likely classes of one image with their probabilities.

        Example: ``Predictor(d).predict("seven_3.jpg", topk=1)`` → ``[('seven', 0.998)]``.
        """
        return self._top(self.logits([image]), topk)[0]

    def predict_batch(self, images: Iterable[ImageLike], *, bs: int = 64,
                      topk: int = 3) -> list[list[tuple[str, float]]]:
        """Predict many images, ``bs`` at a time; results come in the order given."""
        images, out = list(images), []
        for start in range(0, len(images), bs):
            out.extend(self._top(self.logits(images[start:start + bs]), topk))
        return out

    def _top(self, logits: torch.Tensor, topk: int) -> list[list[tuple[str, float]]]:
        if topk < 1:
            raise UsageError(f"topk must be a positive integer. Received: topk={topk}.")
        probs = logits.softmax(dim=1)
        values, indices = probs.topk(min(topk, len(self.classes)), dim=1)
        return [[(self.classes[i], float(p)) for p, i in zip(vs, ix)] for vs, ix in zip(values.tolist(), indices.tolist())]


def _open(image: ImageLike) -> PILImage:
    if isinstance(image, Image.Image):
        return RGBImage.create(image)
    path = Path(image)
    try:
        return RGBImage.create(path)
    except (FileNotFoundError, IsADirectoryError):
        raise UsageError(f"image {path} does not exist.") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise UsageError(f"cannot read {path} as an image ({err}).") from None


def expand_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders replaced by the image files inside them (sorted, recursive)."""
    from .data import IMAGE_EXTENSIONS  # noqa: PLC0415

    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            files.append(item)
    return files


class _PickledPredictor:
    """fastai's own ``Learner.predict`` for an ``export.pkl`` the user chose to trust."""

    def __init__(self, path: str | Path) -> None:
        from .export import load_pickled_learner  # noqa: PLC0415

        self.learn = load_pickled_learner(path, trust=True)
        self.classes = tuple(self.learn.dls.vocab)

    def predict_batch(self, images: Sequence[ImageLike], *, bs: int = 64, topk: int = 3):
        out = []
        for image in images:
            with self.learn.no_bar():
                probs = self.learn.predict(Path(image) if not isinstance(image, Image.Image) else image)[2]
            values, idx = probs.topk(min(topk, len(self.classes)))
            out.append([(self.classes[i], float(v)) for v, i in zip(values.tolist(), idx.tolist())])
        return out


def predict_files(model_dir: str | Path, inputs: Sequence[str | Path], *, topk: int = 3,
                  csv: str | Path | None = None, bs: int = 64, trust_pickle: bool = False) -> int:
    """Print top-k predictions for image files and folders; unreadable files are reported, not fatal.

    Returns 0 when every file was predicted, 1 when some could not be read.

    Example: ``predict_files("runs/pets/model", ["photos/"], csv="preds.csv")``.
    """
    import csv as csv_module  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from fastprogress.fastprogress import progress_bar  # noqa: PLC0415

    if Path(model_dir).is_file() and trust_pickle:
        predictor = _PickledPredictor(model_dir)
    else:
        predictor = Predictor(model_dir, precision="auto")
    files = expand_images(inputs)
    if not files:
        raise UsageError(f"no image files found in {', '.join(map(str, inputs))}.")
    rows, failed = [], []
    readable = []
    for file in files:
        try:
            _open(file)
            readable.append(file)
        except UsageError as err:
            failed.append((file, str(err)))
    chunks = range(0, len(readable), bs)
    show_bar = sys.stderr.isatty() and len(readable) > bs
    for start in progress_bar(chunks) if show_bar else chunks:
        batch = readable[start:start + bs]
        for file, top in zip(batch, predictor.predict_batch(batch, bs=bs, topk=topk)):
            rows.append((file, top))
            print(f"{file}: " + ", ".join(f"{label} {p:.1%}" for label, p in top))
    for file, reason in failed:
        print(f"petclf: skipped {file}: {reason}", file=sys.stderr)
    if csv is not None:
        with open(csv, "w", newline="") as f:
            writer = csv_module.writer(f)
            writer.writerow(["path"] + [c for k in range(1, topk + 1) for c in (f"label_{k}", f"prob_{k}")] + ["error"])
            for file, top in rows:
                writer.writerow([str(file)] + [v for pair in top for v in (pair[0], f"{pair[1]:.6f}")] + [""])
            for file, reason in failed:
                writer.writerow([str(file)] + [""] * (2 * topk) + [reason])
    return 1 if failed else 0
