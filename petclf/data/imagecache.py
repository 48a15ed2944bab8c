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
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from petclf.core import log
from petclf.core.atomic import atomic_path
from petclf.data.cachedir import cache_dir, cache_limit_bytes, prune_cache, touch
from petclf.data.images import Presizer

__all__ = ["CacheUnavailable", "PresizedImages", "cache_bytes"]

CACHE_VERSION = 2  # 2: large JPEGs read at reduced scale (images.read_rgb)
#: Space the cache leaves free on its disk, so that checkpoints and the model can still be saved.
FREE_SPACE_MARGIN = 1024**3


class CacheUnavailable(OSError):
    """The presized images cannot be cached (budget, free space, permissions): decode them every epoch."""


def cache_bytes(n_images: int, presize: int) -> int:
    return n_images * presize * presize * 3


def _key(paths: list[str], presize: int) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}:{presize}".encode())
    for p in paths:
        st = os.stat(p)
        # fsencode: a name that is not UTF-8 still hashes (as the bytes on disk).
        h.update(os.fsencode(p) + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


class PresizedImages:
    """Row ``i`` is ``paths[i]`` resized and centre-cropped to ``presize``; ``load(row)`` gives its pixels."""

    def __init__(self, paths: list[str], presize: int, *, workers: int | None = None) -> None:
        self.presize = presize
        self._presize = Presizer(presize)
        self._array: np.ndarray | None = None
        folder = cache_dir() / "images"
        self.file = folder / f"{_key(paths, presize)}.npy"
        if self.file.is_file():
            touch(self.file)
        else:
            self._build(paths, folder, workers)
        # Mapped now, so a later prune by another run cannot take the pixels from under this one.
        self._array = np.load(self.file, mmap_mode="r")

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.file, mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict:
        # Pickled (fastai export, worker processes) without the pixels: they are reopened from the file.
        return {**self.__dict__, "_array": None}

    def _build(self, paths: list[str], folder: Path, workers: int | None) -> None:
        with atomic_path(self.file) as tmp:
            out = self._reserve(tmp, len(paths), folder)
            def one(i: int) -> None:
                out[i] = self._presize(paths[i])

            log.info(f"caching {len(paths)} images at {self.presize} px "
                     f"({cache_bytes(len(paths), self.presize) / 1e6:.0f} MB in {folder})")
            # PIL decodes and resizes without the GIL: threads keep every core busy.
            with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
                list(pool.map(one, range(len(paths))))
            out.flush()

    def _reserve(self, tmp: Path, n: int, folder: Path) -> np.memmap:
        """The cache file to fill, its disk space claimed first: raises ``CacheUnavailable`` when it does not fit."""
        needed = cache_bytes(n, self.presize)
        limit = cache_limit_bytes()
        if needed > limit:
            raise CacheUnavailable(f"{needed / 1e9:.1f} GB of presized images is more than the cache's budget of "
                                   f"{limit / 1e9:.1f} GB (raise PETCLF_CACHE_MAX_GB to cache them)")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            prune_cache(max_bytes=limit - needed)
            free = shutil.disk_usage(folder).free
            if needed + FREE_SPACE_MARGIN > free:
                raise CacheUnavailable(f"{folder} has {free / 1e9:.1f} GB free; the cache needs {needed / 1e9:.1f} GB "
                                       f"and leaves {FREE_SPACE_MARGIN / 1e9:.0f} GB for checkpoints "
                                       "(free space there, or point PETCLF_CACHE_DIR at a larger disk)")
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, self.presize, self.presize, 3))
            if hasattr(os, "posix_fallocate"):
                # A memory-mapped write into a full disk kills the process (SIGBUS); claiming the
                # blocks now turns that into an OSError before any work is done.
                fd = os.open(tmp, os.O_RDWR)
                try:
                    os.posix_fallocate(fd, 0, tmp.stat().st_size)
                finally:
                    os.close(fd)
            return out
        except CacheUnavailable:
            raise
        except OSError as err:
            raise CacheUnavailable(f"could not write the image cache in {folder}: {err.strerror or err}") from err

    def load(self, item: int | np.integer | str | Path | Image.Image) -> torch.Tensor:
        """(3, presize, presize) uint8: a cached row by index; a path or PIL image (``learn.predict(path)``,
        ``test_dl(paths)``) is decoded."""
        if isinstance(item, (str, Path, Image.Image)):
            pixels = np.array(self._presize(item))
        else:
            pixels = np.array(self.array[int(item)])
        return torch.from_numpy(pixels).permute(2, 0, 1)
