from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from petclf.cli import main
from petclf.core.errors import DataError
from petclf.data.images import read_rgb
from petclf.data.scan import check_folder

from ..conftest import make_class_folders, make_image

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
BOMB_LIMIT = 20_000  # pixels; the tests lower PIL's limit instead of writing a gigapixel file

# file name → expected reason fragment; None means used (with the note fragment in OK_NOTES)
BAD = {
    "empty.jpg": "empty file",
    "truncated.jpg": "truncated or corrupt",
    "garbage.jpg": "not a readable image",
    "notes.txt": "not an image file",
    ".DS_Store": "macOS folder metadata",
    "._img0.png": "AppleDouble",
    "Thumbs.db": "Windows thumbnail cache",
    "bomb.png": "too large",
    "broken_link.jpg": "broken symlink",
    "loop_a.jpg": "symlink loop",
}
OK_NOTES = {
    "png_named.jpg": "PNG content named .jpg",
    "gif_named.jpg": "GIF content named .jpg",
    "bmp_named.jpg": "BMP content named .jpg",
    "webp_named.jpg": "WEBP content named .jpg",
    "cmyk.jpg": "CMYK converted",
    "gray.png": "L converted",
    "palette.png": "P converted",
    "rgba.png": "RGBA converted",
    "deep16.png": "I;16",
    "animated.gif": "first frame used",
    "rotated.jpg": "EXIF orientation applied",
}


