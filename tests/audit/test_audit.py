"""The audit on tiny generated folders: injected label flips, copies and junk are found; its files are written."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import petclf
from petclf.cli import main

from .conftest import make_pictures


@pytest.fixture(scope="module")
def audited(tmp_path_factory, model_dir):
    root = tmp_path_factory.mktemp("audit") / "data"
    truth = make_pictures(root, "classes")
    out = root.parent / "out"
    found = petclf.audit(root, model=model_dir, folds=3, out=out, precision="fp32")
    return found, truth, out


def test_flips_copies_and_junk_are_found(audited):
    found, truth, _ = audited
    flagged = {Path(p).name for p in found.label_issues.path}
    assert set(truth["flips"]) <= flagged and len(flagged) <= len(truth["flips"]) + 2
    first = found.label_issues.iloc[0]
    assert first.given == "red" and first.suggested in ("green", "blue") and first.score > 0.5
    groups = found.duplicates.groupby("group").path.apply(lambda p: sorted(Path(x).name for x in p))
    assert sorted(map(sorted, truth["copies"])) == sorted(groups.tolist())
    assert set(found.duplicates.kind) == {"exact", "near"}
    assert set(found.outliers.reason) == {"blank", "tiny"}
    assert {Path(p).name for p in found.outliers.path} == set(truth["junk"])
    assert found.class_summary.set_index("class").loc["red", "label_issues"] == 2
    assert found.settings["method"] == "model" and found.seconds["probabilities_embeddings"] > 0


def test_files(audited):
    found, _, out = audited
    rows = pd.read_csv(out / "audit.csv")
    assert list(rows.columns[:6]) == ["path", "issue", "given", "suggested", "score", "group"]
    assert set(rows.issue) == {"label", "duplicate", "outlier"}
    assert not rows.path.str.startswith("/").any()  # relative to the data folder
    record = json.loads((out / "audit.json").read_text())
    assert record["counts"]["label_issues"] == 2 and record["counts"]["duplicate_groups"] == 2
    assert record["settings"]["method"] == "model" and "embeddings" in " ".join(record["seconds"])
    assert all({"size", "mtime_ns", "digest"} <= set(item) for item in record["items"])
    html = (out / "audit.html").read_text()
    assert html.count("data:image/jpeg;base64,") == len(rows)
    assert "http://" not in html and "https://" not in html  # self-contained


def test_names_are_escaped_in_the_page(tmp_path, model_dir):
    root = tmp_path / "data"
    make_pictures(root, "classes")
    (root / "red").rename(root / "<img src=x onerror=alert(1)>")
    found = petclf.audit(root, model=model_dir, folds=3, out=tmp_path / "out", precision="fp32")
    html = (tmp_path / "out" / "audit.html").read_text()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert found.counts["label_issues"] >= 2


def test_k_trainings_from_scratch(tmp_path):
    root = tmp_path / "data"
    make_pictures(root, "classes")
    found = petclf.audit(root, pretrained=False, arch="resnet18", size=32, bs=8, epochs=1, lr=1e-3, folds=2,
                         device="cpu", image_cache=False)
    assert found.settings["method"] == "trainings" and found.settings["folds"] == 2
    assert found.probs.shape == (found.counts["images"], 3)
    assert found.seconds["probabilities_trainings"] > 0 and len(found.seconds["probabilities_per_fold"]) == 2


def test_command_line(tmp_path, model_dir, capsys):
    root = tmp_path / "data"
    make_pictures(root, "pets")
    assert main(["audit", str(root), "--model", str(model_dir), "--folds", "3", "--out", str(tmp_path / "a"),
                 "--precision", "fp32"]) == 0
    printed = capsys.readouterr().out
    assert "label issues" in printed and "petclf review" in printed
    assert (tmp_path / "a" / "audit.html").exists()


def test_refusals(tmp_path, model_dir):
    root = tmp_path / "data"
    make_pictures(root, "classes")
    with pytest.raises(petclf.UsageError, match="folds"):
        petclf.audit(root, model=model_dir, folds=1)


def test_package_is_callable():
    import petclf.audit as package

    assert petclf.audit is package and callable(package) and package.audit.__module__ == "petclf.audit.api"
