"""fastai DataLoaders for a dataset: image blocks over petclf's readers and image cache, and the batch augmentation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.data.block import CategoryBlock, DataBlock, MultiCategoryBlock, TransformBlock
from fastai.data.core import DataLoaders
from fastai.data.transforms import ColReader, ColSplitter, IntToFloatTensor, Normalize
from fastai.torch_core import TensorImage
from fastai.vision.augment import Resize, aug_transforms
from fastai.vision.core import PILImage
from fasttransform import Transform
from PIL import Image

from petclf.core import log
from petclf.core.errors import require_positive
from petclf.data.cachedir import cache_limit_bytes
from petclf.data.imagecache import CacheUnavailable, PresizedImages, cache_bytes
from petclf.data.images import read_rgb, to_rgb
from petclf.data.dataset import LabelledImages
from petclf.data.pipeline import Pipeline
from petclf.learn.task import sample_weights

__all__ = ["CACHE_LIMIT_BYTES", "LoadPresized", "RGBImage", "ReadRGB", "batch_tfms", "fit_batch_size", "item_tfms",
           "make_dataloaders"]

#: Above this many bytes of cached pixels, images are decoded every epoch instead.
CACHE_LIMIT_BYTES = 4 * 1024**3


class RGBImage(PILImage):
    """fastai's ``PILImage`` opened through ``read_rgb``."""

    @classmethod
    def create(cls, fn: Path | str | Image.Image, *, min_side: int | None = None, **kwargs) -> "RGBImage":  # noqa: ARG003
        # fastai reads the annotation of ``fn`` to know which inputs this block accepts.
        if isinstance(fn, Image.Image):
            return cls(to_rgb(fn))
        return cls(read_rgb(fn, min_side=min_side))


class ReadRGB(Transform):
    """fastai type transform: a path (or PIL image) → ``RGBImage``, read for a ``presize`` resize.

    With ``stand_in`` (the training loaders), a file that can no longer be read — deleted or
    damaged after the scan — is replaced by a grey image, with a warning, instead of ending the
    epoch; the evaluation then leaves it out and lists it in skipped.csv.
    """

    def __init__(self, presize: int, *, stand_in: bool = False) -> None:
        super().__init__()
        self.presize, self.stand_in = presize, stand_in
        self.input_types = (str, Path, Image.Image)  # what test_dl and predict accept
        self._warned: set[str] = set()

    def encodes(self, item: str | Path | Image.Image) -> RGBImage:
        try:
            return RGBImage.create(item, min_side=self.presize)
        except (OSError, ValueError, SyntaxError) as err:  # what PIL and read_rgb's checks raise for a bad file
            if not self.stand_in or isinstance(item, Image.Image):
                raise
            if str(item) not in self._warned:
                self._warned.add(str(item))
                log.warn(f"{item} can no longer be read ({err}); a grey image stands in for it while training, "
                         "and it is left out of the evaluation.")
            return RGBImage(Image.new("RGB", (self.presize, self.presize), (128, 128, 128)))


class LoadPresized(Transform):
    """fastai type transform: a cache row (or a path / PIL image) → uint8 ``TensorImage`` at the presize."""

    def __init__(self, images: PresizedImages) -> None:
        super().__init__()
        self.images = images
        # fastai's test_dl and predict check new inputs against these types.
        self.input_types = (int, np.integer, str, Path, Image.Image)

    def encodes(self, item: int | np.integer | str | Path | Image.Image) -> TensorImage:
        return TensorImage(self.images.load(item))


def item_tfms(pipeline: Pipeline) -> list:
    """The per-image transforms of decoded (not cached) images: a random crop in training, centred in validation."""
    return [Resize(pipeline.presize, method="crop")]


def batch_tfms(pipeline: Pipeline) -> list:
    """The per-batch augmentation (none in validation) and normalisation of ``pipeline``."""
    if pipeline.augment == "none":
        augs = aug_transforms(size=pipeline.size, min_scale=1.0, do_flip=False, max_rotate=0.0,
                              max_zoom=1.0, max_lighting=0.0, max_warp=0.0, p_affine=0.0, p_lighting=0.0)
    else:
        # One resample straight to `size` (random zoom, rotation, flip) and lighting. fastai's
        # perspective warp and a separate random-resized crop at the presize each add a pass
        # over the batch: with them, a batch of 64 at 128 px took 88 ms instead of 30 on 2 cores.
        augs = aug_transforms(size=pipeline.size, do_flip=pipeline.augment == "standard", max_warp=0.0)
    return [*augs, Normalize.from_stats(list(pipeline.mean), list(pipeline.std))]


