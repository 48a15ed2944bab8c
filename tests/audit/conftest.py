"""Tiny labelled folders with known problems (label flips, copies, a blank and a tiny image) and a model without fastai."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from petclf.data.pipeline import make_pipeline
from petclf.runtime.modeldir import write_model_dir
from petclf.runtime.network import build_network


# Each class is a colour with a smooth random pattern on it: a random network's embeddings tell the
# classes apart, and no two images are alike unless made so.
COLOURS = {"red": (200, 50, 40), "green": (40, 180, 60), "blue": (50, 60, 210)}
N_PER_CLASS = 14


def picture(seed: int, colour, size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-70, 70, size=(5, 5, 1)).astype(np.float32)
    pattern = np.asarray(Image.fromarray(coarse[:, :, 0]).resize(size, Image.BICUBIC))[:, :, None]
    pixels = np.clip(np.array(colour, np.float32)[None, None] + pattern, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def near_copy(src: Path, dst: Path) -> None:
    img = Image.open(src).convert("RGB")
    w, h = img.size
    img.crop((2, 2, w - 2, h - 2)).resize((w - 6, h - 6), Image.BILINEAR).save(dst, quality=75)


def make_pictures(root: Path, layout: str) -> dict:
    """A folder in ``layout`` (classes, folders, pets) with 2 label flips, 1 exact and 1 near copy, a blank and a tiny
    image; returns the truth: flipped file names, copy pairs, junk names."""
    truth = {"flips": [], "copies": [], "junk": []}

    def where(label: str, i: int, split: str) -> Path:
        if layout == "pets":
            return root / f"{label}_{i + 1}.jpg"
        if layout == "folders":
            return root / split / label / f"img{i}.jpg"
        return root / label / f"img{i}.jpg"

    for k, (label, colour) in enumerate(COLOURS.items()):
        for i in range(N_PER_CLASS):
            split = "valid" if i >= N_PER_CLASS - 4 else "train"
            # Images 0 and 1 of red are drawn green and blue, but filed as red: label flips.
            drawn = {("red", 0): COLOURS["green"], ("red", 1): COLOURS["blue"]}.get((label, i), colour)
            path = where(label, i, split)
            path.parent.mkdir(parents=True, exist_ok=True)
            picture(100 * k + i, drawn).save(path, quality=95)
            if drawn != colour:
                truth["flips"].append(path.name)
    green, blue = where("green", 3, "train"), where("blue", 4, "train")
    exact = green.with_name("copy_5.jpg" if layout == "pets" else "exact_copy.jpg")
    if layout == "pets":
        exact = root / "green_99.jpg"
    shutil.copyfile(green, exact)
    near = root / "blue_98.jpg" if layout == "pets" else blue.with_name("near_copy.jpg")
    near_copy(blue, near)
    truth["copies"] = [(green.name, exact.name), (blue.name, near.name)]
    blank = root / "blue_97.jpg" if layout == "pets" else where("blue", 97, "train")
    Image.new("RGB", (48, 40), (128, 128, 128)).save(blank)
    tiny = root / "green_96.jpg" if layout == "pets" else where("green", 96, "train")
    picture(7, COLOURS["green"], size=(8, 8)).save(tiny, quality=95)
    truth["junk"] = [blank.name, tiny.name]
    return truth


def make_table(root: Path) -> dict:
    """The classes layout's images listed in labels.csv (file name, label), images flat in root/images."""
    truth = make_pictures(root / "tmp", "classes")
    (root / "images").mkdir(parents=True)
    rows = []
    for path in sorted((root / "tmp").rglob("*.jpg")):
        name = f"{path.parent.name}-{path.name}"
        shutil.move(path, root / "images" / name)
        rows.append((f"images/{name}", path.parent.name))
    shutil.rmtree(root / "tmp")
    (root / "labels.csv").write_text("file_name,label\n" + "".join(f"{f},{l}\n" for f, l in rows))
    rename = lambda n, label: f"{label}-{n}"  # noqa: E731
    truth["flips"] = [rename(n, "red") for n in truth["flips"]]
    return truth


def make_model_dir(directory: Path, *, n_out: int = 3, size: int = 32) -> Path:
    """An untrained resnet18 saved as `save_model` saves one: its random body still tells colours apart."""
    torch.manual_seed(0)
    net = build_network("resnet18", "torchvision", n_out).eval()
    pipeline = make_pipeline(size=size)
    meta = {
        "arch": {"name": "resnet18", "source": "torchvision", "n_out": n_out, "head": "fastai-default"},
        "classes": [f"c{k}" for k in range(n_out)],
        "preprocessing": {"size": pipeline.size, "presize": pipeline.presize, "augment": pipeline.augment,
                          "mean": list(pipeline.mean), "std": list(pipeline.std)},
        "data": {"layout": "classes", "label_pat": None, "valid_pct": 0.2, "seed": 42},
        "precision": "fp32", "versions": {"petclf": "0.1.0", "torch": torch.__version__}, "summary": {},
    }
    return write_model_dir(directory, net.state_dict(), meta)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("audit-model") / "model")


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path → bytes): two trees are equal when nothing moved or changed."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
