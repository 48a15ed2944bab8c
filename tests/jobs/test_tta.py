"""--tta: the report's figures are those a Predictor of the saved model gives, mirror included."""
from __future__ import annotations

import json

import pytest

from petclf import Predictor, TrainOptions
from petclf.core.errors import UsageError
from petclf.evaluate.interpretation import interpret_saved
from petclf.jobs.run import train_folder

from ..conftest import TINY


@pytest.fixture(scope="module")
def tta_run(folders_dir, tmp_path_factory):
    options = TrainOptions(**{k: v for k, v in TINY.items()}, epochs=2, lr=1e-2, tta=True)
    return train_folder(folders_dir, out=tmp_path_factory.mktemp("tta"), options=options, progress=False)


def test_saved_model_predicts_with_tta_by_default_and_the_report_matches_it(tta_run, folders_dir):
    assert Predictor(tta_run.model_dir).tta is True
    reported = json.loads((tta_run.out / "metrics.json").read_text())
    for split in ("valid", "test"):
        again = interpret_saved(tta_run.model_dir, folders_dir, split=split).metrics()
        assert again["log_loss"] == pytest.approx(reported[split]["log_loss"], abs=1e-5)
        assert again["error_rate"] == reported[split]["error_rate"]
    # Without the mirror the scores differ: the report did score the mirrored images.
    files = sorted((folders_dir / "valid").rglob("*.png"))
    plain = Predictor(tta_run.model_dir, tta=False).logits(files).log_softmax(1)
    assert (plain - Predictor(tta_run.model_dir).logits(files).log_softmax(1)).abs().max() > 1e-3


def test_tta_is_refused_for_a_model_trained_without_mirrored_images(folders_dir, tmp_path):
    with pytest.raises(UsageError, match="tta mirrors images"):
        train_folder(folders_dir, out=tmp_path / "o", options=TrainOptions(**TINY, augment="no-flip", tta=True))
