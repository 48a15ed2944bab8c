"""Multi-label end to end: a table with a label delimiter → training → model dir → Predictor, ONNX, report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from petclf import Predictor
from petclf.cli import main
from petclf.evaluate.interpretation import interpret_saved
from petclf.evaluate.multilabel import MultiLabelInterpretation, choose_thresholds
from petclf.runtime.modeldir import read_meta

from ..conftest import make_image
from ..test_cli import TINY_ARGS

#: Each label is a colour painted on one half of the image; an image holds one or two of them.
HALVES = {"red": (210, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def _two_halves(path: Path, left: str, right: str, *, seed: int) -> None:
    make_image(path, HALVES[left], seed=seed)
    from PIL import Image

    img = np.asarray(Image.open(path)).copy()
    img[:, img.shape[1] // 2:] = HALVES[right]
    Image.fromarray(img).save(path)


@pytest.fixture(scope="module")
def label_sets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multi")
    names = list(HALVES)
    rows = []
    for i in range(48):
        left, right = names[i % 3], names[(i // 3) % 3]
        _two_halves(root / "img" / f"{i:03d}.png", left, right, seed=i)
        rows.append((f"img/{i:03d}.png", " ".join(sorted({left, right})), i % 4 == 0))
    pd.DataFrame(rows, columns=["fname", "labels", "is_valid"]).to_csv(root / "labels.csv", index=False)
    return root


@pytest.fixture(scope="module")
def run(label_sets, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mlrun")
    assert main(["train", str(label_sets / "labels.csv"), "--label-delim", " ", "--epochs", "3", "--lr", "1e-2",
                 "--out", str(out), *TINY_ARGS]) == 0
    return out


def test_summary_metrics_and_history_are_multi_label(run):
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "multi_label" and summary["layout"] == "csv"
    for key in ("f1_micro", "f1_macro", "map", "threshold", "accuracy_multi"):
        assert key in summary, key
    assert "error_rate" not in summary and "accuracy" not in summary
    assert 0.05 <= summary["threshold"] <= 0.95
    metrics = json.loads((run / "metrics.json").read_text())["valid"]
    assert metrics["task"] == "multi_label" and metrics["f1_micro"] == pytest.approx(summary["f1_micro"])
    history = pd.read_csv(run / "history.csv")
    assert {"accuracy_multi", "f1_micro"} <= set(history.columns) and "error_rate" not in history.columns
    for name in ("per_label.csv", "most_missed.csv", "most_added.csv", "top_losses.png", "report.html"):
        assert (run / name).is_file(), name
    page = (run / "report.html").read_text()
    for anchor in ("per-label", "most-missed", "most-added", "top-losses"):
        assert f'id="{anchor}"' in page
    assert "confusion-matrix" not in page


def test_model_dir_carries_task_thresholds_and_columns(run):
    meta = read_meta(run / "model")
    summary = json.loads((run / "summary.json").read_text())
    assert meta["task"] == "multi_label"
    assert meta["thresholds"] == [summary["threshold"]] * 3
    assert meta["data"]["label_delim"] == " " and meta["data"]["fn_col"] == "fname"


def test_predictor_returns_every_label_over_its_threshold(run, label_sets):
    predictor = Predictor(run / "model", device="cpu", precision="fp32")
    assert predictor.multi_label
    files = sorted((label_sets / "img").glob("*.png"))[:6]
    probs = predictor.probabilities(predictor.logits(files))
    assert ((probs >= 0) & (probs <= 1)).all() and not np.allclose(probs.sum(1).numpy(), 1.0)  # sigmoid, not softmax
    for file, row, answer in zip(files, probs, predictor.predict_batch(files)):
        expected = {c for c, p, t in zip(predictor.classes, row.tolist(), predictor.thresholds) if p >= t}
        assert {label for label, _ in answer} == expected
        assert [p for _, p in answer] == sorted((p for _, p in answer), reverse=True)
        # One image alone or in a batch of six: the same labels; the scores agree to float rounding (convolution
        # kernels sum in a batch-size-dependent order).
        alone = predictor.predict(file)
        assert [label for label, _ in alone] == [label for label, _ in answer]
        assert [p for _, p in alone] == pytest.approx([p for _, p in answer], abs=1e-5)
    assert len(predictor.predict(files[0], topk=3)) == 3  # top-k of all labels on request


def test_predict_csv_has_a_labels_column(run, label_sets, tmp_path):
    assert main(["predict", str(run / "model"), str(label_sets / "img" / "000.png"), "--csv",
                 str(tmp_path / "p.csv")]) == 0
    frame = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert list(frame.columns) == ["path", "labels", "prob_blue", "prob_green", "prob_red", "error"]


def test_onnx_gives_sigmoid_probabilities_and_carries_the_thresholds(run, label_sets, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="ONNX extras not installed (pip install petclf[onnx])")
    import onnx

    from petclf.runtime.export import export_onnx, onnx_input

    path = export_onnx(run / "model", tmp_path / "ml.onnx")
    predictor = Predictor(run / "model", device="cpu", precision="fp32")
    files = sorted((label_sets / "img").glob("*.png"))[:5]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pixels = np.concatenate([onnx_input(f, predictor.pipeline) for f in files])
    (ours,) = session.run(["probabilities"], {"pixels": pixels})
    assert np.abs(ours - predictor.probabilities(predictor.logits(files)).numpy()).max() < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["petclf.task"] == "multi_label"
    assert json.loads(meta["petclf.thresholds"]) == list(predictor.thresholds)


def test_saved_model_report_matches_the_training_report(run, label_sets):
    interp = interpret_saved(run / "model", label_sets / "labels.csv", split="valid")
    assert isinstance(interp, MultiLabelInterpretation)
    training = json.loads((run / "metrics.json").read_text())["valid"]
    assert interp.metrics()["f1_micro"] == pytest.approx(training["f1_micro"], abs=1e-6)
    assert main(["report", str(run / "model"), str(label_sets / "labels.csv"), "--out", str(run / "again")]) == 0
    assert (run / "again" / "per_label.csv").is_file()
    # Both reports draw the top losses beside heat maps of their worst added and missed labels.
    assert (run / "top_losses_heatmaps.png").is_file() and (run / "again" / "top_losses_heatmaps.png").is_file()


def test_thresholds_chosen_on_validation_beat_or_match_a_fixed_half():
    rng = np.random.default_rng(0)
    targets = rng.random((400, 4)) < 0.3
    # an under-confident model: positives score around 0.35, negatives around 0.1
    probs = np.clip(np.where(targets, 0.35, 0.1) + rng.normal(0, 0.08, targets.shape), 0, 1)
    chosen = choose_thresholds(probs, targets)
    assert len(set(chosen)) == 1 and 0.15 <= chosen[0] <= 0.3
    half = MultiLabelInterpretation.from_arrays(probs, targets, classes=list("abcd"))
    tuned = half.with_thresholds(chosen)
    assert tuned.metrics()["f1_micro"] > half.metrics()["f1_micro"] + 0.5
    per_label = choose_thresholds(probs, targets, mode="per-label")
    assert len(per_label) == 4 and all(0.1 <= t <= 0.35 for t in per_label)
    assert choose_thresholds(probs, targets, mode=0.4) == [0.4] * 4


def test_multi_label_figures_by_hand():
    probs = np.array([[0.9, 0.2, 0.7], [0.1, 0.8, 0.4], [0.6, 0.6, 0.1]])
    targets = np.array([[1, 0, 1], [0, 1, 1], [0, 1, 0]])
    interp = MultiLabelInterpretation.from_arrays(probs, targets, classes=["a", "b", "c"], items=["x", "y", "z"])
    m = interp.metrics()
    # predicted at 0.5: {a, c}, {b}, {a, b}; tp 4, fp 1 (a in z), fn 1 (c in y)
    assert m["f1_micro"] == pytest.approx(0.8)
    assert m["accuracy_multi"] == pytest.approx(7 / 9)
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert interp.most_missed().label.tolist() == ["c"] and interp.most_added().label.tolist() == ["a"]
    worst = interp.top_losses(1).iloc[0]
    assert (worst.given, worst.predicted) in {("b c", "b"), ("b", "a b")}
    per_label = interp.per_label()
    assert per_label.loc["a", "precision"] == pytest.approx(0.5) and per_label.loc["c", "recall"] == pytest.approx(0.5)
    assert per_label.loc["b", "ap"] == pytest.approx(1.0)
