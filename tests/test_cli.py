from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from petclf.cli import main

from .conftest import make_image

TINY_ARGS = ["--arch", "resnet18", "--size", "32", "--bs", "8", "--no-pretrained", "--device", "cpu"]


@pytest.fixture(scope="module")
def pets_run(pets_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", str(pets_dir), "--epochs", "2", "--out", str(out), *TINY_ARGS]) == 0
    return out


def test_train_writes_every_promised_file(pets_run):
    for name in ("history.csv", "lr_find.png", "loss.png", "summary.json", "config.json",
                 "model/model.safetensors", "model/petclf.json", "report.html", "metrics.json",
                 "per_class.csv", "most_confused.csv", "confusion_matrix.png", "top_losses.png"):
        assert (pets_run / name).is_file(), name
    history = pd.read_csv(pets_run / "history.csv")
    assert len(history) == 2 and set(history.phase) == {"unfrozen"}
    summary = json.loads((pets_run / "summary.json").read_text())
    for key in ("classes", "arch", "device", "precision", "n_train", "n_valid", "error_rate", "accuracy", "seconds"):
        assert key in summary, key
    assert summary["n_train"] + summary["n_valid"] == 30
    assert summary["arch"] == "resnet18" and summary["device"] == "cpu"


def test_train_prints_plain_epoch_lines_when_not_a_terminal(pets_dir, tmp_path, capsys):
    assert main(["train", str(pets_dir), "--epochs", "1", "--lr", "1e-2", "--out", str(tmp_path), *TINY_ARGS]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/1 unfrozen" in out
    assert "\r" not in out and "\x1b" not in out
    assert not (tmp_path / "lr_find.png").exists()  # --lr given: no lr_find


def test_folder_layout_reports_test_accuracy(folders_dir, tmp_path):
    assert main(["train", str(folders_dir), "--epochs", "1", "--lr", "1e-2", "--out", str(tmp_path), *TINY_ARGS]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["layout"] == "folders" and summary["n_test"] == 12
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test"]["n"] == 12
    assert metrics["test"]["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    assert (tmp_path / "test_per_class.csv").is_file()
    # The same model evaluated later from its saved directory gives the same test figures.
    assert main(["report", str(tmp_path / "model"), str(folders_dir), "--split", "test",
                 "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["test"]["correct"] == metrics["test"]["correct"]


def test_predict_command_and_csv(pets_run, pets_dir, tmp_path, capsys):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    images = [str(pets_dir / "pug_1.jpg"), str(tmp_path / "broken.jpg")]
    code = main(["predict", str(pets_run / "model"), *images, "--topk", "2", "--csv", str(tmp_path / "p.csv")])
    assert code == 1  # one file could not be read, the other was still predicted
    captured = capsys.readouterr()
    assert "pug_1.jpg:" in captured.out and "broken.jpg" in captured.err
    table = pd.read_csv(tmp_path / "p.csv")
    assert list(table.columns) == ["path", "label_1", "prob_1", "label_2", "prob_2", "error"]
    assert len(table) == 2


def test_data_errors_exit_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "petclf.cli", "train", str(tmp_path / "missing"), *TINY_ARGS],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_out_dir_that_is_a_file_is_refused(pets_dir, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["train", str(pets_dir), "--out", str(tmp_path / "f"), *TINY_ARGS]) == 2
    assert "is a file" in capsys.readouterr().err


def test_help_does_not_load_fastai_or_torch():
    code = ("import sys\nfrom petclf.cli import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in ('fastai', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_package_names_stay_the_functions_after_their_modules_load():
    code = ("import petclf.train, petclf.interpret, petclf.run\nimport petclf\n"
            "from petclf import interpret, train\n"
            "print(callable(train) and train.__name__, callable(interpret) and interpret.__name__, "
            "petclf.train is train)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["train", "interpret", "True"]


def test_report_on_a_folder_of_other_classes_says_so(pets_run, tmp_path, capsys):
    for i in range(6):
        make_image(tmp_path / "zoo" / f"zebra_{i}.jpg", (90, 90, 90), seed=i)
    assert main(["report", str(pets_run / "model"), str(tmp_path / "zoo"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "has a class the model knows" in err and "Traceback" not in err


def test_report_with_the_pets_layout_on_class_folders_says_which_layout(pets_run, classes_dir, tmp_path, capsys):
    assert main(["report", str(pets_run / "model"), str(classes_dir), "--out", str(tmp_path / "r")]) == 2
    assert "no images directly in" in capsys.readouterr().err


def test_report_on_new_data_takes_every_image_with_split_all(pets_run, tmp_path):
    for i in range(5):
        make_image(tmp_path / "new" / f"pug_{i + 50}.jpg", (40, 60, 210), seed=500 + i)
    assert main(["report", str(pets_run / "model"), str(tmp_path / "new"), "--split", "all",
                 "--out", str(tmp_path / "r")]) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["all"]["n"] == 5  # a single class, and no images held back as "train"
    assert (tmp_path / "r" / "all_per_class.csv").is_file()
