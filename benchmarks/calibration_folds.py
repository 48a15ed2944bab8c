"""Calibration of petclf's recipe measured on every photo: k models, each validated on its own held-out fold.

Usage:  python benchmarks/calibration_folds.py [--data DIR] [--folds 5] [--work DIR] [-- TRAIN OPTIONS]

One validation split of 864 photos cannot show an ECE under about 0.05: a model calibrated by construction shows
0.036 on average there (``petclf.evaluate.calibration.ece_by_chance``). This pools the photos of --data's train/
and valid/ class folders, splits them into --folds stratified folds (seeded), and trains one model per fold with
`petclf train` (that fold as valid/, the others as train/; default options: tf_efficientnet_lite0 at 128 px, as
benchmarks/trust.py). Every photo then has probabilities from a model that never trained on it, and:

  per fold   the model's own figures (summary.json): error, temperature, ECE before → after on its fold
  pooled     ECE before and after calibration over all photos, each with its own model's temperature (as shipped)
  crossed    the same, each fold's temperature refitted on the other folds' photos (no photo's probability
             calibrated with a temperature fitted on it)
  chance     beside each: the ECE a perfectly calibrated model with those confidences shows on as many photos
             (mean and 95th percentile); 5× the photos: about 1/√5 of one split's

Models are trained once per --work (a fold whose model exists is not trained again). Target (issue #24): ECE after
calibration ≤ 0.03.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from petclf.data.listing import class_dirs, list_images  # noqa: E402
from petclf.evaluate.calibration import ece_by_chance  # noqa: E402
from petclf.runtime.predict import Predictor  # noqa: E402
from petclf.runtime.temperature import expected_calibration_error as ece  # noqa: E402
from trust import crossfit, softmax  # noqa: E402 - benchmarks/trust.py's cross-fitted calibration

DEFAULT_TRAIN = ["--arch", "tf_efficientnet_lite0", "--size", "128"]


def photos_by_class(data: Path) -> dict[str, list[Path]]:
    """Every photo of ``data``'s train/ and valid/ class folders, by class, in a fixed order."""
    found: dict[str, list[Path]] = {}
    for split in ("train", "valid"):
        for folder in class_dirs(data / split):
            found.setdefault(folder.name, []).extend(list_images(folder, recurse=False)[0])
    return found


def fold_of(found: dict[str, list[Path]], folds: int, seed: int) -> dict[Path, int]:
    """Each photo's fold: each class shuffled with ``seed`` and dealt round the folds (stratified)."""
    rng = np.random.default_rng(seed)
    return {path: k % folds for paths in found.values() for k, path in enumerate(rng.permutation(paths))}


def fold_folder(work: Path, fold: int, assigned: dict[Path, int]) -> Path:
    """train/ and valid/ class folders of symbolic links for ``fold``: its photos are valid/, the rest train/."""
    root = work / f"fold{fold}" / "data"
    if not root.is_dir():
        for path, k in assigned.items():
            link = root / ("valid" if k == fold else "train") / path.parent.name / path.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data/flowers5", help="train/ and valid/ class folders")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "petclf-bench-calibration"))
    parser.add_argument("train", nargs="*", help=f"options for `petclf train` after -- (default: {DEFAULT_TRAIN})")
    args = parser.parse_args()
    work = Path(args.work)
    found = photos_by_class(Path(args.data))
    classes = sorted(found)
    assigned = fold_of(found, args.folds, args.seed)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    logits, labels, fold_ids, rows = [], [], [], []
    for fold in range(args.folds):
        data, run = fold_folder(work, fold, assigned), work / f"fold{fold}" / "run"
        if not (run / "model" / "petclf.json").is_file():
            print(f"fold {fold}: training …", flush=True)
            subprocess.run([sys.executable, "-m", "petclf.cli", "train", str(data), *(args.train or DEFAULT_TRAIN),
                            "--out", str(run)], check=True, env=env)
        summary = json.loads((run / "summary.json").read_text())
        pred = Predictor(run / "model", precision="fp32")
        if list(pred.classes) != classes:
            raise SystemExit(f"fold {fold}'s model has classes {pred.classes}, expected {classes}")
        files = sorted(data.glob("valid/*/*"))
        z = torch.cat(list(pred.iter_logits(files))).double().numpy()
        y = np.array([classes.index(f.parent.name) for f in files])
        logits.append(z)
        labels.append(y)
        fold_ids.append(np.full(len(y), fold))
        rows.append({"fold": fold, "photos": len(y), "error": summary["error_rate"], "temperature": pred.temperature,
                     "ece_before": summary["ece_before"], "ece_after": summary["ece_after"],
                     "ece_chance_p95": summary.get("ece_chance_p95")})
        print(f"fold {fold}: {len(y)} photos, error {summary['error_rate']:.2%}, T {pred.temperature:.3f}, ECE "
              f"{summary['ece_before']:.4f} → {summary['ece_after']:.4f} (chance p95 {summary.get('ece_chance_p95')})",
              flush=True)
    z, y, ids = (np.concatenate(a) for a in (logits, labels, fold_ids))
    t = np.array([row["temperature"] for row in rows])[ids]  # each photo's own model's temperature
    crossed = crossfit(z, y, ids)
    results = {"photos": int(len(y)), "folds": rows, "error": float((z.argmax(1) != y).mean())}
    for name, probs in (("before", softmax(z)), ("after_own", softmax(z / t[:, None])), ("after_crossed", crossed)):
        mean, p95 = ece_by_chance(probs)
        results[name] = {"ece": ece(probs, y), "chance_mean": mean, "chance_p95": p95}
        print(f"pooled {name:<14} ECE {results[name]['ece']:.4f}  (chance mean {mean:.4f}, p95 {p95:.4f}) on "
              f"{len(y)} photos", flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print(f"all figures: {work / 'results.json'}")


if __name__ == "__main__":
    main()
