"""A trained single-label model's temperature and "unknown" detector, end to end: stored in petclf.json, applied
the same way by Predictor (with and without TTA), `predict --csv`, /predict, /v2 (tritonclient) and the ONNX
export, also at another acceptance (`Predictor(unknown=)`, `serve --unknown-accept`); the report carries both
ECE figures and shows the reliability diagram in a real browser."""
from __future__ import annotations

import csv
import io
import json

import httpx
import numpy as np
import pytest
import torch

from petclf import Predictor
from petclf.cli import main
from petclf.core.defaults import DEFAULT_OOD_SCORE
from petclf.core.options import TrainOptions
from petclf.jobs.run import train_folder

from ..conftest import TINY
from ..web import ThreadServer, chromium


@pytest.fixture(scope="module")
def run(folders_dir, tmp_path_factory):
    # Accepting half of the validation images makes the flag split the images: a consistency check that can fail.
    options = TrainOptions(epochs=1, lr=1e-2, precision="fp32", unknown_accept=0.5, **TINY)
    return train_folder(folders_dir, out=tmp_path_factory.mktemp("trust") / "run", options=options, progress=False)


@pytest.fixture(scope="module")
def images(folders_dir):
    return sorted(p for split in ("valid", "test") for p in (folders_dir / split).rglob("*.png"))


def test_model_summary_and_metrics_carry_temperature_detector_and_both_ece(run):
    meta = json.loads((run.model_dir / "petclf.json").read_text())
    assert 0.01 <= meta["temperature"] <= 100
    assert meta["unknown"]["kind"] == DEFAULT_OOD_SCORE and meta["unknown"]["accept"] == 0.5
    summary = json.loads((run.out / "summary.json").read_text())
    metrics = json.loads((run.out / "metrics.json").read_text())
    for split, prefix in (("valid", ""), ("test", "test_")):
        assert summary[f"{prefix}ece_before"] == metrics[split]["ece_before"]
        assert summary[f"{prefix}ece_after"] == metrics[split]["ece_after"]
        assert 0 < summary[f"{prefix}ece_chance_p95"] == metrics[split]["ece_chance_p95"] < 1
    # The temperature minimises validation log loss, which at a fixed accuracy usually also narrows the ECE.
    assert metrics["valid"]["ece_after"] <= metrics["valid"]["ece_before"] + 0.05
    assert (run.out / "reliability.png").is_file() and (run.out / "test_reliability.png").is_file()


def test_predictor_probabilities_use_the_temperature_with_and_without_tta(run, images):
    plain = Predictor(run.model_dir, device="cpu", precision="fp32", tta=False)
    flipped = Predictor(run.model_dir, device="cpu", precision="fp32", tta=True)
    t = plain.temperature
    assert t == json.loads((run.model_dir / "petclf.json").read_text())["temperature"]
    pixels = plain.pixels(images[:4])
    with torch.inference_mode():
        z, z_mirror = plain.scores(pixels), plain.scores(pixels.flip(2))
        assert torch.allclose(plain.probabilities(z), (z / t).softmax(1), atol=1e-6)
        expected = ((z / t).softmax(1) + (z_mirror / t).softmax(1)) / 2
        assert torch.allclose(flipped.probabilities(flipped.scores(pixels)), expected, atol=1e-5)


