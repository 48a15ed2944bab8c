"""A deployment: cold start (a fresh process loads a model directory and predicts one image), then steady speed.

Usage:  python benchmarks/cold_start.py [--before REV] [--runs 7] [--work DIR]

It times ``python -c "from petclf import Predictor; Predictor(M).predict(IMG)"`` in fresh
processes, for this checkout and (with ``--before``) for an earlier commit checked out with
``git worktree`` beside it, alternating the two so that both see the same machine load. Each
child reports its peak RSS and how many modules it imported (both taken before the speed part),
then the median single-image latency (20 calls) and the throughput of ``predict_batch`` at batch
64 over 320 images; the parent times the whole process up to the first prediction. The model
directory (resnet34, 128 px, untrained, as bench.py's) is written by this checkout's petclf and
read by both.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, resource, sys, time
start = time.perf_counter()
from petclf import Predictor
pred = Predictor(sys.argv[1])
top = pred.predict(sys.argv[2], topk=1)
result = {"inside_s": time.perf_counter() - start, "modules": len(sys.modules), "fastai": "fastai" in sys.modules,
          "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "top": top[0][0]}
print(json.dumps(result), flush=True)
files = sorted(__import__("glob").glob(sys.argv[3] + "/*.jpg"))[:320]
times = []
for _ in range(20):
    t = time.perf_counter(); pred.predict(files[0]); times.append(time.perf_counter() - t)
pred.predict_batch(files[:64], bs=64)
t = time.perf_counter(); pred.predict_batch(files, bs=64)
result.update(latency_ms=sorted(times)[10] * 1000, throughput=len(files) / (time.perf_counter() - t))
print(json.dumps(result))
"""


def _model(work: Path) -> tuple[Path, Path]:
    """A model directory and an image, made once with this checkout."""
    model, data = work / "model", work / "data"
    if not (model / "petclf.json").is_file():
        from petclf import quick_learner, save_model
        from petclf.data.digits import write_digits

        write_digits(data, limit=320)
        save_model(quick_learner(data, arch="resnet34", size=128, bs=16, pretrained=False, device="cpu"), model)
    return model, sorted(data.glob("seven_*.jpg"))[0]


def _run(source: Path, model: Path, image: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source)}
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(model), str(image), str(image.parent)], env=env,
                             stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir())
    first = child.stdout.readline()  # printed right after the first prediction
    wall = time.perf_counter() - start
    last = child.stdout.read().strip().splitlines()[-1]
    if child.wait() != 0:
        raise RuntimeError(f"the child for {source} failed")
    return {**json.loads(last), "wall_s": wall, "first": json.loads(first)["top"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=None, help="git revision to compare with (checked out as a worktree)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "petclf-cold-start"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model, image = _model(work)
    sources = {"now": ROOT}
    if args.before:
        before = work / f"src-{args.before}"
        if not before.exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=True)  # a removed --work
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before],
                           check=True, capture_output=True)
        sources = {args.before: before, **sources}
    for source in sources.values():  # warm the disk cache once
        _run(source, model, image)
    rows: dict[str, list[dict]] = {name: [] for name in sources}
    for _ in range(args.runs):
        for name, source in sources.items():
            rows[name].append(_run(source, model, image))
    summary = {}
    for name, runs in rows.items():
        summary[name] = {key: statistics.median(r[key] for r in runs)
                         for key in ("wall_s", "inside_s", "rss_mb", "modules", "latency_ms", "throughput")}
        summary[name]["fastai_imported"] = runs[0]["fastai"]
        print(f"{name:>10}: wall {summary[name]['wall_s']:.2f} s (import+load+predict {summary[name]['inside_s']:.2f} s), "
              f"peak RSS {summary[name]['rss_mb']:.0f} MB, {summary[name]['modules']:.0f} modules, "
              f"fastai imported: {runs[0]['fastai']}; latency {summary[name]['latency_ms']:.1f} ms, "
              f"{summary[name]['throughput']:.0f} img/s")
    if args.before:
        old, new = summary[args.before], summary["now"]
        print(f"ratios now/{args.before}: wall {new['wall_s'] / old['wall_s']:.2f}, "
              f"RSS {new['rss_mb'] / old['rss_mb']:.2f}, modules {new['modules'] / old['modules']:.2f}, "
              f"latency {new['latency_ms'] / old['latency_ms']:.2f}, throughput {new['throughput'] / old['throughput']:.2f}")
    print(json.dumps({"runs": args.runs, "median": summary}, indent=1))


if __name__ == "__main__":
    main()
