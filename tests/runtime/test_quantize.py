"""`petclf export --int8`: calibration runs, the int8 graph serves, and the accuracy guard refuses with both figures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from petclf.cli import main
from petclf.runtime.predict import Predictor

from .test_backends import CLASSES, tiny_model_dir

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PETCLF_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture()
def folders(tmp_path) -> Path:
    """calib/ (images) and valid/<class>/ (labelled images), small and distinct."""
    rng = np.random.default_rng(0)
    for k in range(12):
        for folder in (tmp_path / "calib", tmp_path / "valid" / CLASSES[k % 3]):
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, size=(50, 60, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    return tmp_path


def test_int8_export_calibrates_checks_and_runs(tmp_path, folders, capsys):
    model = tiny_model_dir(tmp_path / "model")
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


def test_accuracy_guard_refuses_and_names_both_figures(tmp_path, folders, capsys):
    model = tiny_model_dir(tmp_path / "model")
    # A tolerance no graph can meet: int8 top-1 would have to beat fp32's by 100 points.
    code = main(["export", str(model), "--int8", "--calib", str(folders / "calib"), "--valid", str(folders / "valid"),
                 "--max-drop", "-100"])
    err = capsys.readouterr().err
    assert code == 2
    assert "int8 export refused" in err and "fp32 " in err and "int8 " in err and "--max-drop -100" in err
    assert not (model / "model.int8.onnx").exists()


def test_int8_graph_of_another_model_is_refused(tmp_path, folders, capsys):
    model = tiny_model_dir(tmp_path / "model")
    assert main(["export", str(model), "--int8", "--calib", str(folders / "calib"),
                 "--valid", str(folders / "valid")]) == 0
    tiny_model_dir(tmp_path / "model", seed=3)  # retrained since
    assert main(["predict", str(model), str(folders / "calib"), "--backend", "onnxruntime", "--int8"]) == 2
    assert "export it again" in capsys.readouterr().err


def test_int8_without_a_run_or_folders_says_what_to_pass(tmp_path, capsys):
    model = tiny_model_dir(tmp_path / "model")
    assert main(["export", str(model), "--int8"]) == 2
    assert "--calib DIR" in capsys.readouterr().err
