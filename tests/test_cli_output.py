"""What the command line prints and refuses (issue #21 item 15): readable tables, summarised lists, clear refusals.

None of these tests trains: each stops at a refusal, at argument parsing, or after `petclf check`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import pytest

from petclf.cli import build_parser, main

from .conftest import COLOURS, make_image


def test_check_prints_the_class_table_one_row_per_line(classes_dir, capsys):
    assert main(["check", str(classes_dir)]) == 0
    out = capsys.readouterr().out
    assert "\\n" not in out
    rows = [line.split() for line in out.splitlines()]
    assert ["train", "valid"] in rows and ["class"] in rows
    assert {row[0] for row in rows if len(row) == 3 and row[1:] == ["5", "1"]} == set(COLOURS)


@pytest.fixture()
def dirty_table(tmp_path) -> Path:
    """12 usable rows, 50 rows of missing files and 30 without a label."""
    rows = []
    for k, (label, colour) in enumerate(COLOURS.items()):
        for i in range(4):
            make_image(tmp_path / f"{label}{i}.jpg", colour, seed=10 * k + i)
            rows.append((f"{label}{i}.jpg", "blue" if label == "red" and i else label))  # red: 1 image, skewed
    rows += [(f"gone{i}.jpg", "red") for i in range(50)] + [(f"{label}{i}.jpg", "") for i in range(30)
                                                           for label in ["nolabel"]]
    for i in range(30):
        make_image(tmp_path / f"nolabel{i}.jpg", (90, 90, 90), seed=500 + i)
    pd.DataFrame(rows, columns=["fname", "label"]).to_csv(tmp_path / "t.csv", index=False)
    return tmp_path / "t.csv"


def test_check_summarises_a_long_list_of_skipped_rows_and_writes_the_whole_list(dirty_table, tmp_path, capsys):
    out_dir = tmp_path / "checked"
    assert main(["check", str(dirty_table), "--out", str(out_dir)]) == 0
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    assert sum(line.startswith("skipped  ") for line in lines) == 20
    assert any("60 more skipped" in line for line in lines)
    assert any("missing file: 50" in line for line in lines) and any("empty label: 30" in line for line in lines)
    full = pd.read_csv(out_dir / "skipped.csv")
    assert len(full) == 80 and set(full.columns) == {"path", "reason"}
    assert any(str(out_dir / "skipped.csv") in line for line in lines)
    # Each warning once, whether on stdout (the report) or stderr (the log).
    both = printed.out + printed.err
    assert both.count("skewed classes") == 1 and both.count("fewer than 2 training images") == 1
    assert both.count("scanned 12 images") == 1


def test_check_with_few_skipped_rows_lists_them_all_and_writes_nothing(kaggle_like, tmp_path, capsys):
    assert main(["check", str(kaggle_like), "--out", str(tmp_path / "checked")]) == 0
    out = capsys.readouterr().out
    assert sum(line.startswith("skipped  ") for line in out.splitlines()) == 2
    assert not (tmp_path / "checked").exists()


@pytest.fixture()
def kaggle_like(tmp_path) -> Path:
    rows = []
    for k, (label, colour) in enumerate(COLOURS.items()):
        for i in range(4):
            make_image(tmp_path / f"{label}{i}.jpg", colour, seed=10 * k + i)
            rows.append((f"{label}{i}.jpg", label))
    rows += [("gone.jpg", "red"), ("red0.jpg", "red")]
    pd.DataFrame(rows, columns=["fname", "label"]).to_csv(tmp_path / "t.csv", index=False)
    return tmp_path / "t.csv"


@pytest.mark.parametrize("value", ["-5m", "-90", "-1.5h", "0"])
def test_a_negative_time_budget_is_called_that(value, pets_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", str(pets_dir), "--out", str(tmp_path / "o"), "--time-budget", value])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "expected one argument" not in err
    assert ("is negative" if value.startswith("-") else "is zero") in err and "--time-budget" in err


def test_a_negative_number_after_any_option_is_its_value(capsys):
    args = build_parser().parse_args(["train", "x", "--time-budget=90s"])
    assert args.time_budget == 90.0
    from petclf.cli import _negative_values_attached  # noqa: PLC0415

    argv = ["train", "x", "--lr", "-1e-3", "--time-budget", "-5m", "--tta", "--out", "-dir"]
    assert _negative_values_attached(build_parser(), argv) == ["train", "x", "--lr=-1e-3", "--time-budget=-5m",
                                                               "--tta", "--out", "-dir"]


def test_threshold_for_single_label_training_is_refused_before_any_work(pets_dir, tmp_path, capsys):
    assert main(["train", str(pets_dir), "--out", str(tmp_path / "o"), "--threshold", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "--threshold" in err and "multi-label" in err and "--label-delim" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return sub.choices[name]


def test_audit_help_lists_only_options_the_audit_uses():
    text = _subparser("audit").format_help()
    assert "--tta" not in text and "--threshold" not in text
    assert "--arch" in text and "--label-delim" in text
    train = _subparser("train").format_help()
    assert "--tta" in train and "--threshold" in train


def test_check_refuses_an_out_that_is_a_file_before_scanning(kaggle_like, tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    assert main(["check", str(kaggle_like), "--out", str(tmp_path / "taken")]) == 2
    printed = capsys.readouterr()
    assert "is a file" in printed.err and "scanned" not in printed.out + printed.err
