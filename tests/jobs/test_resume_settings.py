"""Resuming checks the interrupted run's settings; a damaged config.json is refused with a reason, not a traceback."""
from __future__ import annotations

import pytest

from petclf.core.errors import DataError, UsageError
from petclf.jobs import run


@pytest.fixture()
def interrupted(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "load_checkpoint", lambda folder: "state")  # a checkpoint is there
    return tmp_path


def test_same_settings_resume(interrupted):
    (interrupted / "config.json").write_text('{"epochs": 3}')
    assert run._resume_state(interrupted, {"epochs": 3}, None) == "state"


def test_other_settings_are_refused(interrupted):
    (interrupted / "config.json").write_text('{"epochs": 3}')
    with pytest.raises(UsageError, match="other settings"):
        run._resume_state(interrupted, {"epochs": 4}, None)


def test_a_run_that_recorded_no_settings_resumes(interrupted):
    assert run._resume_state(interrupted, {"epochs": 4}, None) == "state"


def test_a_damaged_config_is_refused_with_the_way_out(interrupted):
    (interrupted / "config.json").write_text('{"epochs": 3')
    with pytest.raises(DataError, match="config.json cannot be read .*to start over"):
        run._resume_state(interrupted, {"epochs": 3}, None)
