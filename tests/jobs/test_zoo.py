from __future__ import annotations

import urllib.error

import pandas as pd
import pytest
import torch
import torchvision

from petclf.data.caltech import CALTECH10_CLASSES, prepare_caltech10
from petclf.cli import main
from petclf.core.errors import DataError, WeightsUnavailableError
from petclf.jobs.zoo import classify, compare

from ..conftest import make_image


def test_compare_agrees_with_torchvision_published_figures(tmp_path):
    table = compare(["resnet18", "resnet34", "resnet50"], runs=1).set_index("arch")
    for arch in ("resnet18", "resnet34", "resnet50"):
        meta = torchvision.models.get_model_weights(arch).DEFAULT.meta
        assert table.loc[arch, "params"] == meta["num_params"]
        assert table.loc[arch, "gflops"] == pytest.approx(meta["_ops"], rel=0.01)
        assert table.loc[arch, "top1_err"] == pytest.approx(100 - meta["_metrics"]["ImageNet-1K"]["acc@1"])
        assert table.loc[arch, "cpu_ms"] > 0


def test_compare_command_writes_table_and_chart(tmp_path, capsys):
    assert main(["compare", "--archs", "resnet18,squeezenet1_0", "--runs", "1", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "compare.csv")
    assert list(table.arch) == ["resnet18", "squeezenet1_0"]
    assert (tmp_path / "compare.png").stat().st_size > 1000
    assert "squeezenet1_0" in capsys.readouterr().out


def test_classify_with_a_local_weights_file(tmp_path):
    model = torchvision.models.resnet18(weights=None)
    torch.save(model.state_dict(), tmp_path / "r18.pth")
    image = make_image(tmp_path / "x.jpg", (100, 150, 200), seed=0, size=64)
    top = classify([image], arch="resnet18", weights=tmp_path / "r18.pth", topk=5)[0]
    categories = torchvision.models.get_model_weights("resnet18").DEFAULT.meta["categories"]
    assert len(top) == 5 and all(label in categories for label, _ in top)
    assert top[0][1] >= top[-1][1]


def test_classify_offline_explains_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    image = make_image(tmp_path / "x.jpg", (100, 150, 200), seed=0, size=64)
    with pytest.raises(WeightsUnavailableError, match="weights=PATH"):
        classify([image], arch="resnet18")


def test_prepare_caltech10_counts_per_split(tmp_path):
    src = tmp_path / "caltech256" / "256_ObjectCategories"
    folders = {"bear": "009.bear", "chimp": "038.chimp", "giraffe": "084.giraffe", "gorilla": "090.gorilla",
               "llama": "134.llama-101", "ostrich": "151.ostrich", "porcupine": "164.porcupine",
               "skunk": "186.skunk", "triceratops": "228.triceratops", "zebra": "250.zebra"}
    for k, name in enumerate(folders.values()):
        for i in range(72 + k):
            (src / name).mkdir(parents=True, exist_ok=True)
            (src / name / f"{k:03d}_{i:04d}.jpg").write_bytes(b"jpeg")
    make_image(src / "001.ak47" / "001_0001.jpg", (1, 2, 3), seed=1)  # not one of the ten
    counts = prepare_caltech10(tmp_path / "caltech256", tmp_path / "c10")
    assert counts == {"train": 600, "valid": 100, "test": sum(2 + k for k in range(10))}
    assert sorted(p.name for p in (tmp_path / "c10" / "train").iterdir()) == sorted(CALTECH10_CLASSES)
    assert len(list((tmp_path / "c10" / "test" / "zebra").iterdir())) == 11
    assert not (tmp_path / "c10" / "train" / "ak47").exists()


def test_prepare_caltech10_names_missing_classes(tmp_path):
    (tmp_path / "009.bear").mkdir()
    with pytest.raises(DataError, match="missing"):
        prepare_caltech10(tmp_path, tmp_path / "out")
