"""`petclf export --int8`: calibration runs, the int8 graph serves, and the accuracy guard refuses with both figures."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from petclf.cli import main
from petclf.runtime.predict import Predictor

from .test_backends import CLASSES, tiny_model_dir

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One model, its calibration and validation folders, and one cache (its fp32 graph exported once)."""
    root = tmp_path_factory.mktemp("int8")
    rng = np.random.default_rng(0)
    for k in range(12):
        for folder in (root / "calib", root / "valid" / CLASSES[k % 3]):
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, size=(50, 60, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PETCLF_CACHE_DIR", str(root / "cache"))
        yield tiny_model_dir(root / "model"), root


def test_int8_export_calibrates_checks_and_runs(shared, capsys):
    model, folders = shared
    code = main(["export", str(model), "--int8", "--calib", str(folders / "calib"), "--valid", str(folders / "valid")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "calibrated on 12 images" in out and "top-1 on 12 validation images: fp32" in out
    assert (model / "model.int8.onnx").is_file()
    int8 = Predictor(model, backend="onnxruntime", int8=True)
    assert int8.precision == "int8"
    photos = [Image.open(p) for p in sorted((folders / "calib").glob("*.png"))]
    fp32 = Predictor(model, precision="fp32").logits(photos)
    # Quantized, not equal: close to fp32 (an untrained network's scores are small and near each other).
    assert torch.allclose(int8.logits(photos), fp32, atol=0.25)


def test_accuracy_guard_refuses_and_names_both_figures(shared, tmp_path, capsys):
    model, folders = shared
    out = tmp_path / "refused.onnx"
    # A tolerance no graph can meet: int8 top-1 would have to beat fp32's by 100 points.
    code = main(["export", str(model), "--int8", "--onnx", str(out), "--calib", str(folders / "calib"),
                 "--valid", str(folders / "valid"), "--max-drop", "-100"])
    err = capsys.readouterr().err
    assert code == 2
    assert "int8 export refused" in err and "fp32 " in err and "int8 " in err and "--max-drop -100" in err
    assert not out.exists()


def test_int8_graph_of_another_model_is_refused(shared, tmp_path, capsys):
    folders = shared[1]
    model = tiny_model_dir(tmp_path / "model")
    assert main(["export", str(model), "--int8", "--calib", str(folders / "calib"),
                 "--valid", str(folders / "valid")]) == 0
    tiny_model_dir(tmp_path / "model", seed=3)  # retrained since
    assert main(["predict", str(model), str(folders / "calib"), "--backend", "onnxruntime", "--int8"]) == 2
    assert "export it again" in capsys.readouterr().err


def test_int8_without_a_run_or_folders_says_what_to_pass(shared, capsys):
    assert main(["export", str(shared[0]), "--int8"]) == 2
    assert "--calib DIR" in capsys.readouterr().err
