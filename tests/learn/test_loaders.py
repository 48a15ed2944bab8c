"""Loaders built from datasets as the data readers give them (multi-label negatives, small training sets)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from petclf.data.layouts import find_dataset
from petclf.data.pipeline import make_pipeline
from petclf.data.table import TableFormat
from petclf.learn.learner import run_settings_callback
from petclf.learn.loaders import make_dataloaders
from petclf.learn.task import class_weights, sample_weights

from ..conftest import COLOURS, make_image


@pytest.fixture()
def negatives_table(tmp_path) -> Path:
    """A multi-label table in which a third of the images carry no label (negatives), one of them in valid."""
    rows = []
    for k, (label, colour) in enumerate(COLOURS.items()):
        for i in range(6):
            make_image(tmp_path / f"{label}{i}.png", colour, seed=10 * k + i)
            rows.append((f"{label}{i}.png", "" if label == "blue" else label, i == 5))
    pd.DataFrame(rows, columns=["fname", "labels", "is_valid"]).to_csv(tmp_path / "ml.csv", index=False)
    return tmp_path / "ml.csv"


@pytest.mark.parametrize("balance", ["none", "sampler"])
def test_images_without_labels_train_as_all_zero_targets(negatives_table, balance):
    ds = find_dataset(negatives_table, table=TableFormat(label_delim=" "))
    assert ds.classes == ["green", "red"] and (ds.frame.label.map(len) == 0).sum() == 6
    dls = make_dataloaders(ds, make_pipeline(size=16, augment="none"), bs=4, device=torch.device("cpu"), cache=False,
                           balanced=balance == "sampler")
    targets = torch.cat([y for _, y in dls.valid])
    assert targets.shape == (3, 2) and (targets.sum(dim=1) == 0).sum() == 1  # blue5: a negative
    _, y = dls.one_batch()
    assert y.shape == (4, 2)
    train = ds.frame[ds.frame.split == "train"]
    weights = sample_weights(ds, train)
    assert (weights > 0).all() and weights.shape == (len(train),)
    assert class_weights(ds).tolist() == [2.0, 2.0]  # 10 negatives (incl. the unlabelled) over 5 positives each


def test_a_multi_label_run_with_images_without_labels_trains_and_reports(negatives_table, tmp_path, capsys):
    from petclf.cli import main

    from ..test_cli import TINY_ARGS

    out = tmp_path / "run"
    assert main(["train", str(negatives_table), "--label-delim", " ", "--epochs", "1", "--balance", "sampler",
                 "--out", str(out), *TINY_ARGS]) == 0
    assert "6 images of" in capsys.readouterr().err
    assert (out / "report.html").is_file() and (out / "model" / "petclf.json").is_file()


def test_a_batch_larger_than_the_training_set_is_reduced_saying_so(pets_dir, capsys):
    """The default --bs 64 on 30 images was refused; it is reduced to fit, with a line that says so."""
    from petclf import quick_learner

    from ..conftest import TINY

    learn = quick_learner(pets_dir, **{**TINY, "bs": 64})
    n_train = run_settings_callback(learn).dataset.count("train")
    assert n_train == 24 and learn.dls.train.bs == 12 and len(learn.dls.train) == 2
    assert "bs=64 is more than the 24 training images: batches of 12" in capsys.readouterr().err


@pytest.mark.parametrize(("bs", "n_train", "expected"), [(64, 30, 15), (8, 30, 8), (30, 30, 30), (64, 3, 2),
                                                          (64, 2, 2), (64, 1, 1)])
def test_fit_batch_size(bs, n_train, expected):
    from petclf.learn.loaders import fit_batch_size

    assert fit_batch_size(bs, n_train) == expected
