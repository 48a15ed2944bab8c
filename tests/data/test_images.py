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
