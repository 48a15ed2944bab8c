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
    assert main(["train", str(pets_dir), "--epochs", "2", "--out", str(out), "--lr-find", *TINY_ARGS]) == 0
    return out


def test_train_writes_every_promised_file(pets_run):
    for name in ("history.csv", "lr_find.png", "loss.png", "summary.json", "config.json",
                 "model/model.safetensors", "model/petclf.json", "report.html", "metrics.json",
                 "per_class.csv", "most_confused.csv", "confusion_matrix.png", "top_losses.png",
                 "top_losses_heatmaps.png"):
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
    assert not (tmp_path / "lr_find.png").exists()  # no --lr-find: no lr_find


def test_without_lr_the_default_rate_trains_and_lr_find_runs_only_when_asked(pets_dir, tmp_path, capsys):
    from petclf.core.defaults import DEFAULT_LR

    assert main(["train", str(pets_dir), "--epochs", "1", "--out", str(tmp_path / "a"), *TINY_ARGS]) == 0
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["lr"] == DEFAULT_LR
    assert not (tmp_path / "a" / "lr_find.png").exists()
    assert main(["train", str(pets_dir), "--lr", "1e-3", "--lr-find", "--out", str(tmp_path / "b"), *TINY_ARGS]) == 2
    assert "keep one of them" in capsys.readouterr().err


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
    # a model trained by petclf has an "unknown" detector: its score and flag come before the error column
    assert list(table.columns) == ["path", "label_1", "prob_1", "label_2", "prob_2", "ood_score", "unknown", "error"]
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
    code = ("import petclf.learn.recipe, petclf.learn.judge, petclf.evaluate.interpretation, petclf.jobs.run\n"
            "import petclf\nfrom petclf import interpret, train\n"
            "from petclf.learn import interpret as learn_interpret\n"
            "print(callable(train) and train.__name__, callable(interpret) and interpret.__name__, "
            "petclf.train is train, learn_interpret is interpret)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["train", "interpret", "True", "True"]


def test_report_on_a_saved_model_loads_no_fastai(pets_run, pets_dir, tmp_path):
    """Judging a saved model needs torch and the model directory only: fastai (seconds to import) stays out."""
    args = ["report", str(pets_run / "model"), str(pets_dir), "--out", str(tmp_path / "r")]
    code = ("import sys\nfrom petclf.cli import main\n"
            f"code = main({args!r})\n"
            "print(code, sorted(m for m in sys.modules if m.split('.')[0] in ('fastai', 'fastcore')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "0 []"
    assert (tmp_path / "r" / "report.html").is_file()
    # The top losses beside their heat maps (on by default), drawn without fastai too.
    assert (tmp_path / "r" / "top_losses_heatmaps.png").is_file()
    assert 'alt="valid top losses beside their heat maps"' in (tmp_path / "r" / "report.html").read_text()


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
                 "--out", str(tmp_path / "r"), "--no-heatmaps"]) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["all"]["n"] == 5  # a single class, and no images held back as "train"
    assert (tmp_path / "r" / "all_per_class.csv").is_file()
    assert not (tmp_path / "r" / "all_top_losses_heatmaps.png").exists()  # --no-heatmaps


# --- Names a stranger chose: they must not break figures, terminals or spreadsheets. ---

def _hostile_folder(root):
    """Class folders whose names break matplotlib's mathtext and spreadsheets; file names with a terminal
    escape, a newline, and bytes that are not UTF-8."""
    for k, (label, colour) in enumerate({"price_$5_$": (200, 40, 40), '=HYPERLINK("evil")': (40, 190, 60)}.items()):
        for i in range(6):
            make_image(root / label / f"img{i}.png", colour, seed=10 * k + i)
    make_image(root / "price_$5_$" / "evil\x1b[2J\nvalidation error rate 0.0000.png", (200, 40, 40), seed=99)
    import os
    from PIL import Image
    Image.new("RGB", (40, 40), (200, 40, 40)).save(os.fsencode(root / "price_$5_$") + b"/bad\xff.png", format="PNG")
    return root


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    root = _hostile_folder(tmp_path_factory.mktemp("hostile"))
    out = tmp_path_factory.mktemp("hostile_run")
    assert main(["train", str(root), "--epochs", "1", "--lr", "1e-2", "--out", str(out), *TINY_ARGS]) == 0
    return root, out