def fit_batch_size(bs: int, n_train: int) -> int:
    """``bs``, or a batch size that fits ``n_train`` training images when ``bs`` is larger than that.

    The training loader drops its last incomplete batch, so a batch larger than the training set would
    train on nothing. Half the images (two steps an epoch), but at least 2: BatchNorm cannot train on
    a batch of one image.

    Example: ``fit_batch_size(64, 30)`` → ``15``.
    """
    if bs <= n_train:
        return bs
    return min(n_train, max(2, n_train // 2))


def _presized_or_none(frame: pd.DataFrame, presize: int) -> PresizedImages | None:
    """The image cache for ``frame``, or None (with a warning saying why) when it cannot be written."""
    try:
        return PresizedImages(list(frame.path), presize)
    except CacheUnavailable as err:
        log.warn(f"not caching images: {err}. Decoding them every epoch instead (slower).")
        return None


def make_dataloaders(dataset: LabelledImages, pipeline: Pipeline, *, bs: int, device: torch.device,
                     num_workers: int = 0, cache: bool | None = None, balanced: bool = False) -> DataLoaders:
    """fastai DataLoaders for train and valid, plus a third for ``test`` when the dataset has one.

    ``cache`` (default: when it fits in 4 GiB) decodes each image once into a disk cache of
    images pre-resized to the presize (see ``petclf.data.imagecache``). A multi-label dataset
    gets fastai's ``MultiCategoryBlock`` (one-hot targets). ``balanced`` draws each training
    epoch with replacement so that every class is drawn about equally often (fastai's ``WeightedDL``).

    Example: ``make_dataloaders(ds, make_pipeline(size=224), bs=64, device=torch.device("cpu"))``.
    """
    require_positive(bs=bs)
    frame = dataset.frame
    n_train = dataset.count("train")
    fitted = fit_batch_size(bs, n_train)
    if fitted != bs:
        # The default --bs 64 on a small folder: reduced rather than refused, so that a first try runs.
        log.info(f"bs={bs} is more than the {n_train} training images: batches of {fitted} instead "
                 f"({n_train // fitted} an epoch).")
        bs = fitted
    if cache is None:
        cache = cache_bytes(len(frame), pipeline.presize) <= min(CACHE_LIMIT_BYTES, cache_limit_bytes())
    images = _presized_or_none(frame, pipeline.presize) if cache else None
    if images is not None:
        frame = frame.assign(row=np.arange(len(frame)))
        x_block, get_x, items = TransformBlock(type_tfms=LoadPresized(images), batch_tfms=IntToFloatTensor), "row", []
    else:
        x_block = TransformBlock(type_tfms=ReadRGB(pipeline.presize, stand_in=True), batch_tfms=IntToFloatTensor)
        get_x, items = "path", item_tfms(pipeline)
    if dataset.multi_label:
        # Lists, not tuples: fastai maps a transform over the parts of a tuple, as if each were an item.
        frame = frame.assign(label=frame.label.map(list))
    trainval = frame[frame.split != "test"].assign(is_valid=lambda f: f.split == "valid").reset_index(drop=True)
    y_block = MultiCategoryBlock(vocab=dataset.classes) if dataset.multi_label else CategoryBlock(vocab=dataset.classes)
    block = DataBlock(
        blocks=(x_block, y_block),
        get_x=ColReader(get_x),
        get_y=ColReader("label"),
        splitter=ColSplitter("is_valid"),
        item_tfms=items,
        batch_tfms=batch_tfms(pipeline),
    )
    options = dict(bs=bs, val_bs=bs, device=device, num_workers=num_workers, pin_memory=device.type == "cuda")
    if balanced:
        import fastai.callback.data  # noqa: F401, PLC0415 - DataBlock.weighted_dataloaders, used here

        dls = block.weighted_dataloaders(trainval, wgts=sample_weights(dataset, trainval), **options)
    else:
        dls = block.dataloaders(trainval, **options)
    dls.path = dataset.root
    test = frame[frame.split == "test"].reset_index(drop=True)
    if len(test):
        test_dl = dls.test_dl(test, with_labels=True, bs=bs)
        dls = DataLoaders(dls.train, dls.valid, test_dl, path=dataset.root, device=device)
    return dls
