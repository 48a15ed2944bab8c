"""The report's top losses beside their heat maps, and a report that still stands when they cannot be drawn."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from petclf.evaluate.heatmaps import _multi_label_rows
from petclf.evaluate.interpretation import Interpretation
from petclf.evaluate.multilabel import MultiLabelInterpretation
from petclf.evaluate.report import write_report

from ..serve.conftest import make_model_dir


def _images(tmp_path, n: int = 3) -> list[str]:
    paths = []
    for i in range(n):
        path = tmp_path / "images" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _interp(tmp_path) -> Interpretation:
    paths = _images(tmp_path)
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


def _multi_interp(tmp_path) -> MultiLabelInterpretation:
    probs = [[0.9, 0.2, 0.7],   # a and c predicted, b given: a added (the likelier of a and c), b missed
             [0.3, 0.8, 0.1],   # nothing wrong: b predicted and given (the smallest loss)
             [0.4, 0.1, 0.3]]   # nothing predicted, nothing given
    targets = [[0, 1, 0], [0, 1, 0], [0, 0, 0]]
    return MultiLabelInterpretation.from_arrays(probs, targets, classes=["a", "b", "c"], items=_images(tmp_path))


def test_multi_label_top_losses_show_the_worst_added_and_missed_label(tmp_path):
    rows = _multi_label_rows(_multi_interp(tmp_path), k=3)
    assert [[title for _, title in panels] for _, _, panels in rows] == [
        ["added a (0.90)", "missed b (0.20)"],
        ["most likely a (0.40)", "no label given"],
        ["predicted b (0.80)", "given b (0.80)"],
    ]
    assert rows[0][1] > rows[1][1] > rows[2][1]  # largest loss first, as the top-loss table
    assert rows[1][2][1][0] is None  # no map where there is no label


def test_multi_label_top_losses_are_drawn_beside_their_heat_maps(tmp_path):
    model = make_model_dir(tmp_path / "model", classes=("a", "b", "c"),
                           extra={"task": "multi_label", "thresholds": [0.5] * 3})
    page = write_report(tmp_path / "r", [_multi_interp(tmp_path)], heatmaps=model, top_k=3)
    assert Image.open(tmp_path / "r" / "top_losses_heatmaps.png").size == (660, 690)  # 3 rows of 3 panels
    html = page.read_text()
    assert html.index('alt="valid top losses"') < html.index('alt="valid top losses beside their heat maps"')