def test_class_names_with_dollars_and_formulas_train_and_report(hostile_run):
    _, out = hostile_run
    assert (out / "report.html").is_file() and (out / "confusion_matrix.png").is_file()
    per_class = pd.read_csv(out / "per_class.csv", index_col=0)
    assert "'=HYPERLINK(\"evil\")" in per_class.index  # defused for spreadsheets
    assert not any(str(i).startswith(("=", "+", "-", "@")) for i in per_class.index)


def test_a_file_name_that_is_not_utf8_is_skipped_with_a_reason(hostile_run):
    _, out = hostile_run
    skipped = pd.read_csv(out / "skipped.csv")
    row = skipped[skipped.path.str.contains("bad", regex=False)]
    assert len(row) == 1 and "not valid UTF-8" in row.reason.iloc[0] and "\\xff" in row.path.iloc[0]


def test_names_with_escapes_are_printed_escaped(hostile_run, tmp_path, capsys):
    root, out = hostile_run
    assert main(["check", str(root)]) == 0
    printed = capsys.readouterr()
    assert "\x1b" not in printed.out + printed.err
    assert "\\xff" in printed.out
    code = main(["predict", str(out / "model"), str(root / "price_$5_$"), "--csv", str(tmp_path / "p.csv")])
    assert code == 0
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    assert "\x1b" not in printed.out and not any(line.startswith("validation error rate") for line in lines)
    assert any("evil\\x1b[2J\\nvalidation" in line for line in lines)
    preds = pd.read_csv(tmp_path / "p.csv")
    assert not preds.label_1.str.startswith("=").any()
    assert preds.label_1.isin(["price_$5_$", "'=HYPERLINK(\"evil\")"]).all()


# --- Values and destinations are checked before any work. ---

