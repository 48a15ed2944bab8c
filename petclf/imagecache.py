"""Decode each image once: a disk cache of images already resized to the presize.

Decoding a 400×300 JPEG and resizing it costs about as much CPU as a third of a
training step on a 2-core machine, every epoch. The cache stores each image once, centre-cropped
to ``presize × presize`` as uint8, in one memory-mapped file per (files, presize); later epochs
and later runs read it straight into tensors. Trade-off: the item-level crop is always
centred (fastai's ``Resize`` moves it randomly in training); the batch-level random resized crop
and the other augmentations still run every epoch.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from fastai.torch_core import TensorImage
from fasttransform import Transform

from . import _log
from .preprocess import Presizer
from .cachedir import cache_dir

__all__ = ["LoadPresized", "PresizedImages", "cache_bytes"]

CACHE_VERSION = 2  # 2: large JPEGs read at reduced scale (images.read_rgb)


def cache_bytes(n_images: int, presize: int) -> int:
    return n_images * presize * presize * 3


def _key(paths: list[str], presize: int) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}:{presize}".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


class PresizedImages:
    """Row ``i`` is ``paths[i]`` resized and centre-cropped to ``presize``; ``load(row)`` gives a TensorImage."""

    def __init__(self, paths: list[str], presize: int, *, workers: int | None = None) -> None:
        self.presize = presize
        self._presize = Presizer(presize)
        self._array: np.ndarray | None = None
        folder = cache_dir() / "images"
        self.file = folder / f"{_key(paths, presize)}.npy"
        if not self.file.is_file():
            self._build(paths, folder, workers)

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.file, mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict:
        # Pickled (fastai export, worker processes) without the pixels: they are reopened from the file.
        return {**self.__dict__, "_array": None}

    def _build(self, paths: list[str], folder: Path, workers: int | None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), self.presize, self.presize, 3))
        def one(i: int) -> None:
            out[i] = self._presize(paths[i])

        _log.info(f"caching {len(paths)} images at {self.presize} px "
                  f"({cache_bytes(len(paths), self.presize) / 1e6:.0f} MB in {folder})")
        # PIL decodes and resizes without the GIL: threads keep every core busy.
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
            list(pool.map(one, range(len(paths))))
        out.flush()
        os.replace(tmp, self.file)

    def load(self, item: int | np.integer | str | Path | Image.Image) -> TensorImage:
        """A cached row by index; a path or PIL image (``learn.predict(path)``, ``test_dl(paths)``) is decoded."""
        if isinstance(item, (str, Path, Image.Image)):
            pixels = np.array(self._presize(item))
        else:
            pixels = np.array(self.array[int(item)])
        return TensorImage(torch.from_numpy(pixels).permute(2, 0, 1))


class LoadPresized(Transform):
    """fastai type transform: a cache row (or a path / PIL image) → uint8 ``TensorImage`` at the presize."""

    def __init__(self, images: PresizedImages) -> None:
        super().__init__()
        self.images = images
        # fastai's test_dl and predict check new inputs against these types.
        self.input_types = (int, np.integer, str, Path, Image.Image)

    def encodes(self, item: int | np.integer | str | Path | Image.Image) -> TensorImage:
        return self.images.load(item)
