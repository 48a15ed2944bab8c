"""The top-level names: what users call, each resolvable; internals stay in their modules."""
from __future__ import annotations

import petclf


def test_every_public_name_resolves():
    for name in petclf.__all__:
        assert getattr(petclf, name) is not None, name


def test_internals_are_not_top_level_names():
    for name in ("run_settings", "pick_precision", "pick_device", "CacheUsage", "LoadedModel", "TrainResult",
                 "LabelledImages"):
        assert name not in petclf.__all__
    from petclf.data.cachedir import CacheUsage  # noqa: PLC0415 - still importable from their modules
    from petclf.learn import run_settings  # noqa: PLC0415
    from petclf.runtime.device import pick_precision  # noqa: PLC0415

    assert run_settings and pick_precision and CacheUsage


def test_the_readme_names_are_exported():
    for name in ("quick_learner", "train", "find_lr", "save_model", "Predictor", "interpret", "write_report",
                 "choose_thresholds", "train_folder", "register_arch", "export_fastai", "load_pickled_learner",
                 "cache_usage", "clear_cache", "audit", "load_model", "TrainOptions"):
        assert name in petclf.__all__, name
