from __future__ import annotations

import json
import math
from html.parser import HTMLParser

import numpy as np
import pytest

from petclf.evaluate.interpretation import Interpretation
from petclf.evaluate.report import SECTIONS, write_report

from ..conftest import make_image

CLASSES = ["cat", "dog", "fox"]
PROBS = [
    [0.70, 0.20, 0.10],  # 0 cat → cat
    [0.10, 0.80, 0.10],  # 1 dog → dog
    [0.60, 0.30, 0.10],  # 2 dog → cat
    [0.20, 0.20, 0.60],  # 3 fox → fox
    [0.50, 0.10, 0.40],  # 4 fox → cat
    [0.05, 0.90, 0.05],  # 5 cat → dog (worst)
    [0.30, 0.60, 0.10],  # 6 dog → dog
    [0.40, 0.10, 0.50],  # 7 cat → fox
    [0.55, 0.35, 0.10],  # 8 dog → cat
]
TARGETS = [0, 1, 1, 2, 2, 0, 1, 0, 1]


@pytest.fixture()
def interp(tmp_path):
    items = [str(make_image(tmp_path / f"img{i}.png", (30 * i, 80, 120), seed=i)) for i in range(len(TARGETS))]
    return Interpretation.from_arrays(PROBS, TARGETS, classes=CLASSES, items=items)


def test_confusion_matrix_rows_actual_columns_predicted(interp):
    cm = interp.confusion_matrix()
    assert cm.index.tolist() == CLASSES and cm.columns.tolist() == CLASSES
    assert cm.to_numpy().tolist() == [[1, 1, 1], [2, 2, 0], [1, 0, 1]]
    assert interp.confusion_matrix(normalize=True).loc["dog"].tolist() == [0.5, 0.5, 0.0]


def test_most_confused_largest_first(interp):
    rows = [tuple(r) for r in interp.most_confused().itertuples(index=False)]
    assert rows == [("dog", "cat", 2), ("cat", "dog", 1), ("cat", "fox", 1), ("fox", "cat", 1)]
    assert [tuple(r) for r in interp.most_confused(min_val=2).itertuples(index=False)] == [("dog", "cat", 2)]


def test_top_losses_order_and_both_probabilities(interp):
    top = interp.top_losses(5)
    assert [p.endswith(f"img{i}.png") for i, p in zip([5, 2, 8, 4, 7], top.path)] == [True] * 5
    first = top.iloc[0]
    assert (first.actual, first.predicted) == ("cat", "dog")
    assert first.prob_predicted == pytest.approx(0.90) and first.prob_actual == pytest.approx(0.05)
    assert first.loss == pytest.approx(-math.log(0.05))


def test_per_class_figures(interp):
    table = interp.per_class()
    assert table.loc["cat", "precision"] == pytest.approx(0.25)
    assert table.loc["cat", "recall"] == pytest.approx(1 / 3)
    assert table.loc["cat", "f1"] == pytest.approx(2 / 7)
    assert table.loc["dog", "f1"] == pytest.approx(4 / 7)
    assert table.loc["fox"].tolist() == pytest.approx([0.5, 0.5, 0.5, 2, 0.5])
    assert table.loc["macro avg", "precision"] == pytest.approx((0.25 + 2 / 3 + 0.5) / 3)
    assert table.loc["weighted avg", "recall"] == pytest.approx(4 / 9)
    assert table.loc["weighted avg", "support"] == 9


