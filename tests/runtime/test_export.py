from __future__ import annotations

import csv
import json
import pickle

import numpy as np
import pytest

from petclf import Predictor, load_model, quick_learner, save_model, train
from petclf.cli import main
from petclf.core.errors import UsageError
from petclf.runtime.export import export_onnx, onnx_input
from petclf.runtime.pickled import PickledPredictor, load_pickled_learner

from ..conftest import TINY


@pytest.fixture(scope="module")
def model_dir(pets_dir, tmp_path_factory):
    learn = quick_learner(pets_dir, precision="fp32", **TINY)
    train(learn, epochs=1, lr=1e-2, progress=False)
    return save_model(learn, tmp_path_factory.mktemp("exp") / "model")


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_onnx_matches_pytorch_on_real_images(model_dir, pets_dir, tmp_path, dtype):
    ort = pytest.importorskip("onnxruntime", reason="ONNX extras not installed (pip install petclf[onnx])")
    path = export_onnx(model_dir, tmp_path / "m.onnx", dtype=dtype)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    files = sorted(pets_dir.glob("*.jpg"))[::3]
    predictor = Predictor(model_dir, device="cpu", precision="fp32")
    pixels = np.concatenate([onnx_input(f, predictor.pipeline, dtype=dtype) for f in files])
    (ours,) = session.run(["logits"], {"pixels": pixels})  # one call, batch of 10: the batch dimension is dynamic
    reference = predictor.logits(files).numpy()
    assert np.abs(ours - reference).max() < 1e-3
    assert (ours.argmax(1) == reference.argmax(1)).all()
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["petclf.classes"]) == list(predictor.classes)


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture()
def evil_pickle(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "export.pkl"
    path.write_bytes(pickle.dumps(_Marker(str(marker))))
    return path, marker


def test_pickle_is_refused_without_consent_and_runs_nothing(evil_pickle, capsys):
    path, marker = evil_pickle
    with pytest.raises(UsageError, match="trust"):
        load_pickled_learner(path)
    with pytest.raises(UsageError, match="trust"):
        load_model(path)
    with pytest.raises(UsageError, match="trust"):
        Predictor(path)
    assert main(["predict", str(path), str(path)]) == 2
    assert "trust" in capsys.readouterr().err
    with pytest.raises(UsageError, match="trust"):
        PickledPredictor(path)  # the public class asks for consent too
    # fastai's Learner.predict has no "unknown" or graph backends: refused before anything is unpickled
    assert main(["predict", str(path), str(path), "--trust-pickle", "--reject-unknown", "--backend", "openvino"]) == 2
    assert "no --reject-unknown, --backend" in capsys.readouterr().err
    assert not marker.exists()


def test_fastai_export_round_trip_with_consent(pets_dir, tmp_path):
    from petclf.runtime.pickled import export_fastai

    learn = quick_learner(pets_dir, precision="fp32", **TINY)
    path = export_fastai(learn, tmp_path / "export.pkl")
    loaded = load_pickled_learner(path, trust=True)
    assert list(loaded.dls.vocab) == list(learn.dls.vocab)
    assert not any(type(cb).__module__.startswith("petclf") for cb in loaded.cbs)
    assert any(type(cb).__module__.startswith("petclf") for cb in learn.cbs)  # put back after export
    # `petclf predict --trust-pickle` answers with fastai's own Learner.predict of the file.
    images = sorted(pets_dir.glob("*.jpg"))[:2]
    out = tmp_path / "p.csv"
    assert main(["predict", str(path), *map(str, images), "--trust-pickle", "--topk", "1", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    for row, image in zip(rows, images):
        probs = loaded.predict(image)[2]
        assert row["label_1"] == loaded.dls.vocab[int(probs.argmax())]
        assert float(row["prob_1"]) == pytest.approx(float(probs.max()), abs=1e-5)
