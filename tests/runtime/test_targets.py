"""Export targets: OpenVINO IR and TFLite answer as PyTorch does; the Core ML package has the promised spec."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from petclf import Predictor
from petclf.cli import main
from petclf.core.errors import UsageError
from petclf.runtime.export import onnx_input
from petclf.runtime.targets import FORMATS, export_model

from ..conftest import make_image
from ..serve.conftest import CLASSES, make_model_dir

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("targets") / "model", seed=3)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    sizes = [40, 64, 130, 200, 45]  # under and over twice the presize (48): whole and reduced-scale JPEG decodes
    return [make_image(root / f"p{k}.jpg", (40 * k, 200 - 30 * k, 90), seed=k, size=s) for k, s in enumerate(sizes)]


@pytest.fixture(scope="module")
def reference(model_dir, photos):
    predictor = Predictor(model_dir, device="cpu", precision="fp32")
    pixels = np.concatenate([onnx_input(f, predictor.pipeline) for f in photos])
    return pixels, predictor.logits(photos).numpy()


def test_openvino_ir_matches_pytorch_with_a_dynamic_batch(model_dir, reference, tmp_path):
    ov = pytest.importorskip("openvino", reason="OpenVINO extra not installed (pip install 'petclf[openvino]')")
    pytest.importorskip("onnxscript", reason="the ONNX exporter is not installed (pip install 'petclf[openvino]')")
    path = export_model(model_dir, tmp_path / "pets.xml", format="openvino")
    assert path == tmp_path / "pets.xml" and (tmp_path / "pets.bin").is_file()
    # fp32 as exported: on CPUs with bf16 units OpenVINO otherwise computes in bf16 (about 1e-1 off here).
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    pixels, logits = reference
    ours = compiled({"pixels": pixels})[compiled.output("logits")]
    assert np.abs(ours - logits).max() < 1e-4
    one = compiled({"pixels": pixels[:1]})[compiled.output("logits")]  # the batch dimension is dynamic
    assert np.abs(one - logits[:1]).max() < 1e-4
    model = ov.Core().read_model(str(path))
    assert json.loads(model.get_rt_info(["petclf", "classes"]).astype(str)) == list(CLASSES)


def test_tflite_matches_pytorch(model_dir, reference, tmp_path):
    pytest.importorskip("litert_torch", reason="litert-torch not installed: it downgrades pydantic, so it lives in "
                                               "its own environment (pip install 'petclf[tflite]' there)")
    from ai_edge_litert.interpreter import Interpreter

    path = export_model(model_dir, tmp_path / "pets.tflite", format="tflite")
    runner = Interpreter(model_path=str(path)).get_signature_runner()
    pixels, logits = reference
    ours = np.concatenate([runner(pixels=pixels[i:i + 1])["logits"] for i in range(len(pixels))])  # batch of one
    assert np.abs(ours - logits).max() < 1e-4
    facts = json.loads((tmp_path / "pets.tflite.json").read_text())
    assert facts["classes"] == json.dumps(list(CLASSES)) and json.loads(facts["outputs"]) == ["logits", "probabilities"]


@pytest.mark.parametrize("task", ["single_label", "multi_label"])
def test_coreml_package_has_an_image_input_named_outputs_and_the_classes(tmp_path, task):
    ct = pytest.importorskip("coremltools", reason="Core ML extra not installed (pip install 'petclf[coreml]')")
    extra = {"task": "multi_label", "thresholds": [0.5] * len(CLASSES)} if task == "multi_label" else None
    model_dir = make_model_dir(tmp_path / "model", extra=extra)
    path = export_model(model_dir, tmp_path / "Pets", format="coreml")  # predicting needs macOS: the spec only
    assert path == tmp_path / "Pets.mlpackage" and path.is_dir()
    spec = ct.utils.load_spec(str(path))
    (image,) = spec.description.input
    assert image.name == "image" and image.type.WhichOneof("Type") == "imageType"
    assert (image.type.imageType.width, image.type.imageType.height) == (48, 48)  # the presize of size 32
    assert image.type.imageType.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    names = [o.name for o in spec.description.output]
    # single-label: the raw scores and the calibrated probabilities (a model without an "unknown" detector)
    assert names == (["probabilities"] if task == "multi_label" else ["logits", "probabilities"])
    assert list(spec.description.output[0].type.multiArrayType.shape) == [1, len(CLASSES)]
    meta = spec.description.metadata.userDefined
    assert json.loads(meta["petclf.classes"]) == list(CLASSES) and meta["petclf.task"] == task
    assert spec.WhichOneof("Type") == "mlProgram"


def test_cli_export_format_writes_the_file(model_dir, tmp_path, capsys):
    pytest.importorskip("openvino", reason="OpenVINO extra not installed (pip install 'petclf[openvino]')")
    pytest.importorskip("onnxscript", reason="the ONNX exporter is not installed")
    assert main(["export", str(model_dir), "--format", "openvino", "--out", str(tmp_path / "m.xml")]) == 0
    assert (tmp_path / "m.xml").is_file() and (tmp_path / "m.bin").is_file()
    assert "openvino: " in capsys.readouterr().out
    assert main(["export", str(model_dir), "--onnx", str(tmp_path / "m.onnx")]) == 0  # the older spelling still works
    assert (tmp_path / "m.onnx").is_file() and "onnx: " in capsys.readouterr().out


def test_cli_export_explains_unknown_formats_and_missing_arguments(model_dir, tmp_path, capsys):
    assert main(["export", str(model_dir), "--format", "tensorrt", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "unknown export format 'tensorrt'" in err and all(f in err for f in FORMATS)
    assert main(["export", str(model_dir), "--format", "openvino"]) == 2
    assert "--out PATH" in capsys.readouterr().err
    assert main(["export", str(model_dir), "--onnx", "a.onnx", "--format", "onnx", "--out", "b.onnx"]) == 2
    assert not (tmp_path / "m").exists()


def test_a_missing_converter_names_its_extra(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "coremltools", None)  # import fails as if not installed
    assert main(["export", str(model_dir), "--format", "coreml", "--out", str(tmp_path / "m.mlpackage")]) == 2
    assert "pip install 'petclf[coreml]'" in capsys.readouterr().err
    with pytest.raises(UsageError, match=r"petclf\[coreml\]"):
        export_model(model_dir, tmp_path / "m.mlpackage", format="coreml")