def test_metrics(interp):
    m = interp.metrics()
    assert m["accuracy"] == pytest.approx(4 / 9) and m["error_rate"] == pytest.approx(5 / 9)
    expected_loss = -np.mean(np.log([PROBS[i][t] for i, t in enumerate(TARGETS)]))
    assert m["log_loss"] == pytest.approx(expected_loss)
    assert "top5_accuracy" not in m  # only 3 classes


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # sklearn's own call, below
def test_metrics_equal_scikit_learns():
    """Ours are scikit-learn's, or agree with them on untied probabilities (log loss and top-5 stay ours)."""
    from sklearn import metrics as sk  # noqa: PLC0415

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), size=60)
    targets = rng.choice([0, 1, 2, 3, 5], size=60)  # classes 4 and 6 absent, and maybe predicted
    interp = Interpretation.from_arrays(probs, targets, classes=[str(i) for i in range(7)])
    m, preds, labels = interp.metrics(), probs.argmax(axis=1), np.arange(7)
    assert m["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(targets, preds))
    assert m["f1_macro"] == pytest.approx(sk.f1_score(targets, preds, average="macro", zero_division=0))
    assert m["log_loss"] == pytest.approx(sk.log_loss(targets, probs, labels=labels))
    assert m["top5_accuracy"] == pytest.approx(sk.top_k_accuracy_score(targets, probs, k=5, labels=labels))
    assert interp.confusion_matrix().to_numpy().tolist() == sk.confusion_matrix(targets, preds, labels=labels).tolist()
    table = interp.per_class()
    assert table.loc["macro avg", "f1"] == pytest.approx(
        sk.f1_score(targets, preds, labels=labels, average="macro", zero_division=0))
    assert table.loc["weighted avg", "precision"] == pytest.approx(
        sk.precision_score(targets, preds, labels=labels, average="weighted", zero_division=0))


def test_metrics_of_a_split_with_missing_classes_warn_nothing():
    """A split of one class (new data, `--split all`), or with classes predicted but absent, is no cause to warn."""
    import warnings  # noqa: PLC0415

    one_class = Interpretation.from_arrays([[0.9, 0.1], [0.8, 0.2]], [0, 0], classes=["cat", "dog"])
    mixed = Interpretation.from_arrays([[0.9, 0.1], [0.3, 0.7]], [0, 0], classes=["cat", "dog"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert one_class.metrics()["balanced_accuracy"] == 1.0 and one_class.metrics()["f1_macro"] == 1.0
        assert mixed.metrics()["balanced_accuracy"] == 0.5
        one_class.per_class(), mixed.per_class(), mixed.confusion_matrix()


def test_top5_accuracy_with_many_classes():
    probs = np.eye(7)[[1, 2, 3]] * 0.5 + 0.5 / 7
    probs[2] = [0.3, 0.25, 0.2, 0.15, 0.05, 0.03, 0.02]
    interp = Interpretation.from_arrays(probs, [1, 0, 6], classes=[str(i) for i in range(7)])
    assert interp.metrics()["top5_accuracy"] == pytest.approx(2 / 3)


def test_confusion_plot_scales_with_many_classes():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(256), size=300)
    fig = Interpretation.from_arrays(probs, rng.integers(0, 256, 300), classes=[f"c{i}" for i in range(256)]
                                     ).plot_confusion_matrix(normalize=True)
    assert fig.get_size_inches()[0] > 30


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.imgs, self.links = set(), [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.imgs.append(attrs.get("src", ""))
        if tag in ("link", "script"):
            self.links.append(attrs)


def test_report_files_and_self_contained_html(interp, tmp_path):
    test_interp = Interpretation.from_arrays(PROBS[:4], TARGETS[:4], classes=CLASSES, items=interp.items[:4],
                                             split="test")
    page = write_report(tmp_path / "r", [interp, test_interp], summary={"arch": "resnet18"})
    out = page.parent
    for name in ("confusion_matrix.png", "top_losses.png", "most_confused.csv", "per_class.csv", "metrics.json",
                 "test_confusion_matrix.png", "test_per_class.csv"):
        assert (out / name).is_file(), name
    assert set(json.loads((out / "metrics.json").read_text())) == {"valid", "test"}
    parser = _Collect()
    parser.feed(page.read_text())
    assert set(SECTIONS) <= parser.ids
    assert len(parser.imgs) == 4 and all(src.startswith("data:image/png;base64,") for src in parser.imgs)
    assert parser.links == []  # nothing fetched from elsewhere


def test_class_names_are_drawn_literally_not_as_math(tmp_path):
    from petclf.evaluate.plots import figure_png

    items = [str(make_image(tmp_path / f"i{k}.png", (20, 20, 20), seed=k)) for k in range(2)]
    odd = Interpretation.from_arrays([[0.9, 0.1], [0.3, 0.7]], [1, 1], classes=["price_$5_$", r"a\$b^"], items=items)
    assert figure_png(odd.plot_confusion_matrix())[:4] == b"\x89PNG"  # '$5_$' fails matplotlib's mathtext parser
    assert figure_png(odd.plot_top_losses(2))[:4] == b"\x89PNG"
