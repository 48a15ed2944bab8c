"""`petclf serve --backend onnxruntime` as a process: the JSON route and KServe v2 (tritonclient) answer as torch."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from petclf.data.images import Presizer
from petclf.runtime.predict import Predictor

from ..web import serving_url
from .conftest import image_bytes

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
tritonclient = pytest.importorskip("tritonclient.http", reason="tritonclient is a test extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def onnx_server(model_dir, tmp_path):
    command = [sys.executable, "-m", "petclf.cli", "serve", f"{model_dir}=pets", "--port", "0", "--backend",
               "onnxruntime", "--no-access-log", "--streams", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PETCLF_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True, env=env)
    try:
        yield f"127.0.0.1:{serving_url(proc).group(1)}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_serve_onnxruntime_answers_as_torch_on_both_apis(onnx_server, model_dir):
    seeds = (31, 32, 33)
    photos = [Image.open(io.BytesIO(image_bytes(k))) for k in seeds]
    torch_logits = Predictor(model_dir, device="cpu", precision="fp32").logits(photos).numpy()
    with httpx.Client(base_url=f"http://{onnx_server}", timeout=60) as client:
        card = client.get("/metadata").json()
        assert card["models"][0]["serving"]["backend"] == "onnxruntime"
        assert card["models"][0]["serving"]["streams"] == 2
        # Requests at once: two batches compute together, each request still gets its own image's answer.
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda k: client.post("/predict", content=image_bytes(seeds[k % 3]),
                                                          headers={"Content-Type": "image/png"}).json(), range(12)))
    probs = np.exp(torch_logits) / np.exp(torch_logits).sum(axis=1, keepdims=True)
    for k, answer in enumerate(answers):
        assert abs(answer["predictions"][0][0]["probability"] - probs[k % 3].max()) < 1e-4
    pixels = np.stack([Presizer(48)(photo) for photo in photos])
    with tritonclient.InferenceServerClient(onnx_server) as triton:
        data = tritonclient.InferInput("pixels", list(pixels.shape), "UINT8")
        data.set_data_from_numpy(pixels)
        result = triton.infer("pets", [data], outputs=[tritonclient.InferRequestedOutput("logits")])
    assert np.allclose(result.as_numpy("logits"), torch_logits, atol=1e-4, rtol=0)


def test_streams_are_for_graph_backends_only(model_dir):
    from petclf.cli import main

    assert main(["serve", str(model_dir), "--streams", "2", "--port", "0"]) == 2  # torch: refused before loading
    assert main(["serve", str(model_dir), "--backend", "onnxruntime", "--streams", "0", "--port", "0"]) == 2
