"""The audit against known problems: scikit-learn's digits with 5% of labels moved to a wrong class and injected copies.

Usage:  python benchmarks/audit.py [--work DIR] [--quick]

Data it builds (64 px JPEGs, class folders): 80% of the 1,797 digit scans become the audited folder,
with 5% of them moved into a wrong class folder and 30 exact plus 30 near copies (re-encoded at JPEG
quality 60, 2 px cropped off each side, resized to 56 px) under new names; the other 20% stay clean
as a test set that no run trains on. Then:

1. ``petclf audit --no-pretrained`` (k trainings from scratch) and one plain ``petclf train`` of the
   same network and size, both timed as whole commands;
2. ``petclf audit --model`` with the model of that plain training (embeddings once, a head per fold);
3. label-issue precision/recall against the known flips, copy recall/precision against the injected pairs;
4. the payoff: the suggested fixes applied (relabel every label issue as suggested, remove every copy
   but the first of its group), a new training, and the clean test error before and after.

Targets (issue #15): label issues precision ≥ 0.8 and recall ≥ 0.8; copies recall ≥ 0.95, precision ≥ 0.9.
``--quick`` runs small sizes (600 scans, 32 px, 3 folds, 10+10 copies) to check that it works.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

CLI = [sys.executable, "-m", "petclf.cli"]


def build(work: Path, *, limit: int | None, copies: int, seed: int = 0) -> dict:
    from petclf.data.digits import DIGIT_NAMES, write_digits

    everything = write_digits(work / "all", size=64, layout="classes", limit=limit)
    rng = random.Random(seed)
    files = sorted(everything.rglob("*.jpg"))
    rng.shuffle(files)
    n_test = len(files) // 5
    data, test = work / "data", work / "test"
    for dest, chosen in ((test, files[:n_test]), (data, files[n_test:])):
        for f in chosen:
            (dest / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest / f.parent.name / f.name)
    audited = sorted(data.rglob("*.jpg"))
    flips = []
    for f in rng.sample(audited, round(0.05 * len(audited))):
        wrong = rng.choice([c for c in DIGIT_NAMES if c != f.parent.name])
        target = data / wrong / f.name
        shutil.move(f, target)
        flips.append(str(target))
    sources = rng.sample([f for f in audited if f.exists()], 2 * copies)
    pairs = []
    for k, src in enumerate(sources):
        if k < copies:
            dst = src.with_name(f"copy_{k}.jpg")
            shutil.copyfile(src, dst)
        else:
            img = Image.open(src).convert("RGB")
            w, h = img.size
            dst = src.with_name(f"near_{k}.jpg")
            img.crop((2, 2, w - 2, h - 2)).resize((56, 56), Image.BILINEAR).save(dst, quality=60)
        pairs.append((str(src), str(dst)))
    return {"data": str(data), "test": str(test), "flips": flips, "pairs": pairs,
            "images": len(list(data.rglob("*.jpg"))), "test_images": n_test}


def run(cmd: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}; see {log}")
    return seconds


def scores(audit_dir: Path, truth: dict) -> dict:
    import pandas as pd

    record = json.loads((audit_dir / "audit.json").read_text())
    root = Path(record["settings"]["root"])
    rows = pd.read_csv(audit_dir / "audit.csv", keep_default_na=False)
    found = {str(root / p) for p in rows[rows.issue == "label"].path}
    flips = set(truth["flips"])
    hits = len(found & flips)
    dups = rows[rows.issue == "duplicate"]
    predicted = {tuple(sorted(str(root / p) for p in pair)) for _, g in dups.groupby("group")
                 for pair in itertools.combinations(g.path, 2)}
    injected = {tuple(sorted(p)) for p in truth["pairs"]}
    return {"label_precision": hits / max(1, len(found)), "label_recall": hits / len(flips),
            "label_issues": len(found), "flips": len(flips),
            "copy_recall": len(predicted & injected) / len(injected),
            "copy_precision": len(predicted & injected) / max(1, len(predicted)), "copy_pairs_found": len(predicted),
            "seconds": record["seconds"], "method": record["settings"]["method"]}


def fix(audit_dir: Path) -> dict:
    """Decisions a trusting user makes: every suggested relabel, every copy but the first of its group removed."""
    from petclf.audit.apply import apply_decisions
    from petclf.audit.decisions import Decision, write_decisions

    record = json.loads((audit_dir / "audit.json").read_text())
    items = record["items"]
    decisions, groups_seen = {}, set()
    for item in items:
        if item["group"]:
            if item["group"] in groups_seen:
                decisions[item["item"]] = Decision(item["item"], "remove")
                continue
            groups_seen.add(item["group"])
        if item["issues"].startswith("label:") and item["suggested"] != item["given"]:
            decisions[item["item"]] = Decision(item["item"], "relabel", item["suggested"])
    write_decisions(audit_dir / "decisions.csv", decisions, items)
    result = apply_decisions(audit_dir / "decisions.csv")
    return {"applied": len(result.applied), "refused": len(result.refused)}


def test_error(model_dir: Path, test: Path) -> float:
    from petclf.runtime.predict import Predictor

    files = sorted(test.rglob("*.jpg"))
    top = Predictor(model_dir, device="cpu").predict_batch(files, topk=1)
    return sum(t[0][0] != f.parent.name for t, f in zip(top, files)) / len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that it runs, not the targets")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="petclf-audit-bench-"))
    shutil.rmtree(work / "data", ignore_errors=True)
    shutil.rmtree(work / "test", ignore_errors=True)
    limit, copies, size, epochs, folds = (600, 10, 32, 3, 3) if args.quick else (None, 30, 64, 5, 5)
    os.environ.setdefault("PETCLF_CACHE_DIR", str(work / "cache"))
    truth = build(work, limit=limit, copies=copies)
    data, test = Path(truth["data"]), Path(truth["test"])
    train = ["--arch", "resnet18", "--size", str(size), "--epochs", str(epochs), "--lr", "3e-3", "--no-pretrained",
             "--augment", "no-flip", "--bs", "32" if args.quick else "64"]
    print(f"data: {truth['images']} images ({len(truth['flips'])} flipped, {len(truth['pairs'])} copies), "
          f"clean test set {truth['test_images']}; resnet18 from scratch, {size} px, {epochs} epochs, {folds} folds")
    t_audit = run([*CLI, "audit", str(data), "--folds", str(folds), "--out", str(work / "audit"), *train],
                  work / "audit.log")
    t_train = run([*CLI, "train", str(data), "--out", str(work / "before"), *train], work / "before.log")
    t_model = run([*CLI, "audit", str(data), "--model", str(work / "before" / "model"), "--folds", str(folds),
                   "--out", str(work / "audit-model")], work / "audit-model.log")
    results = {"trainings": scores(work / "audit", truth), "model": scores(work / "audit-model", truth)}
    results["seconds"] = {"audit_trainings": t_audit, "audit_model": t_model, "plain_train": t_train}
    results["fixes"] = fix(work / "audit")
    run([*CLI, "train", str(data), "--out", str(work / "after"), *train], work / "after.log")
    results["test_error"] = {"before": test_error(work / "before" / "model", test),
                             "after": test_error(work / "after" / "model", test)}
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str))
    for name in ("trainings", "model"):
        r = results[name]
        print(f"audit --{'no-pretrained' if name == 'trainings' else 'model'}: label issues precision "
              f"{r['label_precision']:.3f} recall {r['label_recall']:.3f} ({r['label_issues']} flagged, {r['flips']} "
              f"flips); copies recall {r['copy_recall']:.3f} precision {r['copy_precision']:.3f} "
              f"({r['copy_pairs_found']} pairs)")
    s = results["seconds"]
    print(f"wall time: audit with {folds} trainings {s['audit_trainings']:.0f} s, audit with --model "
          f"{s['audit_model']:.0f} s, one plain `petclf train` {s['plain_train']:.0f} s "
          f"(audit/train {s['audit_trainings'] / s['plain_train']:.1f}x)")
    e = results["test_error"]
    print(f"fixes applied: {results['fixes']['applied']} (refused {results['fixes']['refused']}); clean test error "
          f"before {e['before']:.2%}, after {e['after']:.2%}")
    print(f"results: {work / 'results.json'}")


if __name__ == "__main__":
    main()
