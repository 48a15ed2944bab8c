"""POST /explain through a real uvicorn server: a PNG heat map of one image, under the limits of /predict."""
from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, unquote

import httpx
import numpy as np
import pytest
from PIL import Image

from ..web import ThreadServer
from .conftest import CLASSES, image_bytes, make_model_dir


def test_explain_answers_a_png_of_the_predicted_class(client):
    data = image_bytes(7)
    predicted = client.post("/predict?topk=1", content=data, headers={"Content-Type": "image/png"}).json()
    top = predicted["predictions"][0][0]
    response = client.post("/explain", content=data, headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.format == "PNG" and picture.size == (48, 48)  # the presized square the model read
    assert unquote(response.headers["Petclf-Class"]) == top["label"]
    assert abs(float(response.headers["Petclf-Probability"]) - top["probability"]) < 1e-4


def test_explain_another_class_by_name_as_multipart(client):
    files = {"image": ("cat.png", image_bytes(8), "image/png")}
    response = client.post(f"/models/pets/explain?class={quote(CLASSES[3])}", files=files)
    assert response.status_code == 200, response.text
    assert unquote(response.headers["Petclf-Class"]) == "<b>owl</b>"


def test_explain_refusals(client):
    png = {"Content-Type": "image/png"}
    unknown = client.post("/explain?class=zebra", content=image_bytes(9), headers=png)
    assert unknown.status_code == 400 and "no class 'zebra'" in unknown.json()["error"]
    two = client.post("/explain", files=[("image", ("a.png", image_bytes(1), "image/png")),
                                          ("image", ("b.png", image_bytes(2), "image/png"))])
    assert two.status_code == 400 and "one image" in two.json()["error"]
    broken = client.post("/explain", content=b"not an image", headers=png)
    assert broken.status_code == 422 and "not an image" in broken.json()["error"]
    huge = client.post("/explain", content=b"\0" * (3 * 1024 * 1024), headers=png)  # the server takes 2 MB
    assert huge.status_code == 413
    assert client.post("/models/nope/explain", content=image_bytes(3), headers=png).status_code == 404


def test_a_multi_label_model_is_explained_for_its_most_likely_label(tmp_path):
    from petclf.serve import ServeOptions, app

    model = make_model_dir(tmp_path / "tags", extra={"task": "multi_label", "thresholds": [0.5] * len(CLASSES)})
    png, data = {"Content-Type": "image/png"}, image_bytes(11)
    with ThreadServer(app([model], options=ServeOptions(precision="fp32", access_log=False))) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        (top,) = client.post("/predict?topk=1", content=data, headers=png).json()["predictions"][0]
        response = client.post("/explain", content=data, headers=png)
        assert response.status_code == 200, response.text
        # One map per answer: the most likely label, with its own sigmoid probability as /predict gives it.
        assert unquote(response.headers["Petclf-Class"]) == top["label"]
        assert abs(float(response.headers["Petclf-Probability"]) - top["probability"]) < 1e-4
        other = next(c for c in CLASSES if c != top["label"])
        named = client.post(f"/explain?class={quote(other)}", content=data, headers=png)
        assert named.status_code == 200 and unquote(named.headers["Petclf-Class"]) == other


def test_heat_maps_drawn_at_once_on_a_server_with_streams_equal_those_drawn_alone(tmp_path):
    from petclf.serve import ServeOptions, app

    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = make_model_dir(tmp_path / "pets")
    png = {"Content-Type": "image/png"}
    options = ServeOptions(precision="fp32", access_log=False, backend="onnxruntime", streams=2)
    with ThreadServer(app([model], options=options)) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        def explain(seed: int) -> tuple[str, str, np.ndarray]:
            response = client.post("/explain", content=image_bytes(seed), headers=png)
            assert response.status_code == 200, response.text
            return (response.headers["Petclf-Class"], response.headers["Petclf-Probability"],
                    np.asarray(Image.open(io.BytesIO(response.content))))

        alone = {seed: explain(seed) for seed in (21, 22, 23)}
        with ThreadPoolExecutor(6) as pool:
            together = list(pool.map(explain, [21, 22, 23] * 3))
    for seed, (label, probability, picture) in zip([21, 22, 23] * 3, together):
        assert (label, probability) == alone[seed][:2]
        assert np.abs(picture.astype(int) - alone[seed][2].astype(int)).max() <= 1
