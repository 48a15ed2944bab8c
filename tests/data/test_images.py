from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from petclf.data.images import Presizer, centre_crop


@pytest.mark.parametrize("size", [(40, 48), (48, 40), (333, 250), (250, 333), (97, 97), (1001, 7), (64, 63)])
def test_centre_crop_gives_fastais_validation_pixels(size):
    from fastai.vision.augment import Resize
    from fastai.vision.core import PILImage

    rng = np.random.default_rng(sum(size))
    img = Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))
    theirs = np.asarray(Resize(24, method="crop")(PILImage(img), split_idx=1))
    assert np.array_equal(np.asarray(centre_crop(img, 24)), theirs)


def test_presizer_reads_files_and_images_alike(tmp_path):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(30, 50, 3), dtype=np.uint8))
    img.save(tmp_path / "a.png")
    presize = Presizer(16)
    assert presize(tmp_path / "a.png").shape == (16, 16, 3)
    assert np.array_equal(presize(tmp_path / "a.png"), presize(img))


def test_read_readable_keeps_order_and_names_what_it_cannot_read(tmp_path, monkeypatch):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(30, 50, 3), dtype=np.uint8))
    img.save(tmp_path / "a.png")
    (tmp_path / "text.png").write_text("not an image")
    Image.new("RGB", (300, 200)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # 60,000 px: PIL refuses to open it
    presize = Presizer(16)
    images = [tmp_path / "gone.png", tmp_path / "a.png", tmp_path / "text.png", img, tmp_path / "bomb.png"]
    read = presize.read_readable(images)
    assert read.kept == [1, 3] and read.pixels.shape == (2, 16, 16, 3)
    assert np.array_equal(read.pixels[0], presize(tmp_path / "a.png")) and np.array_equal(read.pixels[1], presize(img))
    reasons = dict(read.failed)
    assert sorted(reasons) == [0, 2, 4]
    assert "does not exist" in reasons[0] and "cannot read" in reasons[2] and "cannot read" in reasons[4]
    assert presize.read_readable([tmp_path / "gone.png"]).pixels is None