@pytest.mark.parametrize("bad, message", [
    (["--lr", "inf"], "lr must be a positive number"),
    (["--lr", "1e30"], "lr must be a positive number"),
    (["--lr", "nan"], "lr must be a positive number"),
    (["--seed", "-1"], "seed must be"),
    (["--size", "100000"], "size must be from 8 to 2048"),
    (["--valid-pct", "nan"], "valid_pct must be in"),
])
def test_impossible_training_values_are_refused(pets_dir, tmp_path, capsys, bad, message):
    assert main(["train", str(pets_dir), "--out", str(tmp_path / "o"), *TINY_ARGS, *bad]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_check_refuses_a_negative_seed(pets_dir, capsys):
    assert main(["check", str(pets_dir), "--seed", "-1"]) == 2
    assert "seed must be" in capsys.readouterr().err


def test_out_dir_that_cannot_be_made_is_refused_before_training(pets_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["train", str(pets_dir), "--out", str(tmp_path / "file" / "run"), *TINY_ARGS]) == 2
    err = capsys.readouterr().err
    assert "cannot be written" in err and "Traceback" not in err


def test_predict_checks_topk_and_csv_before_predicting(pets_run, pets_dir, tmp_path, capsys):
    image = str(pets_dir / "pug_1.jpg")
    assert main(["predict", str(pets_run / "model"), image, "--topk", "0"]) == 2
    assert "topk must be a positive integer" in capsys.readouterr().err
    assert main(["predict", str(pets_run / "model"), image, "--csv", str(tmp_path)]) == 2
    printed = capsys.readouterr()
    assert "is a folder" in printed.err and printed.out == ""  # nothing predicted before the refusal
    (tmp_path / "f").write_text("x")
    assert main(["predict", str(pets_run / "model"), image, "--csv", str(tmp_path / "f" / "p.csv")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["predict", str(pets_run / "model"), image, "--csv", str(tmp_path / "new" / "p.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "new" / "p.csv")) == 1  # a missing folder is created


def test_report_out_onto_a_file_is_refused(pets_run, pets_dir, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["report", str(pets_run / "model"), str(pets_dir), "--out", str(tmp_path / "f")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_compare_refuses_zero_runs(capsys, tmp_path):
    assert main(["compare", "--archs", "resnet18", "--runs", "0", "--out", str(tmp_path)]) == 2
    assert "runs must be a positive integer" in capsys.readouterr().err


def test_report_of_a_class_folder_model_on_a_flat_folder_says_which_layout(classes_dir, pets_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(classes_dir), "--epochs", "1", "--lr", "1e-2", "--out", str(out), *TINY_ARGS]) == 0
    capsys.readouterr()
    assert main(["report", str(out / "model"), str(pets_dir), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "classes layout" in err and "Traceback" not in err and "AttributeError" not in err
    # --layout says how to read the folder instead.
    assert main(["report", str(out / "model"), str(pets_dir), "--layout", "pets", "--out", str(tmp_path / "r")]) == 2
    assert "has a class the model knows" in capsys.readouterr().err


def test_a_label_pattern_stored_in_a_model_runs_under_a_time_limit(pets_run, tmp_path, monkeypatch, capsys):
    import shutil
    import time

    import petclf.data.label_pattern

    model = tmp_path / "model"
    shutil.copytree(pets_run / "model", model)
    meta = json.loads((model / "petclf.json").read_text())
    meta["data"]["label_pat"] = r"^(\w+)+_\d+\.jpg$"  # backtracks exponentially on a name that does not match
    (model / "petclf.json").write_text(json.dumps(meta))
    make_image(tmp_path / "data" / ("a" * 32 + "_1.png"), (200, 40, 40), seed=1)
    make_image(tmp_path / "data" / "pug_1.jpg", (40, 60, 210), seed=2)
    monkeypatch.setattr(petclf.data.label_pattern, "UNTRUSTED_PATTERN_TIMEOUT_S", 2.0)
    start = time.perf_counter()
    assert main(["report", str(model), str(tmp_path / "data"), "--split", "all", "--out", str(tmp_path / "r")]) == 2
    assert time.perf_counter() - start < 30
    assert "--label-pat" in capsys.readouterr().err
    # The command line's own pattern wins and is trusted.
    assert main(["report", str(model), str(tmp_path / "data"), "--split", "all", "--label-pat", r"^(.+)_\d+\.",
                 "--out", str(tmp_path / "r")]) == 0


def test_predict_skips_fifos_and_images_over_the_scans_pixel_limit(pets_run, tmp_path, monkeypatch, capsys):
    import os

    from PIL import Image

    os.mkfifo(tmp_path / "pipe.jpg")  # opening it would block for ever
    # Over the limit, under twice the limit (where PIL itself refuses): the scan refuses these too.
    big = make_image(tmp_path / "big.png", (10, 10, 10), seed=1, size=150)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # instead of writing a 90-megapixel file
    assert main(["predict", str(pets_run / "model"), str(tmp_path / "pipe.jpg"), str(big)]) == 1
    err = capsys.readouterr().err
    assert "not a regular file" in err and "too large to decode safely" in err


def test_train_and_check_declare_the_data_options_alike():
    """--layout/--label-pat/--valid-pct/--seed/--strict: one declaration, TrainOptions' defaults and help."""
    from petclf.cli import build_parser
    from petclf.core.options import TrainOptions

    actions = {}
    for name, sub in build_parser()._subparsers._group_actions[0].choices.items():
        if name in ("train", "check", "audit"):
            actions[name] = {a.dest: (a.default, a.help, a.choices) for a in sub._actions
                             if a.dest in ("layout", "label_pat", "valid_pct", "seed", "strict")}
    assert actions["train"] == actions["check"] == actions["audit"] and len(actions["train"]) == 5
    d = TrainOptions()
    assert {k: v[0] for k, v in actions["train"].items()} == {"layout": d.layout, "label_pat": d.label_pat,
                                                               "valid_pct": d.valid_pct, "seed": d.seed,
                                                               "strict": d.strict}
    assert all(v[1] for v in actions["train"].values())  # each has its help
