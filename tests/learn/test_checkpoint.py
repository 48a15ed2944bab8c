from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from petclf.learn.checkpoint import BEST_FILE, CHECKPOINT_FILE, load_checkpoint, save_atomic
from petclf.learn.learner import run_settings_callback
from petclf.cli import main

TINY_ARGS = ["--arch", "resnet18", "--size", "32", "--bs", "8", "--no-pretrained", "--device", "cpu", "--lr", "1e-2"]


def test_a_crash_during_a_write_keeps_the_last_good_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_atomic({"epoch": 1}, path)

    def dies_halfway(obj, f):
        f.write(b"\x80\x02half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # the half-written file is gone


def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_checkpoint_that_cannot_be_written_warns_and_training_goes_on(pets_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("petclf.learn.checkpoint.save_atomic", _disk_full)
    assert main(["train", str(pets_dir), "--out", str(tmp_path), "--epochs", "2", *TINY_ARGS]) == 0
    err = capsys.readouterr().err
    assert "could not write the checkpoint after epoch 1" in err and "No space left on device" in err
    assert "resume from the start" in err
    assert len(pd.read_csv(tmp_path / "history.csv")) == 2 and (tmp_path / "model" / "model.safetensors").is_file()


def test_results_that_cannot_be_written_are_kept_for_a_rerun(pets_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("petclf.jobs.run.save_model", _disk_full)
    args = ["train", str(pets_dir), "--out", str(tmp_path), "--epochs", "2", *TINY_ARGS]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "results could not be written" in err and "without training again" in err and "Traceback" not in err
    assert load_checkpoint(tmp_path / "checkpoints").epochs_done == 2
    monkeypatch.undo()
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "resuming after epoch 2" in err and "epoch 1/2" not in out and "epoch 2/2" not in out
    assert (tmp_path / "model" / "model.safetensors").is_file() and not (tmp_path / "checkpoints").exists()
    assert len(pd.read_csv(tmp_path / "history.csv")) == 2


def test_sigkill_mid_training_then_resume_to_the_end(pets_dir, tmp_path):
    out = tmp_path / "run"
    epochs = 12
    cmd = [sys.executable, "-m", "petclf.cli", "train", str(pets_dir), "--out", str(out), "--epochs", str(epochs),
           *TINY_ARGS]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    checkpoint = out / "checkpoints" / CHECKPOINT_FILE
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(out / "checkpoints")
    assert state is not None and 1 <= state.epochs_done < epochs
    assert not (out / "summary.json").exists()

    assert main(["train", str(pets_dir), "--out", str(out), "--epochs", str(epochs), "--resume", *TINY_ARGS]) == 0
    history = pd.read_csv(out / "history.csv")
    assert list(history.epoch) == list(range(1, epochs + 1))
    assert (out / "summary.json").is_file() and (out / "model" / "model.safetensors").is_file()
    assert not (out / "checkpoints").exists()  # removed once the run is complete


def test_resume_refuses_other_settings(pets_dir, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    save_atomic({"epochs_done": 1, "lr": 0.01, "rows": [], "batch_losses": [], "model": {}, "opt": {},
                 "best_epoch": 1, "best_key": None, "rng": {}}, out / "checkpoints" / CHECKPOINT_FILE)
    (out / "config.json").write_text('{"arch": "resnet34"}')
    assert main(["train", str(pets_dir), "--out", str(out), *TINY_ARGS]) == 2
    assert "other settings" in capsys.readouterr().err


def test_resume_without_checkpoint_is_a_usage_error(pets_dir, tmp_path, capsys):
    assert main(["train", str(pets_dir), "--out", str(tmp_path), "--resume", *TINY_ARGS]) == 2
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("bad, message", [
    (["--epochs", "-1"], "epochs must be 0 or more"),
    (["--size", "0"], "size must be a positive integer"),
    (["--bs", "-3"], "bs must be a positive integer"),  # a bs over the training set is reduced (test_loaders)
    (["--arch", "resnet43"], "Did you mean"),
])
def test_bad_arguments_are_refused_before_work(pets_dir, tmp_path, capsys, bad, message):
    args = ["train", str(pets_dir), "--out", str(tmp_path / "o"), *TINY_ARGS, *bad]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o" / "history.csv").exists()


def test_ctrl_c_says_how_to_go_on(pets_dir, tmp_path, monkeypatch, capsys):
    def interrupted_after_an_epoch(learn, *, checkpoints, **_kwargs):
        save_atomic({"epochs_done": 1}, checkpoints / CHECKPOINT_FILE)
        raise KeyboardInterrupt

    monkeypatch.setattr("petclf.jobs.run.train", interrupted_after_an_epoch)
    assert main(["train", str(pets_dir), "--out", str(tmp_path), *TINY_ARGS]) == 130
    err = capsys.readouterr().err
    assert "run the same command again" in err and "interrupted" in err


def _state(**overrides):
    state = {"epochs_done": 3, "lr": 0.01, "rows": [{"error_rate": 0.5, "valid_loss": 1.0}] * 3,
             "batch_losses": [], "model": {"w": torch.tensor([3.0])}, "opt": {}, "best_epoch": 2,
             "best_key": [0.1, 0.2], "rng": {}}
    return {**state, **overrides}


def test_best_weights_are_used_only_when_they_are_of_the_epoch_named_best(tmp_path, capfd):
    save_atomic(_state(), tmp_path / CHECKPOINT_FILE)
    save_atomic({"epoch": 2, "model": {"w": torch.tensor([2.0])}}, tmp_path / BEST_FILE)
    state = load_checkpoint(tmp_path)
    assert state.best_epoch == 2 and state.best_model["w"].item() == 2.0
    # best.pt written for epoch 3, last.pt not (disk full in between): epoch 3's weights must not pass as epoch 2's.
    save_atomic({"epoch": 3, "model": {"w": torch.tensor([9.0])}}, tmp_path / BEST_FILE)
    state = load_checkpoint(tmp_path)
    assert "does not hold the weights of epoch 2" in capfd.readouterr().err
    assert state.best_epoch == 3 and state.best_model["w"].item() == 3.0 and state.best_key == (0.5, 1.0)


def test_newest_epoch_as_best_needs_no_best_file(tmp_path):
    save_atomic(_state(best_epoch=3), tmp_path / CHECKPOINT_FILE)
    state = load_checkpoint(tmp_path)
    assert state.best_epoch == 3 and state.best_model["w"].item() == 3.0


# --- Files that change during a run, and a loss that turns NaN. ---

def _own_copy(classes_dir, tmp_path):
    import shutil
    return Path(shutil.copytree(classes_dir, tmp_path / "data"))


def _valid_files(out):
    files = json.loads((out / "split.json").read_text())["files"]
    return sorted(f for f, split in files.items() if split == "valid")


@pytest.mark.parametrize("cache", [True, False])
def test_images_deleted_during_training_are_skipped_and_the_model_is_saved(classes_dir, tmp_path, monkeypatch,
                                                                         capsys, cache):
    import petclf.jobs.run

    data = _own_copy(classes_dir, tmp_path)
    real_train = petclf.jobs.run.train
    gone = []

    def delete_then_train(learn, **kwargs):
        frame = run_settings_callback(learn).dataset.frame
        gone.extend([frame[frame.split == "valid"].path.iloc[0], frame[frame.split == "train"].path.iloc[0]])
        for path in gone:
            os.remove(path)
        return real_train(learn, **kwargs)

    monkeypatch.setattr(petclf.jobs.run, "train", delete_then_train)
    out = tmp_path / "run"
    args = ["train", str(data), "--epochs", "1", "--out", str(out), *TINY_ARGS]
    assert main(args + ([] if cache else ["--no-image-cache"])) == 0
    assert (out / "model" / "model.safetensors").is_file()
    skipped = pd.read_csv(out / "skipped.csv")
    assert gone[0] in set(skipped.path) and "could not be read for the valid evaluation" in " ".join(skipped.reason)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["valid"]["n"] == len(_valid_files(out)) - 1
    if not cache:  # the train file was read every epoch: a grey image stood in for it
        assert "can no longer be read" in capsys.readouterr().err


def test_a_resumed_run_keeps_its_split(classes_dir, tmp_path, monkeypatch):
    import petclf.learn.checkpoint

    data = _own_copy(classes_dir, tmp_path)
    out = tmp_path / "run"
    args = ["train", str(data), "--epochs", "2", "--out", str(out), *TINY_ARGS]
    real_after = petclf.learn.checkpoint.Checkpoint.after_completed_epoch

    def stop_after_the_first_checkpoint(self):
        real_after(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(petclf.learn.checkpoint.Checkpoint, "after_completed_epoch", stop_after_the_first_checkpoint)
    assert main(args) == 130
    monkeypatch.undo()
    valid_before = _valid_files(out)
    # Deleting files would give another random split now; the run must go on with the one it had.
    for name in valid_before[:1] + ["red/img0.png", "green/img1.png"]:
        if (data / name).exists():
            os.remove(data / name)
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert _valid_files(out) == valid_before
    assert summary["n_valid"] == metrics["valid"]["n"] == len(valid_before) - 1
    assert summary["error_rate"] == pytest.approx(metrics["valid"]["error_rate"], abs=1e-6)
    skipped = pd.read_csv(out / "skipped.csv")
    assert "gone since the run started" in " ".join(skipped.reason)


def _poison_from_second_epoch(learn):
    """A forward hook that makes every training output NaN from the second epoch on (a diverging run)."""
    def hook(_module, _inputs, output):
        return output * float("nan") if learn.training and learn.epoch >= 1 else output
    learn.model.register_forward_hook(hook)
    return learn


def test_a_loss_that_turns_nan_stops_training_and_keeps_the_best_finite_epoch(pets_dir):
    from petclf import quick_learner, train

    learn = _poison_from_second_epoch(quick_learner(pets_dir, arch="resnet18", size=32, bs=8, pretrained=False,
                                                    device="cpu"))
    result = train(learn, epochs=3, lr=1e-2, progress=False)
    assert "became nan in epoch 2" in result.diverged
    assert result.best_epoch == 1 and len(result.history) == 1
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())


def test_a_diverged_run_saves_the_best_finite_epoch_and_exits_non_zero(pets_dir, tmp_path, monkeypatch, capsys):
    import petclf.jobs.run

    real = petclf.jobs.run.quick_learner
    monkeypatch.setattr(petclf.jobs.run, "quick_learner", lambda *a, **k: _poison_from_second_epoch(real(*a, **k)))
    out = tmp_path / "run"
    assert main(["train", str(pets_dir), "--epochs", "3", "--out", str(out), *TINY_ARGS]) == 2
    err = capsys.readouterr().err
    assert "the best with a finite loss" in err and "Traceback" not in err
    assert (out / "model" / "model.safetensors").is_file()
    assert json.loads((out / "summary.json").read_text())["best_epoch"] == 1