def _pixels(colour, w=48, h=40, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(np.array(colour)[None, None] + rng.integers(-30, 30, (h, w, 3)), 0, 255).astype(np.uint8)


def _save(img: Image.Image, path, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    path.write_bytes(buf.getvalue())


def build_dirty_corpus(root):
    make_class_folders(root / "train", 6, seed=0)
    make_class_folders(root / "valid", 3, seed=500)
    red = root / "train" / "red"
    rgb = Image.fromarray(_pixels((200, 40, 40)))
    (red / "empty.jpg").write_bytes(b"")
    _save(rgb, red / "full.jpg", "JPEG")
    (red / "truncated.jpg").write_bytes((red / "full.jpg").read_bytes()[:300])
    (red / "full.jpg").unlink()
    (red / "garbage.jpg").write_bytes(os.urandom(2000))
    (red / "notes.txt").write_text("labels are folder names")
    (red / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (red / "._img0.png").write_bytes(b"\0\5\26\7" + b"\0" * 60)
    (red / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    Image.new("RGB", (200, 200), (200, 40, 40)).save(red / "bomb.png")
    (red / "broken_link.jpg").symlink_to(root / "nowhere.jpg")
    (red / "loop_a.jpg").symlink_to(red / "loop_b.jpg")
    (red / "loop_b.jpg").symlink_to(red / "loop_a.jpg")
    _save(rgb, red / "png_named.jpg", "PNG")
    _save(rgb, red / "gif_named.jpg", "GIF")
    _save(rgb, red / "bmp_named.jpg", "BMP")
    _save(rgb, red / "webp_named.jpg", "WEBP")
    rgb.convert("CMYK").save(red / "cmyk.jpg")
    rgb.convert("L").save(red / "gray.png")
    rgb.convert("P").save(red / "palette.png")
    rgb.convert("RGBA").save(red / "rgba.png")
    Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)).save(red / "deep16.png")
    frames = [Image.fromarray(_pixels((200, 40, 40), seed=s)) for s in range(3)]
    frames[0].save(red / "animated.gif", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    rgb.save(red / "rotated.jpg", exif=exif)
    # The same picture in train and valid: leakage.
    shutil.copy(red / "img0.png", root / "valid" / "red" / "copy_of_img0.png")
    # A class that exists only in valid/.
    make_image(root / "valid" / "purple" / "p0.png", (120, 20, 160), seed=7)
    if not IS_ROOT:
        shutil.copy(red / "img1.png", red / "locked.png")
        (red / "locked.png").chmod(0)
    return root


@pytest.fixture()
def dirty(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", BOMB_LIMIT)
    return build_dirty_corpus(tmp_path / "dirty")


def test_every_bad_file_is_skipped_with_its_reason(dirty):
    report = check_folder(dirty)
    reasons = {os.path.basename(p): r for p, r in zip(report.skipped.path, report.skipped.reason)}
    for name, fragment in BAD.items():
        assert fragment in reasons.get(name, ""), (name, reasons.get(name))
    if not IS_ROOT:
        assert "permission denied" in reasons["locked.png"]
    used = {os.path.basename(p) for p in report.dataset.frame.path}
    notes = {os.path.basename(p): n for p, n in zip(report.notes.path, report.notes.note)}
    for name, fragment in OK_NOTES.items():
        assert name in used, name
        assert fragment in notes.get(name, ""), (name, notes.get(name))
    assert any("identical to training images" in w and "copy_of_img0.png" in w for w in report.warnings)


def test_rescan_of_unchanged_folder_uses_the_cache(dirty):
    first = check_folder(dirty)
    second = check_folder(dirty)
    assert second.n_cached == second.n_files == first.n_files
    assert list(second.skipped.path) == list(first.skipped.path)


def test_check_command_lists_each_file(dirty, capsys):
    assert main(["check", str(dirty)]) == 0
    out = capsys.readouterr().out
    for name in BAD:
        assert f"{name}:" in out, name
    assert "warning  " in out


def test_strict_fails_fast(dirty, capsys):
    assert main(["check", str(dirty), "--strict"]) == 2
    assert "cannot be used" in capsys.readouterr().err


def test_train_on_dirty_folder_completes_and_lists_skipped(dirty, tmp_path):
    out = tmp_path / "run"
    args = ["train", str(dirty), "--out", str(out), "--arch", "resnet18", "--size", "32", "--bs", "8",
            "--no-pretrained", "--epochs", "1", "--lr", "1e-2", "--device", "cpu"]
    assert main(args) == 0
    skipped = pd.read_csv(out / "skipped.csv")
    assert set(BAD) <= {os.path.basename(p) for p in skipped.path}
    assert (out / "model" / "model.safetensors").is_file()


def test_unmatched_pets_names_are_listed(tmp_path):
    for i in range(3):
        make_image(tmp_path / f"cat_{i}.jpg", (10, 10, 10), seed=i)
        make_image(tmp_path / f"dog_{i}.jpg", (240, 240, 240), seed=i)
    make_image(tmp_path / "IMG_0001x.jpg", (10, 10, 10), seed=9)
    report = check_folder(tmp_path)
    assert "does not match the label pattern" in report.skipped.set_index("path").reason[str(tmp_path / "IMG_0001x.jpg")]


def test_read_rgb_applies_exif_scales_16_bit_and_whitens_transparency(tmp_path):
    img = Image.fromarray(_pixels((10, 200, 10), w=60, h=20))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "r.jpg", exif=exif)
    assert read_rgb(tmp_path / "r.jpg").size == (20, 60)
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(tmp_path / "w.png")
    assert read_rgb(tmp_path / "w.png").getpixel((0, 0)) == (255, 255, 255)
    Image.fromarray(np.zeros((4, 4, 4), dtype=np.uint8)).save(tmp_path / "t.png")  # fully transparent black
    assert read_rgb(tmp_path / "t.png").getpixel((0, 0)) == (255, 255, 255)


def test_a_class_made_only_of_bad_files_is_refused(tmp_path):
    make_class_folders(tmp_path, 3)
    for f in (tmp_path / "green").iterdir():
        f.write_bytes(b"")
    for f in (tmp_path / "blue").iterdir():
        f.write_bytes(b"")
    with pytest.raises(DataError, match="single class"):
        check_folder(tmp_path, valid_pct=0.34)


def test_a_huge_sparse_file_is_skipped_without_reading_it(tmp_path):
    import resource

    from petclf.data.scan import check_file

    huge = tmp_path / "x.jpg"
    with open(huge, "wb") as f:
        f.truncate(2 * 1024**3)  # 2 GB on paper, no disk used
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    check = check_file(huge)
    assert not check.ok and "file too large" in check.reason
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KB: not read into memory


def test_a_fifo_named_like_an_image_is_skipped(tmp_path):
    from petclf.data.scan import check_file

    os.mkfifo(tmp_path / "x.jpg")
    check = check_file(tmp_path / "x.jpg")  # opening a FIFO would block forever
    assert not check.ok and "not a regular file" in check.reason


def test_large_images_are_hashed_in_chunks_with_the_same_digest(tmp_path):
    import hashlib

    from petclf.data.scan import check_file

    path = make_image(tmp_path / "a.png", (10, 200, 30), seed=3, size=600)  # > 1 MB chunk of PNG data
    assert check_file(path).digest == hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()

