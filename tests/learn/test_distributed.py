"""Two CPU processes with gloo under torchrun: shards, one writer, same result as one process."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("accelerate", reason="distributed training needs accelerate (pip install petclf[distributed])")

from petclf.data.digits import write_digits  # noqa: E402

ARGS = ["--arch", "resnet18", "--size", "32", "--no-pretrained", "--epochs", "4", "--lr", "3e-3",
        "--augment", "no-flip"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_port()), *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digits(tmp_path_factory.mktemp("digits"), size=32, limit=400)


def test_every_rank_trains_on_its_own_shard(digits, tmp_path):
    script = tmp_path / "shards.py"
    script.write_text(textwrap.dedent(f"""
        import json, os
        from fastai.callback.core import Callback
        from petclf import quick_learner
        from petclf.learn.distributed import data_parallel

        class SeenItems(Callback):
            def before_train(self):
                self.idxs = [int(i) for i in self.learn.dl.get_idxs()]

        learn = quick_learner({str(digits)!r}, arch="resnet18", size=32, bs=8, pretrained=False)
        seen = SeenItems()
        with data_parallel(learn):
            learn.fit(1, 1e-3, cbs=seen)
        with open(os.path.join({str(tmp_path)!r}, f"rank{{os.environ['RANK']}}.json"), "w") as f:
            json.dump({{"idxs": seen.idxs, "n": len(learn.dls.train_ds)}}, f)
    """))
    proc = _torchrun(str(script))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    a, b = set(ranks[0]["idxs"]), set(ranks[1]["idxs"])
    assert a and b and not a & b
    assert a | b == set(range(ranks[0]["n"]))


def test_torchrun_train_matches_one_process_and_only_rank0_writes(digits, tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    one = subprocess.run([sys.executable, "-m", "petclf.cli", "train", str(digits), "--out", str(single),
                          "--bs", "16", *ARGS], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    proc = _torchrun("-m", "petclf.cli", "train", str(digits), "--out", str(multi), "--bs", "8", *ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Logs from process 0 only: each epoch line once, one closing line.
    for epoch in range(1, 5):
        assert proc.stdout.count(f"epoch {epoch}/4 ") == 1
    assert proc.stdout.count("summary:") == 1
    # The same out-dir layout as a single-process run, nothing left behind by a second writer.
    assert sorted(p.name for p in multi.iterdir()) == sorted(p.name for p in single.iterdir())
    assert not list(multi.rglob("*.tmp"))
    s1 = json.loads((single / "summary.json").read_text())
    s2 = json.loads((multi / "summary.json").read_text())
    assert s2["n_train"] == s1["n_train"] and s2["n_valid"] == s1["n_valid"]
    # Same global batch (2 × 8 = 16); per-process BatchNorm statistics differ, so: within 0.10 error.
    assert abs(s2["error_rate"] - s1["error_rate"]) <= 0.10, (s1["error_rate"], s2["error_rate"])
    assert s2["error_rate"] < 0.3


def test_killed_torchrun_run_resumes(digits, tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_port()), "-m", "petclf.cli", "train", str(digits), "--out", str(out), "--bs", "8",
           *ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    # torchrun starts each worker in a session of its own: kill the workers as well as the launcher's group,
    # as a crash of the machine would (orphaned workers would go on writing into the same out dir).
    workers = _children(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    assert workers, "no worker processes were found under the launcher"
    assert not (out / "summary.json").exists()
    resumed = _torchrun("-m", "petclf.cli", "train", str(digits), "--out", str(out), "--bs", "8", "--resume", *ARGS)
    errors = [line for line in resumed.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert resumed.returncode == 0, "\n".join(errors[:40])
    assert "resuming after epoch" in resumed.stderr
    history = json.loads((out / "summary.json").read_text())
    assert history["epochs"] == 4
    assert not (out / "checkpoints").exists()
