"""Every example runs end to end in --smoke mode (generated data, offline)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script, expected", [
    ("pets.py", "error rate"),
    ("caltech10.py", "test accuracy"),
    ("hymenoptera.py", "fixed feature extractor"),
    ("cifar10_scratch.py", "accuracy of each class"),
])
def test_example_smoke(script, expected, tmp_path):
    # The examples keep their smoke folders for the user to look at; here they go under pytest's tmp_path.
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--smoke"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert expected in proc.stdout
