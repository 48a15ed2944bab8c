"""The Open Inference Protocol: tritonclient.http, unchanged, against a real server; and its JSON form by hand."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from petclf import Predictor
from petclf.data.images import Presizer

from .conftest import CLASSES, image_bytes

tritonclient = pytest.importorskip("tritonclient.http", reason="tritonclient is a test extra: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def logits(model_dir):
    predictor = Predictor(model_dir, device="cpu", precision="fp32")
    return predictor.logits([Image.open(io.BytesIO(image_bytes(k))) for k in (21, 22, 23)])


@pytest.fixture(scope="module")
def expected(logits):
    return logits.softmax(dim=1).numpy()


@pytest.fixture()
def triton(server):
    with tritonclient.InferenceServerClient(server.url.removeprefix("http://")) as client:
        yield client


def test_tritonclient_health_and_metadata(triton):
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready("pets")
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]
    meta = triton.get_model_metadata("pets")
    assert meta["versions"] == ["1"]
    assert {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]} == {
        "image": ("BYTES", [-1]), "pixels": ("UINT8", [-1, 48, 48, 3])}
    assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
        "probabilities": ("FP32", [-1, 4]), "labels": ("BYTES", [-1, 4]), "logits": ("FP32", [-1, 4])}


@pytest.mark.parametrize("binary", [True, False], ids=["binary outputs", "JSON outputs"])
def test_tritonclient_round_trip_with_encoded_images(triton, expected, binary):
    image = tritonclient.InferInput("image", [3], "BYTES")
    image.set_data_from_numpy(np.array([image_bytes(k) for k in (21, 22, 23)], dtype=object))
    outputs = [tritonclient.InferRequestedOutput(name, binary_data=binary) for name in ("probabilities", "labels")]
    result = triton.infer("pets", [image], outputs=outputs, request_id="r-1")
    probs = result.as_numpy("probabilities")
    assert probs.dtype == np.float32 and probs.shape == (3, 4)
    assert np.allclose(probs, expected, atol=1e-5, rtol=0)
    labels = result.as_numpy("labels")
    top = [label.decode() if isinstance(label, bytes) else label for label in labels[:, 0]]
    assert top == [CLASSES[i] for i in expected.argmax(1)]
    assert result.get_response()["id"] == "r-1" and result.get_response()["model_version"] == "1"


def test_tritonclient_pixels_in_logits_out_as_the_onnx_export_and_classification(triton, logits, expected):
    # The ONNX export's names: a client written for Triton serving the export runs here unchanged.
    pixels = np.stack([Presizer(48)(Image.open(io.BytesIO(image_bytes(k)))) for k in (21, 22, 23)])
    data = tritonclient.InferInput("pixels", list(pixels.shape), "UINT8")
    data.set_data_from_numpy(pixels)
    result = triton.infer("pets", [data], outputs=[tritonclient.InferRequestedOutput("logits")])
    assert np.allclose(result.as_numpy("logits"), logits.numpy(), atol=1e-4, rtol=0)
    result = triton.infer("pets", [data], outputs=[tritonclient.InferRequestedOutput("probabilities", class_count=2)])
    rows = result.as_numpy("probabilities")
    assert rows.shape == (3, 2)
    for row, want in zip(rows, expected):
        value, index, label = row[0].decode().split(":", 2)
        assert int(index) == want.argmax() and label == CLASSES[int(index)]
        assert abs(float(value) - want.max()) < 1e-5


def test_tritonclient_sees_errors_as_exceptions(triton):
    from tritonclient.utils import InferenceServerException

    wrong = tritonclient.InferInput("pixels", [1, 48, 48, 3], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 48, 48, 3), np.float32))
    with pytest.raises(InferenceServerException, match="must have datatype UINT8"):
        triton.infer("pets", [wrong])
    assert triton.is_server_ready()


def test_v2_json_form_with_base64_images(client, expected):
    encoded = [[base64.b64encode(image_bytes(k)).decode()] for k in (21, 22, 23)]
    request = {"id": "json-1", "inputs": [{"name": "image", "datatype": "BYTES", "shape": [3, 1], "data": encoded}],
               "outputs": [{"name": "probabilities"}]}
    answer = client.post("/v2/models/pets/versions/1/infer", json=request)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["id"] == "json-1" and [o["name"] for o in body["outputs"]] == ["probabilities"]
    out = body["outputs"][0]
    assert out["datatype"] == "FP32" and out["shape"] == [3, 4]
    assert np.allclose(np.array(out["data"]).reshape(3, 4), expected, atol=1e-5, rtol=0)