def test_onnx_outputs_match_the_predictor(run, images, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from petclf.runtime.export import export_onnx, onnx_input

    path = export_onnx(run.model_dir, tmp_path / "m.onnx")
    predictor = Predictor(run.model_dir, device="cpu", precision="fp32", tta=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities", "ood_score", "unknown"]
    pixels = np.concatenate([onnx_input(f, predictor.pipeline) for f in images])
    logits, probs, scores, unknown = session.run(None, {"pixels": pixels})
    ours = predictor.judge_batch(images, topk=len(predictor.classes))
    reference = predictor.probabilities(predictor.logits(images)).numpy()
    assert np.abs(probs - reference).max() < 1e-5
    assert np.abs(scores - np.array([a.ood_score for a in ours])).max() < 1e-4
    # The threshold is one validation image's own score: that image may fall either side by float rounding.
    clear = np.abs(scores - predictor.unknown_threshold) > 1e-4
    assert clear.sum() >= len(images) - 1
    assert unknown[clear].tolist() == [a.unknown for a, c in zip(ours, clear) if c]
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert float(meta["petclf.temperature"]) == predictor.temperature
    assert json.loads(meta["petclf.unknown"])["threshold"] == predictor.unknown_threshold


def test_unknown_flag_agrees_across_predictor_csv_predict_and_v2(run, images, tmp_path):
    tritonclient = pytest.importorskip("tritonclient.http")
    from petclf.serve import ServeOptions, app

    answers = Predictor(run.model_dir, device="cpu", precision="fp32").judge_batch(images)
    flags = [a.unknown for a in answers]
    assert True in flags and False in flags, flags  # half the validation images are over the threshold
    out = tmp_path / "p.csv"
    assert main(["predict", str(run.model_dir), *map(str, images), "--csv", str(out), "--reject-unknown"]) == 0
    rows = list(csv.DictReader(out.open()))
    # The command predicts at precision 'auto' (bf16 where it pays): compared with a Predictor at the same precision.
    auto = Predictor(run.model_dir, device="cpu").judge_batch(images)
    assert [r["unknown"] == "true" for r in rows] == [a.unknown for a in auto]
    assert [r["label_1"] == "unknown" for r in rows] == [a.unknown for a in auto]
    assert [float(r["ood_score"]) for r in rows] == pytest.approx([a.ood_score for a in auto], abs=1e-4)
    options = ServeOptions(precision="fp32", max_images=32, timeout_s=60, access_log=False)
    with ThreadServer(app({"m": run.model_dir}, options=options)) as server:
        files = [("image", (p.name, p.read_bytes(), "image/png")) for p in images]
        answer = httpx.post(server.url + "/predict?reject_unknown=true", files=files, timeout=60).json()
        assert answer["unknown"] == flags
        assert [not top for top in answer["predictions"]] == flags
        assert answer["ood_scores"] == pytest.approx([a.ood_score for a in answers], abs=1e-4)
        with tritonclient.InferenceServerClient(server.url.removeprefix("http://")) as client:
            outputs = [o["name"] for o in client.get_model_metadata("m")["outputs"]]
            assert outputs[-2:] == ["ood_score", "unknown"]
            data = tritonclient.InferInput("image", [len(images)], "BYTES")
            data.set_data_from_numpy(np.array([p.read_bytes() for p in images], dtype=object), binary_data=True)
            result = client.infer("m", [data], outputs=[tritonclient.InferRequestedOutput("ood_score"),
                                                        tritonclient.InferRequestedOutput("unknown")])
            assert result.as_numpy("unknown").tolist() == flags
            assert result.as_numpy("ood_score") == pytest.approx([a.ood_score for a in answers], abs=1e-4)


def test_serve_unknown_accept_moves_the_flags_as_predictor_unknown_does(run, images):
    tritonclient = pytest.importorskip("tritonclient.http")
    from petclf.serve import ServeOptions, app

    own = Predictor(run.model_dir, device="cpu", precision="fp32").judge_batch(images)
    looser = Predictor(run.model_dir, device="cpu", precision="fp32", unknown=0.99)
    answers = looser.judge_batch(images)
    flags = [a.unknown for a in answers]
    # Trained at 0.5, the model flags half its validation images; keeping 99% known flags fewer.
    assert sum(flags) < sum(a.unknown for a in own), (flags, [a.unknown for a in own])
    options = ServeOptions(precision="fp32", max_images=32, timeout_s=60, access_log=False, unknown_accept=0.99)
    with ThreadServer(app({"m": run.model_dir}, options=options)) as server:
        card = httpx.get(server.url + "/metadata", timeout=30).json()["models"][0]
        assert card["unknown"]["accept"] == 0.99
        assert card["unknown"]["threshold"] == pytest.approx(looser.unknown_threshold)
        files = [("image", (p.name, p.read_bytes(), "image/png")) for p in images]
        answer = httpx.post(server.url + "/predict?reject_unknown=true", files=files, timeout=60).json()
        assert answer["unknown"] == flags
        assert [not top for top in answer["predictions"]] == flags
        with tritonclient.InferenceServerClient(server.url.removeprefix("http://")) as client:
            data = tritonclient.InferInput("image", [len(images)], "BYTES")
            data.set_data_from_numpy(np.array([p.read_bytes() for p in images], dtype=object), binary_data=True)
            result = client.infer("m", [data], outputs=[tritonclient.InferRequestedOutput("unknown")])
            assert result.as_numpy("unknown").tolist() == flags


@pytest.fixture(scope="module")
def browser():
    yield from chromium()


def test_report_page_shows_the_reliability_diagram(run, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto((run.out / "report.html").resolve().as_uri())
    diagram = page.locator('img[alt="valid reliability diagram"]')
    diagram.scroll_into_view_if_needed()
    assert diagram.is_visible()
    assert diagram.evaluate("img => img.complete && img.naturalWidth > 200")
    text = page.locator("#calibration").evaluate("h => h.parentElement.innerText")
    assert "ECE before" in text and "ECE after" in text
    png = page.screenshot(full_page=True)
    from PIL import Image

    assert Image.open(io.BytesIO(png)).size[0] == 1200
    page.close()
