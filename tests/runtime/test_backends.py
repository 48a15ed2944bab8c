"""ONNX Runtime and OpenVINO behind Predictor: the same answers as torch (fp32), cached graphs, clear refusals."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from petclf.core.errors import UsageError
from petclf.data.pipeline import make_pipeline
from petclf.runtime.modeldir import write_model_dir
from petclf.runtime.network import build_network
from petclf.runtime.predict import Predictor

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

CLASSES = ("cat", "dog", "fish")


def tiny_model_dir(directory: Path, *, arch: str = "resnet18", source: str = "torchvision", size: int = 32,
                   seed: int = 0) -> Path:
    """An untrained network saved as `save_model` saves one, without fastai."""
    torch.manual_seed(seed)
    net = build_network(arch, source, len(CLASSES)).eval()
    pipeline = make_pipeline(size=size)
    meta = {"arch": {"name": arch, "source": source, "n_out": len(CLASSES), "head": "fastai-default"},
            "classes": list(CLASSES),
            "preprocessing": {"size": pipeline.size, "presize": pipeline.presize, "augment": pipeline.augment,
                              "mean": list(pipeline.mean), "std": list(pipeline.std)},
            "data": {"layout": "classes", "label_pat": None, "valid_pct": 0.2, "seed": 42},
            "precision": "fp32", "versions": {"torch": torch.__version__}, "summary": {}}
    return write_model_dir(directory, net.state_dict(), meta)


def images(n: int, *, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, size=(40 + 3 * k, 56, 3), dtype=np.uint8)) for k in range(n)]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PETCLF_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("arch,source", [("resnet18", "torchvision"), ("resnet10t", "timm")])
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_backend_scores_equal_torch_fp32(tmp_path, arch, source, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    if source == "timm":
        pytest.importorskip("timm")
    model = tiny_model_dir(tmp_path / "model", arch=arch, source=source)
    reference = Predictor(model, precision="fp32")
    other = Predictor(model, backend=backend)
    batch = images(5)
    expected, got = reference.logits(batch), other.logits(batch)
    assert other.backend == backend and other.precision == "fp32"
    assert torch.allclose(got, expected, atol=1e-4, rtol=0), (got - expected).abs().max()
    assert other.predict(batch[0], topk=2)[0][0] == reference.predict(batch[0], topk=2)[0][0]


def test_graph_is_cached_per_weights_and_redone_when_they_change(tmp_path):
    model = tiny_model_dir(tmp_path / "model")
    first = Predictor(model, backend="onnxruntime")
    graphs = list((tmp_path / "cache" / "graphs").glob("*.onnx"))
    assert len(graphs) == 1 and first.net.path == graphs[0]
    tiny_model_dir(tmp_path / "model", seed=1)  # retrained: other weights in the same directory
    second = Predictor(model, backend="onnxruntime")
    assert second.net.path != first.net.path
    assert torch.allclose(second.logits(images(2)), Predictor(model, precision="fp32").logits(images(2)), atol=1e-4)


def test_unknown_backend_and_missing_int8_graph_are_refused(tmp_path):
    model = tiny_model_dir(tmp_path / "model")
    with pytest.raises(UsageError, match="backend must be one of torch, onnxruntime, openvino"):
        Predictor(model, backend="tensorrt")
    with pytest.raises(UsageError, match=r"petclf export .* --int8"):
        Predictor(model, backend="onnxruntime", int8=True)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_streams_answer_concurrent_calls_as_one_stream(tmp_path, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    from concurrent.futures import ThreadPoolExecutor

    model = tiny_model_dir(tmp_path / "model")
    one, two = Predictor(model, backend=backend), Predictor(model, backend=backend, streams=2)
    assert (one.streams, two.streams, two.net.streams) == (1, 2, 2)
    batches = [one.pixels(images(3, seed=k)) for k in range(6)]
    expected = [one.scores(b) for b in batches]
    with ThreadPoolExecutor(3) as pool:  # more callers than streams: the third waits for a free one
        got = list(pool.map(two.scores, batches))
    for e, g in zip(expected, got):
        assert torch.allclose(g, e, atol=1e-5, rtol=0), (g - e).abs().max()


def test_streams_out_of_range_or_on_torch_are_refused(tmp_path):
    model = tiny_model_dir(tmp_path / "model")
    with pytest.raises(UsageError, match="torch backend runs one forward at a time"):
        Predictor(model, streams=2)
    with pytest.raises(UsageError, match="streams must be a whole number from 1"):
        Predictor(model, backend="onnxruntime", streams=0)
