"""--time-budget: durations, the planner, shortened epochs with a whole one-cycle schedule, and a whole job in time."""
from __future__ import annotations

import json
import time

import pytest

from petclf import quick_learner, train
from petclf.cli import main
from petclf.core.errors import UsageError
from petclf.core.options import parse_duration
from petclf.learn.budget import Deadline, plan_budget

from ..conftest import TINY, make_class_folders


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("1.5h", 5400), ("45", 45), (30, 30),
                                               (" 2M ", 120)])
def test_durations_in_seconds_minutes_and_hours(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "soon", "-5m", "0", "2w", "nan", "inf", True, 10 * 24 * 3600])
def test_impossible_durations_are_refused(bad):
    with pytest.raises(UsageError, match="time budget must be a positive duration"):
        parse_duration(bad)


def _plan(**kw):
    args = dict(budget_s=60.0, left_s=55.0, step_s=0.5, full_epoch_steps=22, valid_steps=6, eval_images=359, bs=64,
                max_epochs=None)
    return plan_budget(**{**args, **kw})


def test_plan_fills_the_time_left_with_whole_epochs_and_holds_back_the_evaluation():
    plan = _plan()
    assert plan.steps_per_epoch == 22  # whole epochs while they fit
    per_epoch = 22 * 0.5 + 6 * 0.5 * 0.35
    assert plan.epochs == int((55 - plan.reserve_s) // per_epoch)
    assert plan.planned_train_s + plan.reserve_s <= 55
    assert plan.planned_train_s + per_epoch + plan.reserve_s > 55  # one more epoch would not fit


def test_a_budget_under_one_epoch_trains_a_shortened_one():
    plan = _plan(left_s=12.0)
    assert plan.epochs == 1 and 1 <= plan.steps_per_epoch < 22


def test_more_time_than_needed_is_capped_by_epochs_and_nothing_left_still_trains_a_step():
    assert _plan(left_s=10_000.0, max_epochs=3).epochs == 3
    nothing = _plan(left_s=0.0)
    assert (nothing.epochs, nothing.steps_per_epoch) == (1, 1)
    assert nothing.planned_train_s > nothing.left_s  # the caller warns that the run will end late


def test_between_two_epoch_counts_the_budget_is_not_left_half_unused():
    # 2.6 epochs' time: whole epochs would use 2/2.6 of it; shortened ones use nearly all.
    per_epoch = 22 * 0.5 + 6 * 0.5 * 0.35
    base = _plan(left_s=100.0)
    plan = _plan(left_s=base.reserve_s + 2.6 * per_epoch)
    assert plan.epochs * plan.steps_per_epoch > 2 * 22


def test_a_shortened_epoch_trains_the_planned_steps_on_a_whole_one_cycle_schedule(pets_dir, monkeypatch):
    from fastai.callback.schedule import combined_cos

    # 1 s per step, nothing held back: a 3.5 s budget plans one epoch of 3 of the loader's 6 batches.
    monkeypatch.setattr("petclf.learn.budget.measure_step", lambda learn: 1.0)
    for name in ("WRITE_SECONDS", "SLACK", "FORWARD_SHARE"):
        monkeypatch.setattr(f"petclf.learn.budget.{name}", 0.0)
    learn = quick_learner(pets_dir, **{**TINY, "bs": 4})
    assert len(learn.dls.train) == 6
    lr = 1e-2
    result = train(learn, lr=lr, time_budget=3.5, started=time.perf_counter(), progress=False)
    plan = result.budget
    assert (plan.epochs, plan.steps_per_epoch, plan.full_epoch_steps) == (1, 3, 6)
    assert len(result.history) == 1
    # The learning rate of each of the 3 steps is one-cycle's for a 3-step run: warm-up, peak, annealing.
    schedule = combined_cos(0.25, lr / 25, lr, lr / 25 / 1e5)
    assert learn.recorder.lrs == pytest.approx([schedule(i / 3) for i in range(3)], rel=1e-4)


def test_deadline_stops_after_an_epoch_that_leaves_no_room_for_the_next(pets_dir):
    learn = quick_learner(pets_dir, **TINY)
    result = train(learn, epochs=3, lr=1e-2, progress=False, cbs=[Deadline(time.perf_counter())])
    assert len(result.history) == 1
    assert result.best_epoch == 1


def test_a_tiny_budget_ends_in_time_with_a_model_saved(tmp_path, capsys):
    data = make_class_folders(tmp_path / "data", 40)
    out = tmp_path / "run"
    start = time.perf_counter()
    code = main(["train", str(data), "--out", str(out), "--arch", "resnet18", "--size", "32", "--bs", "8",
                 "--no-pretrained", "--lr", "3e-3", "--time-budget", "20s"])
    wall = time.perf_counter() - start
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    budget = summary["budget"]
    assert budget["budget_s"] == 20 and budget["epochs"] >= 1
    assert (out / "model" / "model.safetensors").is_file() or any((out / "model").iterdir())
    assert 1 <= summary["epochs"] <= budget["epochs"]  # the plan, shortened if epochs ran slower than measured
    # Generous: the planner aims at the budget ±10%; a loaded test machine may be slower than it measured.
    assert wall < 20 * 1.5, wall
    assert "time budget 20 s" in capsys.readouterr().err


def test_bad_budget_on_the_command_line_exits_2(pets_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(pets_dir), "--out", str(tmp_path / "o"), "--time-budget", "soon"])
    assert exit_.value.code == 2
    assert "time budget must be a positive duration" in capsys.readouterr().err


@pytest.mark.parametrize(("epoch_s", "expected"), [(10.0, 20), (40.0, 7), (5.0, 20)])
def test_batches_per_epoch_follow_the_measured_pace(monkeypatch, epoch_s, expected):
    from types import SimpleNamespace

    from petclf.learn.budget import StepCap

    clock = [1000.0]
    monkeypatch.setattr("petclf.learn.budget.time.perf_counter", lambda: clock[0])
    cap = StepCap(10)
    cap.last = 10
    deadline = Deadline(1100.0, cap=cap, full_steps=20, valid_s=0.0)
    deadline.learn = SimpleNamespace(epoch=0, n_epoch=3)
    deadline.before_fit()
    deadline.before_epoch()
    clock[0] += epoch_s  # epoch 1: 10 batches; the 2 epochs left share what remains of the 100 s
    deadline.after_epoch()
    assert cap.steps == expected
    assert deadline.learn.n_epoch == 3


def test_when_not_one_batch_an_epoch_fits_the_fit_stops(monkeypatch):
    from types import SimpleNamespace

    from fastai.callback.core import CancelFitException

    from petclf.learn.budget import StepCap

    clock = [1000.0]
    monkeypatch.setattr("petclf.learn.budget.time.perf_counter", lambda: clock[0])
    cap = StepCap(10)
    cap.last = 10
    deadline = Deadline(1100.0, cap=cap, full_steps=20)
    deadline.learn = SimpleNamespace(epoch=0, n_epoch=3)
    deadline.before_fit()
    deadline.before_epoch()
    clock[0] += 95.0
    with pytest.raises(CancelFitException):
        deadline.after_epoch()
