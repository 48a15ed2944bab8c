"""Temperature scaling on logits with a known temperature, the calibration error, and the model-file checks of the
new fields (a stranger's temperature or threshold is refused with a message naming the field)."""
from __future__ import annotations


import numpy as np
import pytest

from petclf import Predictor
from petclf.core.errors import ModelFileError
from petclf.evaluate.calibration import ece_by_chance
from petclf.runtime.modelcheck import CURVE_POINTS
from petclf.runtime.temperature import expected_calibration_error, fit_temperature, reliability

from ..serve.conftest import make_model_dir


def _sample(temperature: float, *, n: int = 6000, classes: int = 5, seed: int = 0):
    """Logits and labels drawn from softmax(logits / temperature): the temperature that calibrates them is known."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * 4
    probs = np.exp(logits / temperature)
    probs /= probs.sum(axis=1, keepdims=True)
    labels = (probs.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return logits, labels


@pytest.mark.parametrize("classes", [2, 5])  # two classes: scikit-learn's binary path (one decision column)
@pytest.mark.parametrize("temperature", [0.5, 2.5])
def test_a_known_temperature_is_recovered(temperature, classes):
    logits, labels = _sample(temperature, classes=classes)
    assert fit_temperature(logits, labels) == pytest.approx(temperature, rel=0.08)


def test_classes_missing_from_validation_and_tiny_splits_still_fit():
    logits, labels = _sample(2.0, n=400)
    labels = np.where(labels == 4, 0, labels)  # class 4 never appears, several have few images
    assert 1.0 < fit_temperature(logits, labels) < 6.0
    assert fit_temperature(logits[:3], labels[:3]) > 0  # three validation images: no 5-fold refusal


def test_calibration_lowers_the_error_and_bins_cover_every_image():
    logits, labels = _sample(3.0)
    raw = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    t = fit_temperature(logits, labels)
    scaled = np.exp(logits / t) / np.exp(logits / t).sum(axis=1, keepdims=True)
    before, after = expected_calibration_error(raw, labels), expected_calibration_error(scaled, labels)
    assert after < 0.03 < before
    rows = reliability(scaled, labels)
    assert len(rows) == 15 and sum(r["count"] for r in rows) == len(labels)


def test_ece_by_chance_is_what_a_calibrated_model_shows_and_shrinks_with_more_images():
    logits, _ = _sample(1.0, n=800)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    rng = np.random.default_rng(1)
    # Labels drawn from the probabilities themselves: calibrated by construction; their ECE is the chance level.
    drawn = [expected_calibration_error(probs, (probs.cumsum(axis=1) > rng.random((len(probs), 1))).argmax(axis=1))
             for _ in range(150)]
    mean, p95 = ece_by_chance(probs)
    assert mean == pytest.approx(np.mean(drawn), rel=0.15)
    assert p95 == pytest.approx(np.quantile(drawn, 0.95), rel=0.25)
    assert 0 < mean < p95
    assert ece_by_chance(np.tile(probs, (10, 1)))[1] < p95 / 2  # ten times the images: a much smaller floor
    overconfident = np.exp(logits * 3) / np.exp(logits * 3).sum(axis=1, keepdims=True)
    labels = (probs.cumsum(axis=1) > rng.random((len(probs), 1))).argmax(axis=1)
    assert expected_calibration_error(overconfident, labels) > ece_by_chance(overconfident)[1]


def _unknown(**overrides) -> dict:
    return {"kind": "energy", "threshold": -1.0, "accept": 0.95, "curve": [-3.0 + k / 50 for k in range(CURVE_POINTS)],
            **overrides}


def test_old_model_directories_load_with_temperature_one_and_no_detector(tmp_path):
    predictor = Predictor(make_model_dir(tmp_path / "m"), device="cpu", precision="fp32")
    assert predictor.temperature == 1.0 and predictor.detector is None


@pytest.mark.parametrize("field, value, named", [
    ("temperature", "hot", "temperature"), ("temperature", -1.0, "temperature"), ("temperature", 1e9, "temperature"),
    ("temperature", True, "temperature"),
    ("unknown", "yes", "unknown"), ("unknown", _unknown(kind="rm -rf"), "unknown.kind"),
    ("unknown", _unknown(threshold=float("nan")), "unknown.threshold"),
    ("unknown", _unknown(threshold="-1"), "unknown.threshold"), ("unknown", _unknown(accept=0.2), "unknown.accept"),
    ("unknown", _unknown(curve=[0.0] * 3), "unknown.curve"),
    ("unknown", _unknown(curve=list(range(CURVE_POINTS))[::-1]), "unknown.curve"),
])
def test_tampered_fields_are_refused_by_name(tmp_path, field, value, named):
    directory = make_model_dir(tmp_path / "m", extra={field: value})
    with pytest.raises(ModelFileError, match=f"field '{named}'"):
        Predictor(directory, device="cpu")


def test_a_stored_detector_loads_and_flags(tmp_path):
    directory = make_model_dir(tmp_path / "m", extra={"temperature": 2.0, "unknown": _unknown()})
    predictor = Predictor(directory, device="cpu", precision="fp32")
    image = np.full((40, 40, 3), 128, np.uint8)
    from PIL import Image

    answer = predictor.judge(Image.fromarray(image), topk=4)
    logits = predictor.logits([Image.fromarray(image)])
    assert answer.ood_score == pytest.approx(float(-logits.logsumexp(dim=1)), abs=1e-4)
    assert answer.unknown == (answer.ood_score > -1.0)
    probs = [p for _, p in answer.top]
    assert probs == pytest.approx(sorted((logits / 2.0).softmax(dim=1)[0].tolist(), reverse=True), abs=1e-6)
    assert Predictor(directory, device="cpu", unknown=0.75).unknown_threshold == pytest.approx(-2.0)  # mid-curve


def test_acceptance_overrides_out_of_range_are_refused(tmp_path):
    from petclf.core.errors import UsageError
    from petclf.core.options import TrainOptions

    with pytest.raises(UsageError, match="unknown_accept"):
        TrainOptions(unknown_accept=0.3).validate()
    directory = make_model_dir(tmp_path / "m", extra={"unknown": _unknown()})
    with pytest.raises(UsageError, match="share of ordinary images"):
        Predictor(directory, device="cpu", unknown=1.5)
    with pytest.raises(UsageError, match="no detector|has none"):
        Predictor(make_model_dir(tmp_path / "old"), device="cpu", unknown=0.99)
