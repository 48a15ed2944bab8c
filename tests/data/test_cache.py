"""The cache folder: a size budget with least-recently-used eviction, safe fallbacks, `petclf cache`."""
from __future__ import annotations

import os
import shutil
import sys
from collections import namedtuple

import pytest
import torch

from petclf import quick_learner
from petclf.data.cachedir import cache_dir, cache_limit_bytes, cache_usage, clear_cache, prune_cache
from petclf.cli import main
from petclf.core.errors import UsageError
from petclf.data.imagecache import CacheUnavailable, PresizedImages, cache_bytes

from ..conftest import TINY


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """An empty cache folder for one test."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("PETCLF_CACHE_DIR", str(folder))
    monkeypatch.delenv("PETCLF_CACHE_MAX_GB", raising=False)
    return folder


def _file(folder, name: str, size: int, age_s: float):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"x" * size)
    when = path.stat().st_mtime - age_s
    os.utime(path, (when, when))
    return path


def test_prune_drops_least_recently_used_first(own_cache):
    images = own_cache / "images"
    oldest = _file(images, "a.npy", 1000, age_s=300)
    middle = _file(images, "b.npy", 1000, age_s=200)
    newest = _file(own_cache / "scan", "c.json", 1000, age_s=100)
    assert prune_cache(max_bytes=2000) == 1000
    assert not oldest.exists() and middle.exists() and newest.exists()
    assert prune_cache(max_bytes=1000) == 1000
    assert not middle.exists() and newest.exists()
    assert cache_usage().total_bytes == 1000


def test_stale_unfinished_files_go_and_fresh_ones_stay(own_cache):
    stale = _file(own_cache / "images", ".x.npy.123.tmp", 10, age_s=2 * 24 * 3600)
    fresh = _file(own_cache / "images", ".y.npy.456.tmp", 10, age_s=10)
    prune_cache(max_bytes=10**9)
    assert not stale.exists() and fresh.exists()


def test_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("PETCLF_CACHE_MAX_GB", "2.5")
    assert cache_limit_bytes() == 2_500_000_000
    for bad in ("lots", "-1", "nan", "inf"):
        monkeypatch.setenv("PETCLF_CACHE_MAX_GB", bad)
        with pytest.raises(UsageError, match="PETCLF_CACHE_MAX_GB"):
            cache_limit_bytes()


def test_reused_cache_counts_as_recently_used(own_cache, pets_dir):
    paths = sorted(str(p) for p in pets_dir.glob("*.jpg"))
    first = PresizedImages(paths[:10], 24)
    second = PresizedImages(paths[10:], 24)
    old = first.file.stat().st_mtime - 1000
    os.utime(first.file, (old, old))
    os.utime(second.file, (old + 1, old + 1))
    again = PresizedImages(paths[:10], 24)  # a hit: refreshes the first file's recency
    assert again.file == first.file
    prune_cache(max_bytes=first.file.stat().st_size)
    assert first.file.exists() and not second.file.exists()


def test_new_cache_makes_room_within_the_budget(own_cache, pets_dir, monkeypatch):
    paths = sorted(str(p) for p in pets_dir.glob("*.jpg"))
    first = PresizedImages(paths[:10], 24)
    old = first.file.stat().st_mtime - 1000
    os.utime(first.file, (old, old))
    # Room for one 20-image cache (plus the npy header), not for both.
    monkeypatch.setenv("PETCLF_CACHE_MAX_GB", str((cache_bytes(20, 24) + 4096) / 1e9))
    second = PresizedImages(paths[10:], 24)
    assert second.file.exists() and not first.file.exists()
    assert cache_usage().total_bytes <= cache_limit_bytes()


def test_cache_over_budget_is_refused_and_leaves_nothing(own_cache, pets_dir, monkeypatch):
    monkeypatch.setenv("PETCLF_CACHE_MAX_GB", "0.000001")
    with pytest.raises(CacheUnavailable, match="budget"):
        PresizedImages([str(p) for p in pets_dir.glob("*.jpg")], 24)
    assert cache_usage().total_bytes == 0


def test_cache_that_would_fill_the_disk_is_refused(own_cache, pets_dir, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage(10**12, 10**12 - 10**8, 10**8))
    with pytest.raises(CacheUnavailable, match="free"):
        PresizedImages([str(p) for p in pets_dir.glob("*.jpg")], 24)
    assert not list((own_cache / "images").iterdir())


def test_failed_build_leaves_no_partial_file(own_cache, pets_dir, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    with pytest.raises(OSError, match="broken.jpg"):
        PresizedImages([str(p) for p in pets_dir.glob("*.jpg")] + [str(broken)], 24)
    assert not list((own_cache / "images").iterdir())


def test_training_goes_on_without_the_cache_when_it_cannot_be_written(own_cache, pets_dir, monkeypatch, capfd):
    own_cache.mkdir()
    (own_cache / "images").write_text("a file where the cache's folder should be")
    learn = quick_learner(pets_dir, cache=True, **TINY)
    assert "not caching images" in capfd.readouterr().err
    xb, yb = learn.dls.train.one_batch()
    assert xb.shape == (TINY["bs"], 3, TINY["size"], TINY["size"]) and xb.dtype == torch.float32


def test_zero_budget_turns_the_automatic_cache_off_quietly(own_cache, pets_dir, monkeypatch, capfd):
    monkeypatch.setenv("PETCLF_CACHE_MAX_GB", "0")
    learn = quick_learner(pets_dir, **TINY)
    assert "not caching" not in capfd.readouterr().err
    assert learn.dls.train.one_batch()[0].shape[0] == TINY["bs"]
    assert not (own_cache / "images").exists()


def test_cache_command_shows_and_clears(own_cache, capsys):
    _file(own_cache / "images", "a.npy", 3_000_000, age_s=0)
    _file(own_cache / "scan", "b.json", 500_000, age_s=0)
    assert main(["cache"]) == 0
    shown = capsys.readouterr().out
    assert str(cache_dir()) in shown and "3.0 MB" in shown and "0.5 MB" in shown
    assert main(["cache", "clear"]) == 0
    assert "removed 3.5 MB" in capsys.readouterr().out
    assert cache_usage().total_bytes == 0


def test_bad_budget_is_a_usage_error_on_the_command_line(own_cache, monkeypatch, capsys):
    monkeypatch.setenv("PETCLF_CACHE_MAX_GB", "lots")
    assert main(["cache"]) == 2
    assert "PETCLF_CACHE_MAX_GB='lots'" in capsys.readouterr().err
    assert clear_cache() == 0


def test_cache_folder_is_the_platforms_unless_overridden(tmp_path, monkeypatch):
    """platformdirs knows each platform's place (~/Library/Caches on macOS, %LOCALAPPDATA% on Windows)."""
    import platformdirs  # noqa: PLC0415

    monkeypatch.delenv("PETCLF_CACHE_DIR", raising=False)
    calls = []
    monkeypatch.setattr(platformdirs, "user_cache_dir",
                        lambda name, appauthor=None: calls.append((name, appauthor)) or str(tmp_path / "platform"))
    assert cache_dir() == tmp_path / "platform" and calls == [("petclf", False)]
    monkeypatch.setenv("PETCLF_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_cache_folder_on_linux_follows_xdg(tmp_path, monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("XDG_CACHE_HOME is the Linux convention")
    monkeypatch.delenv("PETCLF_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "petclf"
