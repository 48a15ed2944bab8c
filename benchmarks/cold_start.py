"""Cold start of a deployment: a fresh process loads a model directory and predicts one image.

Usage:  python benchmarks/cold_start.py [--before REV] [--runs 7] [--work DIR]

It times ``python -c "from petclf import Predictor; Predictor(M).predict(IMG)"`` in fresh
processes, for this checkout and (with ``--before``) for an earlier commit checked out with
``git worktree`` beside it, alternating the two so that both see the same machine load. Each
child reports its peak RSS and how many modules it imported; the parent times the whole process.
The model directory (resnet18, 64 px, untrained) is written by this checkout's petclf and read by both.
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
top = Predictor(sys.argv[1]).predict(sys.argv[2], topk=1)
print(json.dumps({"inside_s": time.perf_counter() - start, "modules": len(sys.modules), "fastai": "fastai" in sys.modules,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "top": top[0][0]}))
"""


def _model(work: Path) -> tuple[Path, Path]:
    """A model directory and an image, made once with this checkout."""
    model, data = work / "model", work / "data"
    if not (model / "petclf.json").is_file():
        from petclf import quick_learner, save_model
        from petclf.data.digits import write_digits

        write_digits(data, limit=200)
        save_model(quick_learner(data, arch="resnet18", size=64, bs=16, pretrained=False, device="cpu"), model)
    return model, sorted(data.glob("seven_*.jpg"))[0]


def _run(source: Path, model: Path, image: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source)}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(model), str(image)], env=env, capture_output=True,
                         text=True, check=True, cwd=tempfile.gettempdir())
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "wall_s": time.perf_counter() - start}


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
        summary[name] = {key: statistics.median(r[key] for r in runs) for key in ("wall_s", "inside_s", "rss_mb", "modules")}
        summary[name]["fastai_imported"] = runs[0]["fastai"]
        print(f"{name:>10}: wall {summary[name]['wall_s']:.2f} s (import+load+predict {summary[name]['inside_s']:.2f} s), "
              f"peak RSS {summary[name]['rss_mb']:.0f} MB, {summary[name]['modules']:.0f} modules, "
              f"fastai imported: {runs[0]['fastai']}")
    if args.before:
        old, new = summary[args.before], summary["now"]
        print(f"ratios now/{args.before}: wall {new['wall_s'] / old['wall_s']:.2f}, "
              f"RSS {new['rss_mb'] / old['rss_mb']:.2f}, modules {new['modules'] / old['modules']:.2f}")
    print(json.dumps({"runs": args.runs, "median": summary}, indent=1))


if __name__ == "__main__":
    main()
