"""Model names from the command line, and the label rule of single- and multi-label models."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from petclf.core.errors import UsageError
from petclf.serve.models import ServedModel, model_names


def test_model_names_from_folders_and_name_suffixes(tmp_path):
    assert model_names(["runs/pets/model", "runs/cars/model=cars"]) == {
        "model": Path("runs/pets/model"), "cars": Path("runs/cars/model")}
    odd = tmp_path / "a=b"  # an existing directory with '=' in its name is that directory
    odd.mkdir()
    with pytest.raises(UsageError, match="name it with DIR=NAME"):
        model_names([str(odd)])
    assert model_names([f"{odd}=odd"]) == {"odd": odd}
    with pytest.raises(UsageError, match="two models would be served as 'model'"):
        model_names(["a/model", "b/model"])
    with pytest.raises(UsageError, match="cannot be a model name"):
        model_names(["runs/my pets"])
    # A name that cannot be used: the example keeps the directory given, not the whole text.
    with pytest.raises(UsageError, match=r"e\.g\. run1/model=pets\.$"):
        model_names(["run1/model=café"])
    with pytest.raises(UsageError, match="pass \\['runs/pets'\\]"):
        model_names("runs/pets")


def test_multi_label_models_answer_every_label_over_its_threshold():
    stub = SimpleNamespace(classes=("sky", "tree", "road"), multi_label=True, thresholds=[0.5, 0.2, 0.9])
    model = ServedModel(name="m", directory=None, predictor=stub, max_batch=8)
    probs = np.array([[0.6, 0.3, 0.8], [0.1, 0.1, 0.95]], dtype=np.float32)
    assert [[p["label"] for p in row] for row in model.top(probs, None)] == [["sky", "tree"], ["road"]]
    assert [[p["label"] for p in row] for row in model.top(probs, 1)] == [["road"], ["road"]]
    stub.thresholds = None  # a multi-label model without its own thresholds: 0.5 each
    assert [[p["label"] for p in row] for row in model.top(probs, None)] == [["road", "sky"], ["road"]]


def test_a_model_trained_with_tta_is_served_with_the_mirror_as_its_predictor_scores(tmp_path):
    from petclf.runtime.predict import Predictor
    from petclf.serve import ServeOptions

    from .conftest import image_bytes, make_model_dir

    directory = make_model_dir(tmp_path / "tta", extra={"tta": True})
    served = ServedModel.load("tta", directory, options=ServeOptions(precision="fp32"))
    image = tmp_path / "a.png"
    image.write_bytes(image_bytes(3))
    reference = Predictor(directory, precision="fp32")
    assert reference.tta is True
    pixels = reference.pixels([image]).numpy()
    served_probs = served.probabilities(served.logits(pixels))
    expected = reference.probabilities(reference.logits([image])).numpy()
    plain = Predictor(directory, precision="fp32", tta=False)
    assert np.allclose(served_probs, expected, atol=1e-5)
    assert not np.allclose(served_probs, plain.probabilities(plain.logits([image])).numpy(), atol=1e-5)
