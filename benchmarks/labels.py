"""Labels from a table, several labels per image, skewed classes: petclf's command against plain fastai, side by side.

Usage:  python benchmarks/labels.py [--workloads multilabel,imbalance,table] [--work DIR] [--epochs N]
                                    [--json PATH] [--smoke]

It builds its own data from scikit-learn's digits (real 8×8 scans, dark ink on white, written as
JPEG files; no downloads) and runs every candidate as a fresh process, timed from the outside as a
whole command (start-up, imports, data, training, evaluation, writing): `petclf train ...` as a
subprocess, plain fastai as a child of this script. Each petclf run gets a cold, private image cache.
All candidates: resnet18 from scratch, batch 64, fit_one_cycle with lr 3e-3, no flips.

Workloads:
  multilabel  1,600 images of 96 px: a 2×2 grid of 48 px cells holding 1-3 distinct digits (blank cells
              elsewhere), labels = the digits present; `labels.csv` (fname,labels,is_valid; 20% valid).
              fastai's documented recipe (DataBlock with MultiCategoryBlock, accuracy_multi, F1ScoreMulti)
              against `petclf train labels.csv --label-delim ' '`. Default 5 epochs.
              Target: petclf's wall time <= 0.6x fastai's, micro-F1 >= fastai's - 1 point.
  imbalance   64 px digits in train/<digit>/ with 150, 120, 90, 60, 40, 30, 20, 15, 10, 8 images for
              digits 0..9 and a balanced valid/ (28 a class). petclf with no --balance (its default) and
              with --balance none, sampler, weights; fastai's ImageDataLoaders.from_folder. Default 8 epochs.
  table       all 1,797 digits at 64 px, one stratified 20% split, written twice: class folders
              (folders/train/<d>/, folders/valid/<d>/) and a Kaggle-style train.csv (image_id without
              extension, label, is_valid 0/1) beside train_images/<hash>.jpg, rows in the order petclf
              lists the folders. Target: the same validation error. Default 5 epochs.

Every candidate's validation predictions are scored by this script with the same code (petclf's from
its saved model through Predictor, in a separate untimed process), beside the figures of petclf's own
summary.json, and what petclf's run lacks or contradicts is printed as CHECK lines. --epochs N sets every
workload's epochs; --smoke runs tiny data (32 px, 1 epoch; 1-4 minutes on 2 cores, mostly start-up) to check
the generators and the candidates: its figures mean nothing. --json PATH writes every result. Data and runs
(logs, out dirs) stay under --work (default $TMPDIR/petclf-labels, or petclf-labels-smoke).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ARCH, BS, LR, SEED = "resnet18", 64, 3e-3, 42
DATA_SEED = 0
COUNTS = (150, 120, 90, 60, 40, 30, 20, 15, 10, 8)  # training images of digit 0..9 in `imbalance`
VALID_PER_CLASS = 28  # digit 0 has 178 scans: 150 train + 28 valid
EPOCHS = {"multilabel": 5, "imbalance": 8, "table": 5}
WALL_TARGET, F1_TARGET = 0.6, -0.01


# ---------------------------------------------------------------- data (deterministic; reused when complete)

def _scans() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


def _tile(scan: np.ndarray, size: int):
    """A scan as petclf's demo digits look: 0..16 ink, dark on white paper, bicubic upscaling."""
    from PIL import Image

    gray = (255 - scan * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").resize((size, size), Image.BICUBIC)


def _opaque(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _fresh(root: Path, params: dict) -> bool:
    """True when ``root`` holds complete data made with ``params``; otherwise empties it for a new build."""
    stamp = root / "params.json"
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return True
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return False


def _done(root: Path, params: dict, valid: list) -> None:
    (root / "valid.json").write_text(json.dumps(valid))
    (root / "params.json").write_text(json.dumps(params))  # last: marks the build complete


def build_multilabel(root: Path, *, n: int, size: int) -> Path:
    """``root/labels.csv`` (fname,labels,is_valid) and ``root/images/<hash>.jpg``; valid images use held-out scans."""
    params = {"kind": "multilabel", "n": n, "size": size, "seed": DATA_SEED}
    if _fresh(root, params):
        return root
    from PIL import Image

    images, targets = _scans()
    rng = np.random.default_rng(DATA_SEED)
    is_valid = np.zeros(n, dtype=bool)
    is_valid[rng.permutation(n)[:round(0.2 * n)]] = True
    pools = {}
    for d in range(10):  # 20% of each digit's scans appear only in validation images
        idx = rng.permutation(np.flatnonzero(targets == d))
        k = round(0.2 * len(idx))
        pools[d] = {True: idx[:k], False: idx[k:]}
    cell = size // 2
    (root / "images").mkdir()
    rows, valid = [], []
    for i in range(n):
        k = int(rng.integers(1, 4))
        present = sorted(int(d) for d in rng.choice(10, k, replace=False))
        cells = rng.choice(4, k, replace=False)
        canvas = Image.new("L", (size, size), 255)  # blank cells: white paper
        for d, c in zip(present, cells):
            scan = images[int(rng.choice(pools[d][bool(is_valid[i])]))]
            canvas.paste(_tile(scan, cell), (int(c % 2) * cell, int(c // 2) * cell))
        fname = f"images/{_opaque(f'multilabel-{i}')}.jpg"
        canvas.convert("RGB").save(root / fname, quality=95)
        labels = [str(d) for d in present]
        rows.append(f"{fname},{' '.join(labels)},{bool(is_valid[i])}")
        if is_valid[i]:
            valid.append([str(root / fname), labels])
    (root / "labels.csv").write_text("fname,labels,is_valid\n" + "\n".join(rows) + "\n")
    _done(root, params, valid)
    return root


def build_imbalance(root: Path, *, counts: tuple[int, ...], n_valid: int, size: int) -> Path:
    """``root/train/<digit>/`` with ``counts[digit]`` images and a balanced, disjoint ``root/valid/<digit>/``."""
    params = {"kind": "imbalance", "counts": list(counts), "n_valid": n_valid, "size": size, "seed": DATA_SEED}
    if _fresh(root, params):
        return root
    images, targets = _scans()
    rng = np.random.default_rng(DATA_SEED)
    valid = []
    for d, count in enumerate(counts):
        idx = rng.permutation(np.flatnonzero(targets == d))
        assert len(idx) >= n_valid + count, f"digit {d} has {len(idx)} scans"
        for split, chosen in (("valid", idx[:n_valid]), ("train", idx[n_valid:n_valid + count])):
            folder = root / split / str(d)
            folder.mkdir(parents=True)
            for j in chosen:
                path = folder / f"{j:04d}.jpg"
                _tile(images[j], size).convert("RGB").save(path, quality=95)
                if split == "valid":
                    valid.append([str(path), [str(d)]])
    _done(root, params, valid)
    return root


def build_table(root: Path, *, limit: int | None, size: int) -> Path:
    """The same images as ``root/folders/{train,valid}/<digit>/`` and as ``root/train.csv`` + ``root/train_images/``."""
    params = {"kind": "table", "limit": limit, "size": size, "seed": DATA_SEED}
    if _fresh(root, params):
        return root
    images, targets = _scans()
    if limit is not None:
        images, targets = images[:limit], targets[:limit]
    rng = np.random.default_rng(DATA_SEED)
    for d in range(10):  # one stratified 20% split
        idx = rng.permutation(np.flatnonzero(targets == d))
        k = round(0.2 * len(idx))
        for split, chosen in (("valid", idx[:k]), ("train", idx[k:])):
            folder = root / "folders" / split / str(d)
            folder.mkdir(parents=True, exist_ok=True)
            for j in chosen:
                _tile(images[j], size).convert("RGB").save(folder / f"{j:04d}.jpg", quality=95)
    # petclf's folder listing: train/ then valid/, class folders sorted, file names sorted within a class.
    (root / "train_images").mkdir()
    rows, valid = [], []
    for split in ("train", "valid"):
        for class_dir in sorted(p for p in (root / "folders" / split).iterdir() if p.is_dir()):
            for file in sorted(class_dir.iterdir(), key=lambda p: p.name):
                image_id = _opaque(f"table-{split}/{class_dir.name}/{file.name}")
                shutil.copyfile(file, root / "train_images" / f"{image_id}.jpg")  # the same bytes
                rows.append(f"{image_id},{class_dir.name},{int(split == 'valid')}")
                if split == "valid":
                    valid.append([str(file), [class_dir.name]])
    (root / "train.csv").write_text("image_id,label,is_valid\n" + "\n".join(rows) + "\n")
    _done(root, params, valid)
    return root


# ---------------------------------------------------------------- children (fresh processes)

def child_fastai_multilabel(root: Path, size: int, epochs: int, out: Path) -> dict:
    from functools import partial

    import pandas as pd
    from fastai.vision.all import (ColReader, ColSplitter, DataBlock, F1ScoreMulti, ImageBlock, MultiCategoryBlock,
                                   Resize, accuracy_multi, aug_transforms, resnet18, set_seed, vision_learner)

    set_seed(SEED)
    df = pd.read_csv(root / "labels.csv", dtype={"labels": str})
    dblock = DataBlock(blocks=(ImageBlock, MultiCategoryBlock), get_x=ColReader("fname", pref=f"{root}{os.sep}"),
                       get_y=ColReader("labels", label_delim=" "), splitter=ColSplitter("is_valid"),
                       item_tfms=Resize(size), batch_tfms=aug_transforms(size=size, do_flip=False))
    dls = dblock.dataloaders(df, bs=BS, num_workers=0)
    learn = vision_learner(dls, resnet18, pretrained=False,
                           metrics=[partial(accuracy_multi, thresh=0.5), F1ScoreMulti(average="micro")])
    fit_s = _fit_and_save(learn, epochs, out)
    acc_multi, f1_micro = (float(v) for v in learn.recorder.values[-1][-2:])  # the two metrics come last
    return {"train_seconds": fit_s, "fastai_accuracy_multi": acc_multi, "fastai_f1_micro": f1_micro}


def child_fastai_folders(root: Path, size: int, epochs: int, out: Path) -> dict:
    from fastai.vision.all import ImageDataLoaders, Resize, accuracy, aug_transforms, resnet18, set_seed, vision_learner

    set_seed(SEED)
    dls = ImageDataLoaders.from_folder(root, train="train", valid="valid", item_tfms=Resize(size),
                                       batch_tfms=aug_transforms(size=size, do_flip=False), bs=BS, num_workers=0)
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy)
    return {"train_seconds": _fit_and_save(learn, epochs, out)}


def _fit_and_save(learn, epochs: int, out: Path) -> float:
    """fit_one_cycle(epochs, LR) quietly, then the validation probabilities, targets and vocab into ``out``;
    returns the fit's seconds."""
    start = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, LR)
    fit_s = time.perf_counter() - start
    with learn.no_bar():
        probs, targs = learn.get_preds(ds_idx=1)
    classes = np.array([str(c) for c in learn.dls.vocab])
    np.savez(out, probs=probs.float().numpy(), targs=targs.numpy(), classes=classes)
    return fit_s


def child_petclf_predict(model: Path, files: list[str], out: Path) -> dict:
    import torch

    from petclf import Predictor

    pred = Predictor(model)
    probs = torch.cat([pred.probabilities(z) for z in pred.iter_logits(files, bs=BS)])
    np.savez(out, probs=probs.numpy(), classes=np.array([str(c) for c in pred.classes]))
    return {"multi_label": bool(getattr(pred, "multi_label", False)), "predictor_precision": pred.precision}


# ---------------------------------------------------------------- scoring (one code path for every candidate)

def _recall(y: np.ndarray, p: np.ndarray, label: str) -> float:
    mask = y == label
    return float((p[mask] == label).mean()) if mask.any() else float("nan")


def score_single(probs: np.ndarray, classes: list[str], truth: list[str]) -> dict:
    from sklearn.metrics import balanced_accuracy_score, f1_score

    pred = np.array(classes)[probs.argmax(1)]
    y = np.array(truth)
    labels = sorted(set(truth), key=lambda c: (len(c), c))
    return {"error_rate": float((pred != y).mean()), "accuracy": float((pred == y).mean()),
            "f1_macro": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
            "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "recall": {c: _recall(y, pred, c) for c in labels}}


def score_multi(probs: np.ndarray, classes: list[str], truth: list[list[str]], *, own_threshold=None) -> dict:
    """Multi-label figures at 0.5 and at the best global threshold on valid (and at ``own_threshold``: a number, a
    list in class order or a {label: threshold} dict, when given)."""
    from sklearn.metrics import average_precision_score, f1_score

    y = np.array([[c in labels for c in classes] for labels in truth], dtype=int)

    def at(t) -> tuple[float, float, float]:
        p = (probs > t).astype(int)
        return (float(f1_score(y, p, average="micro", zero_division=0)),
                float(f1_score(y, p, average="macro", zero_division=0)), float((p == y).mean()))

    micro, macro, acc = at(0.5)
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    best = max(grid, key=lambda t: (at(t)[0], -abs(t - 0.5)))
    scores = {"f1_micro": micro, "f1_macro": macro, "accuracy_multi": acc,
            "map": float(average_precision_score(y, probs, average="macro")),
            "best_threshold": float(best), "f1_micro_best": at(best)[0], "f1_macro_best": at(best)[1]}
    if isinstance(own_threshold, dict):
        own_threshold = [own_threshold.get(c, np.nan) for c in classes]
    if isinstance(own_threshold, (int, float, list)):
        own = at(np.asarray(own_threshold, float))
        scores["f1_micro_own"], scores["f1_macro_own"], scores["accuracy_multi_own"] = own
    return scores


# ---------------------------------------------------------------- running candidates

def _load_npz(path: Path) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    z = np.load(path)
    return z["probs"], [str(c) for c in z["classes"]], (z["targs"] if "targs" in z.files else None)


def _tail(text: str, n: int = 12) -> str:
    return "\n".join("    | " + line for line in text.strip().splitlines()[-n:])


_NOTICE = re.compile(r"warning|error:|exception|traceback|refus|deprecat|[1-9]\d* skipped", re.IGNORECASE)


def _notices(text: str) -> list[str]:
    """Lines of a petclf run that warn or complain (deduplicated, in order)."""
    seen: dict[str, None] = {}
    for line in text.splitlines():
        if _NOTICE.search(line):
            seen.setdefault(line.strip()[:300], None)
    return list(seen)


def _run(cmd: list[str], log: Path) -> tuple[int, float, str]:
    """Run ``cmd`` with a cold private petclf cache; return (exit code, whole-command seconds, output)."""
    with tempfile.TemporaryDirectory(prefix="petclf-labels-cache-") as cache:
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PETCLF_CACHE_DIR": cache},
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
    output = proc.stdout + ("\n" if proc.stdout and proc.stderr else "") + proc.stderr
    log.write_text(f"$ {shlex.join(cmd)}\n{output}")
    return proc.returncode, wall, output


def run_petclf(name: str, args: list[str], runs: Path, valid: list, *, multi: bool) -> dict:
    out = runs / name
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "petclf.cli", "train", *args, "--out", str(out)]
    print(f"  $ {shlex.join(['petclf', 'train', *args, '--out', str(out)])}", flush=True)
    rc, wall, output = _run(cmd, runs / f"{name}.log")
    result: dict = {"name": name, "command": shlex.join(cmd), "wall_s": wall, "rc": rc, "notices": _notices(output)}
    if rc != 0:
        print(f"  {name} FAILED (exit {rc}), log {runs / f'{name}.log'}:\n{_tail(output)}", flush=True)
        return result | {"failed": True, "output_tail": output[-3000:]}
    summary_path = out / "summary.json"
    result["summary"] = json.loads(summary_path.read_text()) if summary_path.exists() else None
    config_path = out / "config.json"
    result["config"] = json.loads(config_path.read_text()) if config_path.exists() else None
    files = [f for f, _ in valid]
    (runs / f"{name}.valid.json").write_text(json.dumps(files))
    pred = _child("petclf_predict", ["--model", str(out / "model"), "--files", str(runs / f"{name}.valid.json")],
                  runs / f"{name}.predict", quiet=True)
    if pred.get("failed"):
        result["predict_failed"] = pred["output_tail"]
        return result
    probs, classes, _ = _load_npz(runs / f"{name}.predict.npz")
    truth = [labels for _, labels in valid]
    summary = result["summary"] or {}
    result["scores"] = (score_multi(probs, classes, truth, own_threshold=summary.get("threshold")) if multi
                        else score_single(probs, classes, [t[0] for t in truth]))
    result["predictor"] = pred
    result["checks"] = _checks(summary, result["scores"], pred, multi=multi)
    return result


SUMMARY_FIELDS = {False: ("task", "seconds", "train_seconds", "error_rate", "accuracy", "f1_macro",
                         "balanced_accuracy"),
                  True: ("task", "seconds", "train_seconds", "f1_micro", "f1_macro", "map", "threshold",
                         "accuracy_multi")}


def _checks(summary: dict, scores: dict, pred: dict, *, multi: bool) -> list[str]:
    """What in a petclf run differs from what the issue asks for, or from its saved model's predictions."""
    problems = []
    missing = [k for k in SUMMARY_FIELDS[multi] if k not in summary]
    if missing:
        problems.append(f"summary.json lacks {', '.join(missing)}")
    task = "multi_label" if multi else "single_label"
    if "task" in summary and summary["task"] != task:
        problems.append(f"summary.json task is {summary['task']!r}, expected {task!r}")
    if multi:
        for key in ("error_rate", "accuracy"):
            if key in summary:
                problems.append(f"summary.json reports {key} for a multi-label task")
    if pred.get("multi_label") != multi:
        problems.append(f"Predictor.multi_label is {pred.get('multi_label')} for a {task} model")
    pairs = ((("f1_micro", "f1_micro_own"), ("f1_macro", "f1_macro_own"), ("map", "map"),
              ("accuracy_multi", "accuracy_multi_own")) if multi else
             (("error_rate", "error_rate"), ("accuracy", "accuracy"), ("f1_macro", "f1_macro"),
              ("balanced_accuracy", "balanced_accuracy")))
    for own, ours in pairs:
        a, b = summary.get(own), scores.get(ours)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) > 0.01:
            problems.append(f"summary.json {own} {a:.4f}, but the saved model's predictions give {b:.4f}")
    return problems


def _child(kind: str, extra: list[str], stem: Path, *, quiet: bool = False) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--child-out", f"{stem}.npz", *extra]
    if not quiet:
        print(f"  $ {shlex.join(cmd)}", flush=True)
    rc, wall, output = _run(cmd, Path(f"{stem}.log"))
    if rc != 0:
        print(f"  {kind} FAILED (exit {rc}), log {stem}.log:\n{_tail(output)}", flush=True)
        return {"failed": True, "rc": rc, "wall_s": wall, "output_tail": output[-3000:]}
    result = json.loads(Path(f"{stem}.json").read_text()) | {"wall_s": wall}
    return result if quiet else result | {"command": shlex.join(cmd)}


def run_fastai(kind: str, root: Path, size: int, epochs: int, runs: Path, valid: list, *, multi: bool) -> dict:
    name = f"fastai_{kind}"
    result = _child(name, ["--data", str(root), "--size", str(size), "--epochs", str(epochs)], runs / name)
    result["name"] = "fastai"
    if result.get("failed"):
        return result
    probs, classes, targs = _load_npz(runs / f"{name}.npz")
    if multi:
        truth = [[c for c, t in zip(classes, row) if t] for row in targs]
        result["scores"] = score_multi(probs, classes, truth)
    else:
        result["scores"] = score_single(probs, classes, [classes[int(t)] for t in targs])
    return result


# ---------------------------------------------------------------- workloads

def _fmt(v, spec: str = ".4f") -> str:
    """``v`` formatted, or a dash as wide as the field when there is no value."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        width = re.match(r"\d*", spec).group()
        return "-".rjust(int(width or 1))
    return format(v, spec)


def _petclf_args(size: int, epochs: int) -> list[str]:
    return ["--arch", ARCH, "--size", str(size), "--no-pretrained", "--epochs", str(epochs), "--lr", str(LR),
            "--augment", "no-flip", "--bs", str(BS)]


def _print_notices(results: list[dict]) -> None:
    for r in results:
        for line in r.get("checks", []):
            print(f"    {r['name']}: CHECK {line}")
        for line in r.get("notices", [])[:8]:
            print(f"    {r['name']}: {line}")
        if r.get("predict_failed"):
            print(f"    {r['name']}: scoring its saved model failed:\n{_tail(r['predict_failed'])}")


def workload_multilabel(work: Path, size: int, n: int, epochs: int) -> dict:
    root = build_multilabel(work / "multilabel", n=n, size=size)
    valid = json.loads((root / "valid.json").read_text())
    runs = root / "runs"
    runs.mkdir(exist_ok=True)
    print(f"[multilabel] {n} images of {size} px (2x2 grid, 1-3 digits), {len(valid)} valid; resnet18 from scratch, "
          f"{epochs} epochs, lr {LR}, bs {BS}", flush=True)
    fa = run_fastai("multilabel", root, size, epochs, runs, valid, multi=True)
    pc = run_petclf("petclf", [str(root / "labels.csv"), "--label-delim", " ", *_petclf_args(size, epochs)], runs,
                    valid, multi=True)
    print(f"  {'candidate':<10} {'wall s':>7} {'train s':>8} {'F1 micro':>9} {'F1 macro':>9} {'mAP':>7} "
          f"{'acc_multi':>9} {'best t':>6} {'F1u@best':>8}")
    for r in (fa, pc):
        s, summ = r.get("scores", {}), r.get("summary") or {}
        train_s = r.get("train_seconds", summ.get("train_seconds"))
        print(f"  {r['name']:<10} {_fmt(r.get('wall_s'), '7.1f')} {_fmt(train_s, '8.1f')} "
              f"{_fmt(s.get('f1_micro'), '9.4f')} {_fmt(s.get('f1_macro'), '9.4f')} {_fmt(s.get('map'), '7.4f')} "
              f"{_fmt(s.get('accuracy_multi'), '9.4f')} {_fmt(s.get('best_threshold'), '6.2f')} "
              f"{_fmt(s.get('f1_micro_best'), '8.4f')}")
    summ = pc.get("summary") or {}
    if summ:
        s = pc.get("scores", {})
        print(f"  petclf's summary.json: task {summ.get('task')} threshold {summ.get('threshold')} f1_micro "
              f"{_fmt(summ.get('f1_micro'))} f1_macro {_fmt(summ.get('f1_macro'))} map {_fmt(summ.get('map'))} "
              f"accuracy_multi {_fmt(summ.get('accuracy_multi'))} (its model rescored at that threshold: f1_micro "
              f"{_fmt(s.get('f1_micro_own'))} f1_macro {_fmt(s.get('f1_macro_own'))})")
    if "fastai_f1_micro" in fa:
        print(f"  (fastai's own F1ScoreMulti on the last epoch: {fa['fastai_f1_micro']:.4f}, accuracy_multi "
              f"{fa['fastai_accuracy_multi']:.4f}; scores above at threshold 0.5 unless marked best)")
    _print_notices([pc])
    targets = {}
    if "scores" in fa and "wall_s" in pc and not pc.get("failed"):
        targets["wall_ratio"] = pc["wall_s"] / fa["wall_s"]
        own = (pc.get("summary") or {}).get("f1_micro")
        if own is not None:
            targets["f1_micro_diff"] = own - fa["scores"]["f1_micro"]  # petclf as it reports vs fastai's recipe at 0.5
        if "scores" in pc:
            targets["f1_micro_diff_at_0.5"] = pc["scores"]["f1_micro"] - fa["scores"]["f1_micro"]
            targets["f1_micro_diff_best"] = pc["scores"]["f1_micro_best"] - fa["scores"]["f1_micro_best"]
    return {"data": str(root), "epochs": epochs, "size": size, "n": n, "n_valid": len(valid),
            "candidates": {"fastai": fa, "petclf": pc}, "targets": targets}


def workload_imbalance(work: Path, size: int, counts: tuple[int, ...], n_valid: int, epochs: int) -> dict:
    root = build_imbalance(work / "imbalance", counts=counts, n_valid=n_valid, size=size)
    valid = json.loads((root / "valid.json").read_text())
    runs = root / "runs"
    runs.mkdir(exist_ok=True)
    print(f"[imbalance] train {'/'.join(map(str, counts))} images for digits 0..9, valid {n_valid} a class; {size} px, "
          f"{epochs} epochs", flush=True)
    results = [run_fastai("folders", root, size, epochs, runs, valid, multi=False)]
    for balance in (None, "none", "sampler", "weights"):
        name = f"petclf_{balance or 'default'}"
        extra = [] if balance is None else ["--balance", balance]
        results.append(run_petclf(name, [str(root), *extra, *_petclf_args(size, epochs)], runs, valid, multi=False))
    small = [str(d) for d in np.argsort(counts, kind="stable")[:3]]
    print(f"  {'candidate':<16} {'wall s':>7} {'train s':>8} {'F1 macro':>9} {'bal acc':>8} {'acc':>7} "
          f"{'recall ' + ','.join(small):>22}   petclf's summary.json (f1_macro, balanced_accuracy, accuracy)")
    for r in results:
        s, summ = r.get("scores", {}), r.get("summary") or {}
        recalls = " ".join(_fmt(s.get("recall", {}).get(c), ".2f") for c in small)
        own = (f"{_fmt(summ.get('f1_macro'))} {_fmt(summ.get('balanced_accuracy'))} {_fmt(summ.get('accuracy'))}"
               + (f"  balance={r['config'].get('balance')}" if r.get("config") and "balance" in r["config"] else "")
               if summ else "")
        train_s = r.get("train_seconds", summ.get("train_seconds"))
        print(f"  {r['name']:<16} {_fmt(r.get('wall_s'), '7.1f')} {_fmt(train_s, '8.1f')} "
              f"{_fmt(s.get('f1_macro'), '9.4f')} {_fmt(s.get('balanced_accuracy'), '8.4f')} "
              f"{_fmt(s.get('accuracy'), '7.4f')} {recalls:>22}   {own}")
    _print_notices(results[1:])
    by = {r["name"]: r for r in results}
    f1 = {k: r["scores"]["f1_macro"] for k, r in by.items() if "scores" in r}
    targets = {}
    if "petclf_default" in f1:
        for other in ("petclf_none", "fastai"):
            if other in f1:
                targets[f"f1_macro_default_minus_{other.removeprefix('petclf_')}"] = f1["petclf_default"] - f1[other]
    return {"data": str(root), "epochs": epochs, "size": size, "counts": list(counts), "n_valid_per_class": n_valid,
            "smallest_classes": small, "candidates": by, "targets": targets}


def workload_table(work: Path, size: int, limit: int | None, epochs: int) -> dict:
    root = build_table(work / "table", limit=limit, size=size)
    valid = json.loads((root / "valid.json").read_text())
    runs = root / "runs"
    runs.mkdir(exist_ok=True)
    n_rows = len((root / "train.csv").read_text().splitlines()) - 1
    print(f"[table] {n_rows} digits at {size} px ({len(valid)} valid) as class folders and as train.csv + "
          f"train_images/; {epochs} epochs", flush=True)
    common = _petclf_args(size, epochs)
    folders = run_petclf("petclf_folders", [str(root / "folders"), *common], runs, valid, multi=False)
    table = run_petclf("petclf_csv", [str(root / "train.csv"), "--images", str(root / "train_images"), *common], runs,
                       valid, multi=False)
    print(f"  {'candidate':<15} {'wall s':>7} {'train s':>8} {'error':>7} {'n_train':>7} {'n_valid':>7} {'layout':>8} "
          f"{'best ep':>7}  (error: summary.json; rescored from the saved model)")
    for r in (folders, table):
        summ, s = r.get("summary") or {}, r.get("scores", {})
        print(f"  {r['name']:<15} {_fmt(r.get('wall_s'), '7.1f')} {_fmt(summ.get('train_seconds'), '8.1f')} "
              f"{_fmt(summ.get('error_rate'), '7.4f')} {summ.get('n_train', '-'):>7} {summ.get('n_valid', '-'):>7} "
              f"{summ.get('layout', '-'):>8} {summ.get('best_epoch', '-'):>7}  ({_fmt(s.get('error_rate'))})")
    _print_notices([folders, table])
    targets = {}
    a, b = folders.get("summary") or {}, table.get("summary") or {}
    if "error_rate" in a and "error_rate" in b:
        targets["error_diff"] = b["error_rate"] - a["error_rate"]
        targets["error_diff_images"] = round(targets["error_diff"] * len(valid))
        targets["same_counts"] = (a.get("n_train"), a.get("n_valid")) == (b.get("n_train"), b.get("n_valid"))
    return {"data": str(root), "epochs": epochs, "size": size, "n": n_rows, "n_valid": len(valid),
            "candidates": {"petclf_folders": folders, "petclf_csv": table}, "targets": targets}


# ---------------------------------------------------------------- parent

def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True).stdout
    return {"cpu": model, "cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "load_avg": [round(v, 2) for v in os.getloadavg()], "python": platform.python_version(),
            "torch": _version("torch"), "torchvision": _version("torchvision"), "fastai": _version("fastai"),
            "petclf": _version("petclf"), "petclf_commit": commit.strip()}


def _targets(results: dict) -> None:
    print("[targets]")
    t = results.get("multilabel", {}).get("targets", {})
    if "wall_ratio" in t:
        print(f"  multilabel  wall petclf/fastai {t['wall_ratio']:.2f} (target <= {WALL_TARGET}: "
              f"{'met' if t['wall_ratio'] <= WALL_TARGET else 'MISSED'})")
    if "f1_micro_diff" in t:
        print(f"  multilabel  micro-F1 petclf (its threshold) - fastai (0.5) {100 * t['f1_micro_diff']:+.2f} points "
              f"(target >= {100 * F1_TARGET:+.0f}: {'met' if t['f1_micro_diff'] >= F1_TARGET else 'MISSED'})")
    if "f1_micro_diff_at_0.5" in t:
        print(f"  multilabel  micro-F1 both at 0.5 {100 * t['f1_micro_diff_at_0.5']:+.2f} points; both at their best "
              f"global threshold on valid {100 * t['f1_micro_diff_best']:+.2f} points")
    t = results.get("imbalance", {}).get("targets", {})
    for key, value in t.items():
        print(f"  imbalance   macro-F1 petclf default - {key.rsplit('_', 1)[1]} {100 * value:+.2f} points")
    t = results.get("table", {}).get("targets", {})
    if "error_diff" in t:
        met = "met" if t["error_diff_images"] == 0 else "MISSED"
        print(f"  table       error csv - folders {t['error_diff']:+.4f} ({t['error_diff_images']:+d} images; "
              f"target 0: {met}); same train/valid counts: {t['same_counts']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="multilabel,imbalance,table")
    parser.add_argument("--work", default=None, help="data and runs (default: $TMPDIR/petclf-labels[-smoke])")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every workload (default 5, 8, 5)")
    parser.add_argument("--json", default=None, help="write every result to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny data, 32 px, 1 epoch: checks, not figures")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--files", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.child:
        out = Path(args.child_out)
        if args.child == "petclf_predict":
            result = child_petclf_predict(Path(args.model), json.loads(Path(args.files).read_text()), out)
        else:
            fn = {"fastai_multilabel": child_fastai_multilabel, "fastai_folders": child_fastai_folders}[args.child]
            result = fn(Path(args.data), args.size, args.epochs, out)
        out.with_suffix(".json").write_text(json.dumps(result))
        return
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(workloads) - set(EPOCHS)
    if unknown:
        parser.error(f"unknown workloads {', '.join(sorted(unknown))}: choose from {', '.join(EPOCHS)}")
    work = Path(args.work or os.path.join(tempfile.gettempdir(), "petclf-labels" + ("-smoke" if args.smoke else "")))
    work.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cpus']} cpus ({info['usable_cpus']} usable), load {info['load_avg']}, "
          f"python {info['python']}, torch {info['torch']}, torchvision {info['torchvision']}, "
          f"fastai {info['fastai']}, petclf {info['petclf']} ({info['petclf_commit']})"
          + (", SMOKE" if args.smoke else ""), flush=True)
    epochs = {w: 1 if args.smoke and args.epochs is None else args.epochs or EPOCHS[w] for w in EPOCHS}
    results: dict = {"machine": info, "smoke": args.smoke, "work": str(work)}
    start = time.perf_counter()
    if "multilabel" in workloads:
        results["multilabel"] = workload_multilabel(work, 32 if args.smoke else 96, 200 if args.smoke else 1600,
                                                    epochs["multilabel"])
    if "imbalance" in workloads:
        counts = tuple(max(2, c // 5) for c in COUNTS) if args.smoke else COUNTS
        results["imbalance"] = workload_imbalance(work, 32 if args.smoke else 64, counts, 6 if args.smoke else
                                                  VALID_PER_CLASS, epochs["imbalance"])
    if "table" in workloads:
        results["table"] = workload_table(work, 32 if args.smoke else 64, 200 if args.smoke else None, epochs["table"])
    _targets(results)
    results["seconds"] = time.perf_counter() - start
    print(f"total {results['seconds']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    failed = [f"{w}/{n}" for w in EPOCHS if w in results for n, r in results[w]["candidates"].items()
              if r.get("failed") or r.get("predict_failed")]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
