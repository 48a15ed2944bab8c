"""The report's top losses beside their heat maps, and a report that still stands when they cannot be drawn."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from petclf.evaluate.interpretation import Interpretation
from petclf.evaluate.report import write_report

from ..serve.conftest import make_model_dir


def _interp(tmp_path) -> Interpretation:
    paths = []
    for i in range(3):
        path = tmp_path / "images" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return Interpretation.from_arrays(np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]]), [1, 0, 0], classes=["a", "b"],
                                      items=paths)


def test_top_losses_are_drawn_beside_their_heat_maps(tmp_path):
    model = make_model_dir(tmp_path / "model", classes=("a", "b"))
    page = write_report(tmp_path / "r", [_interp(tmp_path)], heatmaps=model, top_k=2)
    figure = Image.open(tmp_path / "r" / "top_losses_heatmaps.png")
    assert figure.size == (660, 460)  # a row per top loss (2): image, predicted class's map, actual class's map
    html = page.read_text()
    assert html.index('alt="valid top losses"') < html.index('alt="valid top losses beside their heat maps"')


def test_without_a_rebuildable_network_the_report_has_no_heat_maps_and_says_why(tmp_path, capsys):
    model = make_model_dir(tmp_path / "model", classes=("a", "b"))
    meta = json.loads((model / "petclf.json").read_text())
    meta["arch"]["source"] = "custom"  # trained with the user's own module: this process cannot rebuild it
    (model / "petclf.json").write_text(json.dumps(meta))
    page = write_report(tmp_path / "r", [_interp(tmp_path)], heatmaps=model, top_k=2)
    assert page.is_file() and not (tmp_path / "r" / "top_losses_heatmaps.png").exists()
    assert "no heat maps in the report" in capsys.readouterr().err
