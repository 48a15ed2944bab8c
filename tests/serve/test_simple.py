"""The simple JSON API against a real server: the same answers as Predictor, in order, under concurrency."""
from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest

from petclf import Predictor

from .conftest import CLASSES, image_bytes


@pytest.fixture(scope="module")
def predictor(model_dir):
    return Predictor(model_dir, device="cpu", precision="fp32")


def _files(tmp_path, seeds, fmt="PNG"):
    paths = []
    for seed in seeds:
        path = tmp_path / f"img{seed}.{fmt.lower()}"
        path.write_bytes(image_bytes(seed, fmt=fmt))
        paths.append(path)
    return paths


def _pairs(predictions):
    return [(p["label"], p["probability"]) for p in predictions]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_predict_equals_predictor_predict(client, predictor, tmp_path, fmt):
    path = _files(tmp_path, [7], fmt=fmt)[0]
    expected = predictor.predict(path, topk=3)
    answer = client.post("/predict", content=path.read_bytes(), headers={"content-type": f"image/{fmt.lower()}"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    got = _pairs(answer.json()["predictions"][0])
    assert [label for label, _ in got] == [label for label, _ in expected]
    assert np.allclose([p for _, p in got], [p for _, p in expected], atol=1e-5, rtol=0)


def test_a_large_jpeg_is_read_at_reduced_scale_as_predictor_reads_it(client, predictor, tmp_path):
    path = tmp_path / "large.jpg"
    path.write_bytes(image_bytes(3, size=(400, 300), fmt="JPEG"))  # >= 2x the presize: JPEG draft decoding
    expected = predictor.predict(path, topk=4)
    got = _pairs(client.post("/predict?topk=4", content=path.read_bytes(),
                             headers={"content-type": "image/jpeg"}).json()["predictions"][0])
    assert np.allclose([p for _, p in got], [p for _, p in expected], atol=1e-5, rtol=0)


def test_multipart_files_answer_in_request_order_with_topk(client, predictor, tmp_path):
    paths = _files(tmp_path, [11, 12, 13])
    expected = predictor.predict_batch(paths, topk=2)
    files = [("image", (p.name, p.read_bytes(), "image/png")) for p in paths]
    answer = client.post("/predict?topk=2", files=files, data={"note": "form fields that are not files are ignored"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["model"] == "pets" and len(body["predictions"]) == 3
    for got, want in zip(body["predictions"], expected):
        assert [g["label"] for g in got] == [w[0] for w in want]
        assert np.allclose([g["probability"] for g in got], [w[1] for w in want], atol=1e-5, rtol=0)
    # The named route answers the same for a single model.
    named = client.post("/models/pets/predict?topk=2", files=files).json()
    assert named["predictions"] == body["predictions"]


def test_health_metadata_and_metrics(client):
    assert client.get("/health").json() == {"status": "ok", "models": ["pets"]}
    card = client.get("/metadata").json()["models"][0]
    assert card["name"] == "pets" and card["classes"] == list(CLASSES) and card["arch"] == "resnet18"
    assert card["input"] == {"size": 32, "presize": 48, "pixels": [-1, 48, 48, 3]}
    assert card["metrics"]["error_rate"] == 0.125 and card["serving"]["precision"] == "fp32"
    assert "torch" in card["trained_with"] and "petclf" in card["serving"]
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'petclf_requests_total{method="GET",route="/health",status="200"}' in text
    assert "petclf_request_duration_seconds_bucket" in text and "petclf_batch_size_bucket" in text


def test_64_concurrent_requests_each_get_their_own_answer(server, predictor, tmp_path):
    paths = _files(tmp_path, range(100, 164))
    expected = predictor.probabilities(predictor.logits(paths)).numpy()
    assert len({tuple(np.round(row, 4)) for row in expected}) == 64  # distinct answers, so a mix-up would show
    order = {label: i for i, label in enumerate(CLASSES)}

    async def run() -> list[dict]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            before = await client.get("/metrics")
            answers = await asyncio.gather(*(
                client.post("/predict?topk=4", content=p.read_bytes(), headers={"content-type": "image/png"})
                for p in paths))
            after = await client.get("/metrics")
        return [a.json() for a in answers], before.text, after.text

    answers, before, after = asyncio.run(run())
    for answer, want in zip(answers, expected):
        got = np.zeros(len(CLASSES))
        for p in answer["predictions"][0]:
            got[order[p["label"]]] = p["probability"]
        assert np.allclose(got, want, atol=1e-5, rtol=0)
    # Batched: fewer forward passes than requests.
    def batches(text: str) -> tuple[float, float]:
        lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("petclf_batch_size_"))
        return (float(lines['petclf_batch_size_count{model="pets"}']),
                float(lines['petclf_batch_size_sum{model="pets"}']))

    (count0, sum0), (count1, sum1) = batches(before), batches(after)
    assert sum1 - sum0 == 64 and count1 - count0 < 64


def test_the_page_is_self_contained_and_escapes_class_names(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "&lt;b&gt;owl&lt;/b&gt;" in html and "<b>owl</b>" not in html
    assert "http://" not in html and "https://" not in html  # no external scripts, styles or fonts
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'nonce-" in policy
    embedded = html.split('id="petclf-models">', 1)[1].split("</script>", 1)[0]
    assert json.loads(embedded)[0]["predict_url"] == "models/pets/predict?topk=5"


def test_the_app_mounted_in_another_app_starts_with_its_first_request(model_dir):
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from petclf.serve import ServeOptions, app

    from ..web import ThreadServer

    host = Starlette(routes=[Mount("/classify", app=app([model_dir], options=ServeOptions(access_log=False)))])
    running = ThreadServer(host).start()  # Starlette runs no lifespan of mounted apps
    try:
        with httpx.Client(base_url=running.url, timeout=30) as client:
            answer = client.post("/classify/predict", content=image_bytes(1), headers={"content-type": "image/png"})
            assert answer.status_code == 200 and answer.json()["model"] == "pets"
            assert client.get("/classify/health").json()["status"] == "ok"
            assert 'models/pets/predict' in client.get("/classify/").text  # relative: the page works under /classify/
    finally:
        running.stop()


def test_a_multi_label_model_answers_every_label_over_its_threshold(tmp_path):
    from petclf.serve import ServeOptions, app

    from ..web import ThreadServer
    from .conftest import make_model_dir

    image = tmp_path / "scene.png"
    image.write_bytes(image_bytes(41))
    first = make_model_dir(tmp_path / "probe", extra={"task": "multi_label", "thresholds": [0.5] * 4})
    probs = Predictor(first, device="cpu", precision="fp32").logits([image]).sigmoid()[0].tolist()
    # Thresholds just under labels 0 and 2 and just over 1 and 3: exactly labels 0 and 2 are given.
    thresholds = [max(0.0, probs[0] - 0.01), min(1.0, probs[1] + 0.01), max(0.0, probs[2] - 0.01),
                  min(1.0, probs[3] + 0.01)]
    model = make_model_dir(tmp_path / "tags", extra={"task": "multi_label", "thresholds": thresholds})
    running = ThreadServer(app([model], options=ServeOptions(precision="fp32", access_log=False))).start()
    try:
        with httpx.Client(base_url=running.url, timeout=30) as client:
            card = client.get("/metadata").json()["models"][0]
            assert card["multi_label"] and card["thresholds"] == pytest.approx(thresholds)
            answer = client.post("/predict", content=image.read_bytes(), headers={"content-type": "image/png"})
            got = answer.json()["predictions"][0]
            assert sorted(p["label"] for p in got) == sorted([CLASSES[0], CLASSES[2]])
            assert all(abs(p["probability"] - probs[CLASSES.index(p["label"])]) < 1e-5 for p in got)
            everything = client.post("/predict?topk=4", content=image.read_bytes(),
                                     headers={"content-type": "image/png"}).json()["predictions"][0]
            assert len(everything) == 4
    finally:
        running.stop()
