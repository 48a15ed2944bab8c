"""Shared fixtures: tiny generated image folders in each layout petclf reads."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=FutureWarning)
# Caches of test runs stay out of the user's ~/.cache, and go when the run ends.
os.environ["PETCLF_CACHE_DIR"] = tempfile.mkdtemp(prefix="petclf-test-cache-")
atexit.register(shutil.rmtree, os.environ["PETCLF_CACHE_DIR"], ignore_errors=True)

# Each class is a colour, so a tiny network learns it in one epoch.
COLOURS = {"red": (200, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}
PET_LABELS = {"american_pit_bull_terrier": (200, 40, 40), "Egyptian_Mau": (40, 190, 60), "pug": (40, 60, 210)}


def make_image(path: Path, colour: tuple[int, int, int], *, seed: int, size: int = 40) -> Path:
    rng = np.random.default_rng(seed)
    noise = rng.integers(-40, 40, size=(size, size + 8, 3))
    pixels = np.clip(np.array(colour)[None, None, :] + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def make_pets(root: Path, n_per_class: int = 10) -> Path:
    for k, (label, colour) in enumerate(PET_LABELS.items()):
        for i in range(n_per_class):
            make_image(root / f"{label}_{i + 1}.jpg", colour, seed=100 * k + i)
    return root


def make_class_folders(root: Path, n_per_class: int, *, seed: int = 0) -> Path:
    for k, (label, colour) in enumerate(COLOURS.items()):
        for i in range(n_per_class):
            make_image(root / label / f"img{i}.png", colour, seed=seed + 100 * k + i)
    return root


@pytest.fixture(scope="session")
def pets_dir(tmp_path_factory) -> Path:
    return make_pets(tmp_path_factory.mktemp("pets"))


@pytest.fixture(scope="session")
def folders_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("caltech")
    make_class_folders(root / "train", 8, seed=0)
    make_class_folders(root / "valid", 3, seed=1000)
    make_class_folders(root / "test", 4, seed=2000)
    return root


@pytest.fixture(scope="session")
def classes_dir(tmp_path_factory) -> Path:
    return make_class_folders(tmp_path_factory.mktemp("classes"), 6)


#: Small and fast: the settings every training test uses.
TINY = dict(arch="resnet18", size=32, bs=8, pretrained=False, device="cpu")
