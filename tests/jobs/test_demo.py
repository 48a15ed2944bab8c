from __future__ import annotations

import pytest

from petclf.data.digits import DIGIT_NAMES, write_digits


def test_digits_are_written_in_pets_layout(tmp_path):
    folder = write_digits(tmp_path, size=16, limit=20)
    files = sorted(p.name for p in folder.glob("*.jpg"))
    assert len(files) == 20
    assert all(name.rsplit("_", 1)[0] in DIGIT_NAMES for name in files)


@pytest.mark.slow
def test_demo_meets_its_error_target(tmp_path):
    from petclf.jobs.demo import run_demo

    demo = run_demo(tmp_path, progress=False)
    assert demo.run.summary["error_rate"] < 0.02
    assert demo.prediction[0][0] in DIGIT_NAMES
