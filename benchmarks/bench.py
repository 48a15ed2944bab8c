"""petclf against plain fastai, a plain PyTorch loop and the model-compute floor, side by side in one run.

Usage:  python benchmarks/bench.py [--workloads train,frozen,infer,time] [--work DIR] [--epochs 3]

It builds its own data (scikit-learn digits as 400×300 JPEG photos, Pets file names) and runs
every candidate in a fresh process, so peak memory (max RSS) is each one's own.

Workloads (resnet34, 128 px, batch 64, lr 2e-3 for everyone):
  train   full training from scratch, fit_one_cycle(epochs)
  frozen  5 frozen-body epochs on a body trained by the `train` workload (head-only training);
          petclf twice: with its feature cache (the default) and without it (fastai's way)
  infer   single-image latency (median of 20) and batch-64 throughput
The floor is the same network's forward+backward (or forward, for inference) on random tensors at
petclf's precision, for as many images as the candidate processed.

Workload `time` (time to accuracy; not in the default set, about 30 minutes on 2 cores): on the
400×300 photos (resnet34, 128 px) and on the digits as 64 px JPEGs (resnet18, 64 px), all from
scratch, batch 64, no flips (digits): plain fastai `fit_one_cycle(E, 3e-3)` for E = 3, 5, 8, the plain
PyTorch loop for 5 epochs, and `petclf train --time-budget B` with its defaults for B = 0.25, 0.5
and 1.0 × fastai's 5-epoch time. Every time is the whole command (a fresh process: imports, data,
training, evaluation, and for petclf its files), errors on each one's validation split.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARCH, SIZE, PRESIZE, BS, LR, PAT = "resnet34", 128, 192, 64, 2e-3, r"^(.+)_\d+\.jpg$"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _files(data: Path) -> list[Path]:
    return sorted(data.glob("*.jpg"))


# ---------------------------------------------------------------- candidates (run in a child process)

def fastai_train(data: Path, work: Path, epochs: int, *, arch: str = ARCH, size: int = SIZE, lr: float = LR,
                 flip: bool = True) -> dict:
    import torchvision
    from fastai.vision.all import ImageDataLoaders, Resize, aug_transforms, error_rate, vision_learner

    start = time.perf_counter()
    dls = ImageDataLoaders.from_name_re(data, _files(data), PAT, valid_pct=0.2, seed=42,
                                        item_tfms=Resize(size * PRESIZE // SIZE),
                                        batch_tfms=aug_transforms(size=size, do_flip=flip), bs=BS, num_workers=0)
    learn = vision_learner(dls, getattr(torchvision.models, arch), pretrained=False, metrics=error_rate)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, lr)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "images": epochs * len(dls.train_ds), "error": float(learn.validate()[1])}


def torch_train(data: Path, work: Path, epochs: int, *, arch: str = ARCH, size: int = SIZE, lr: float = LR) -> dict:
    import torch
    import torchvision
    from PIL import Image
    from torch import nn
    from torchvision import transforms as T

    start = time.perf_counter()
    files = _files(data)
    names = sorted({f.name.rsplit("_", 1)[0] for f in files})
    labels = [names.index(f.name.rsplit("_", 1)[0]) for f in files]
    g = torch.Generator().manual_seed(42)
    order = torch.randperm(len(files), generator=g).tolist()
    n_valid = int(0.2 * len(files))
    norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    train_tf = T.Compose([T.RandomResizedCrop(size, scale=(0.75, 1.0)), T.RandomRotation(10), T.ColorJitter(0.2, 0.2),
                          T.ToTensor(), norm])
    valid_tf = T.Compose([T.Resize(size * PRESIZE // SIZE), T.CenterCrop(size), T.ToTensor(), norm])

    class Folder(torch.utils.data.Dataset):
        def __init__(self, idx, tf):
            self.idx, self.tf = idx, tf

        def __len__(self):
            return len(self.idx)

        def __getitem__(self, i):
            j = self.idx[i]
            return self.tf(Image.open(files[j]).convert("RGB")), labels[j]

    train_dl = torch.utils.data.DataLoader(Folder(order[n_valid:], train_tf), batch_size=BS, shuffle=True, drop_last=True)
    valid_dl = torch.utils.data.DataLoader(Folder(order[:n_valid], valid_tf), batch_size=BS)
    model = getattr(torchvision.models, arch)(num_classes=len(names))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(train_dl))
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        for xb, yb in train_dl:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
            sched.step()
        model.eval()
        wrong = 0
        with torch.no_grad():
            for xb, yb in valid_dl:
                wrong += int((model(xb).argmax(1) != yb).sum())
    wall = time.perf_counter() - start
    return {"wall_s": wall, "images": epochs * len(train_dl) * BS, "error": wrong / n_valid}


def petclf_train(data: Path, work: Path, epochs: int) -> dict:
    from petclf import quick_learner, save_model, train
    from petclf.learn import run_settings

    start = time.perf_counter()
    learn = quick_learner(data, arch=ARCH, size=SIZE, bs=BS, pretrained=False)
    result = train(learn, epochs=epochs, lr=LR, progress=False)
    wall = time.perf_counter() - start
    save_model(learn, work / "petclf-model")
    return {"wall_s": wall, "images": epochs * len(learn.dls.train_ds), "error": float(result.best["error_rate"]),
            "precision": run_settings(learn).precision}


def _body_weights(work: Path) -> Path:
    """The petclf-trained body as a torchvision resnet34 state dict (the 'pretrained' weights of `frozen`)."""
    import torch
    from safetensors.torch import load_file

    names = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
    state = load_file(str(work / "petclf-model" / "model.safetensors"))
    body = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "0" and parts[1] in names:
            body[".".join([names[parts[1]], *parts[2:]])] = value
    path = work / "body.pth"
    torch.save(body, path)
    return path


def fastai_frozen(data: Path, work: Path, epochs: int) -> dict:
    import torch
    from fastai.vision.all import ImageDataLoaders, Resize, aug_transforms, error_rate, resnet34, vision_learner

    weights = torch.load(_body_weights(work), weights_only=True)
    start = time.perf_counter()
    dls = ImageDataLoaders.from_name_re(data, _files(data), PAT, valid_pct=0.2, seed=42, item_tfms=Resize(PRESIZE),
                                        batch_tfms=aug_transforms(size=SIZE), bs=BS, num_workers=0)
    learn = vision_learner(dls, resnet34, pretrained=False, metrics=error_rate)
    tv = torch.nn.Sequential(*list(learn.model[0].children()))
    remap = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    tv.load_state_dict({remap[k.split(".")[0]] + k[len(k.split(".")[0]):]: v for k, v in weights.items()})
    learn.freeze()
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(5, LR)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "images": 5 * len(dls.train_ds), "error": float(learn.validate()[1])}


def petclf_frozen(data: Path, work: Path, epochs: int) -> dict:
    from petclf import quick_learner
    from petclf.learn.features import train_head

    weights = _body_weights(work)
    start = time.perf_counter()
    learn = quick_learner(data, arch=ARCH, size=SIZE, bs=BS, weights=weights)
    head = train_head(learn, 5, LR, pct_start=0.25, show_bar=False)  # fit_one_cycle's default, as fastai_frozen
    wall = time.perf_counter() - start
    with head.no_bar():
        error = float(head.validate()[1])
    return {"wall_s": wall, "images": 5 * len(learn.dls.train_ds), "error": error}


def petclf_frozen_full(data: Path, work: Path, epochs: int) -> dict:
    """petclf's pipeline running the frozen epochs as fastai does: every image through the body, augmented."""
    from petclf import quick_learner

    weights = _body_weights(work)
    start = time.perf_counter()
    learn = quick_learner(data, arch=ARCH, size=SIZE, bs=BS, weights=weights)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(5, LR)
    wall = time.perf_counter() - start
    with learn.no_bar():
        error = float(learn.validate()[1])
    return {"wall_s": wall, "images": 5 * len(learn.dls.train_ds), "error": error}


def _median_latency(fn, path, n=20) -> float:
    for _ in range(3):
        fn(path)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn(path)
        times.append(time.perf_counter() - t)
    return sorted(times)[n // 2]


def petclf_infer(data: Path, work: Path, epochs: int) -> dict:
    from petclf import Predictor

    files = _files(data)[:320]
    pred = Predictor(work / "petclf-model")
    latency = _median_latency(lambda p: pred.predict(p), files[0])
    pred.predict_batch(files[:64], bs=64)
    t = time.perf_counter()
    pred.predict_batch(files, bs=64)
    wall = time.perf_counter() - t
    return {"latency_ms": latency * 1000, "throughput": len(files) / wall, "precision": pred.precision}


def fastai_infer(data: Path, work: Path, epochs: int) -> dict:
    from fastai.vision.all import ImageDataLoaders, Resize, aug_transforms, resnet34, vision_learner
    from safetensors.torch import load_file

    files = _files(data)
    dls = ImageDataLoaders.from_name_re(data, files, PAT, valid_pct=0.2, seed=42, item_tfms=Resize(PRESIZE),
                                        batch_tfms=aug_transforms(size=SIZE), bs=BS, num_workers=0)
    learn = vision_learner(dls, resnet34, pretrained=False)
    learn.model.load_state_dict(load_file(str(work / "petclf-model" / "model.safetensors")))
    files = files[:320]
    with learn.no_bar():
        latency = _median_latency(lambda p: learn.predict(p), files[0])
        learn.get_preds(dl=dls.test_dl(files[:64]))
        t = time.perf_counter()
        learn.get_preds(dl=dls.test_dl(files, bs=64))
        wall = time.perf_counter() - t
    return {"latency_ms": latency * 1000, "throughput": len(files) / wall}


def floor(data: Path, work: Path, epochs: int, *, kind: str, images: int, precision: str) -> dict:
    import torch

    from petclf.learn.models import build_model

    model = build_model(ARCH, 10, pretrained=False).model.to(memory_format=torch.channels_last)
    x = torch.randn(BS, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BS,))
    opt = torch.optim.AdamW(model.parameters(), lr=LR, fused=True)  # petclf's optimizer kernel
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    steps = max(1, images // BS)

    def step():
        if kind == "train":
            model.train()
            opt.zero_grad()
            with autocast:
                out = model(x)
            torch.nn.functional.cross_entropy(out.float(), y).backward()
            opt.step()
        else:
            model.eval()
            with torch.inference_mode(), autocast:
                model(x)

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    wall = time.perf_counter() - start
    return {"wall_s": wall, "images": steps * BS, "throughput": steps * BS / wall}


CANDIDATES = {"fastai_train": fastai_train, "torch_train": torch_train, "petclf_train": petclf_train,
              "fastai_frozen": fastai_frozen, "petclf_frozen": petclf_frozen,
              "petclf_frozen_full": petclf_frozen_full,
              "petclf_infer": petclf_infer, "fastai_infer": fastai_infer}


# ---------------------------------------------------------------- parent: run children, print the table

def _child(name: str, data: Path, work: Path, epochs: int, quiet: bool = False, **floor_args) -> dict:
    out = work / f"{name}.json"
    cmd = [sys.executable, __file__, "--child", name, "--work", str(work), "--epochs", str(epochs),
           "--data", str(data), "--floor-args", json.dumps(floor_args)]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="petclf-bench-cache-") as cache:  # cold caches, removed after
        proc = subprocess.run(cmd, env={**os.environ, "PETCLF_CACHE_DIR": cache}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    result = {**json.loads(out.read_text()), "command_s": time.perf_counter() - start}
    if quiet:
        return result
    print(f"  {name:<14} " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in result.items()), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="train,frozen,infer")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "petclf-bench"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--child", default=None)
    parser.add_argument("--floor-args", default="{}")
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    work = Path(args.work)
    data = Path(args.data) if args.data else work / "photos"
    warnings.filterwarnings("ignore")
    if args.child:
        sys.path.insert(0, str(HERE.parent))
        if args.child == "floor":
            result = floor(data, work, args.epochs, **json.loads(args.floor_args))
        else:
            result = CANDIDATES[args.child](data, work, args.epochs, **json.loads(args.floor_args))
        result["peak_rss_mb"] = _peak_mb()
        (work / f"{args.child}.json").write_text(json.dumps(result))
        return
    sys.path.insert(0, str(HERE))
    from photos import build_photos

    build_photos(data)
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    workloads = args.workloads.split(",")
    rows = {}
    if "train" in workloads or ("frozen" in workloads and not (work / "petclf-model").exists()):
        print(f"[train] resnet34 from scratch, {SIZE}px, bs {BS}, fit_one_cycle({args.epochs})")
        fa = _child("fastai_train", data, work, args.epochs)
        tl = _child("torch_train", data, work, args.epochs)
        pc = _child("petclf_train", data, work, args.epochs)
        fl = _child("floor", data, work, args.epochs, kind="train", images=pc["images"], precision=pc["precision"])
        rows["train"] = (fa, tl, pc, fl)
        print(f"  petclf/fastai wall {pc['wall_s'] / fa['wall_s']:.2f}  petclf/torch {pc['wall_s'] / tl['wall_s']:.2f}"
              f"  petclf/floor {pc['wall_s'] / fl['wall_s']:.2f}  floor/fastai {fl['wall_s'] / fa['wall_s']:.2f}"
              f"  RSS petclf/fastai "
              f"{pc['peak_rss_mb'] / fa['peak_rss_mb']:.2f}  error fastai {fa['error']:.4f} petclf {pc['error']:.4f}")
    if "frozen" in workloads:
        print("[frozen] 5 frozen-body epochs, head only")
        fa = _child("fastai_frozen", data, work, args.epochs)
        pc = _child("petclf_frozen", data, work, args.epochs)
        full = _child("petclf_frozen_full", data, work, args.epochs)
        print(f"  petclf/fastai wall {pc['wall_s'] / fa['wall_s']:.3f}  RSS petclf/fastai "
              f"{pc['peak_rss_mb'] / fa['peak_rss_mb']:.2f}  error fastai {fa['error']:.4f} petclf {pc['error']:.4f}"
              f"  (without the feature cache: wall {full['wall_s'] / fa['wall_s']:.3f} of fastai's,"
              f" error {full['error']:.4f})")
    if "infer" in workloads:
        print("[infer] single-image latency, batch-64 throughput")
        fa = _child("fastai_infer", data, work, args.epochs)
        pc = _child("petclf_infer", data, work, args.epochs)
        fl = _child("floor", data, work, args.epochs, kind="infer", images=320, precision=pc["precision"])
        print(f"  latency petclf/fastai {pc['latency_ms'] / fa['latency_ms']:.2f}  throughput petclf/floor "
              f"{pc['throughput'] / fl['throughput']:.2f}  petclf/fastai {pc['throughput'] / fa['throughput']:.2f}")
    if "time" in workloads:
        from petclf.data.digits import write_digits

        digits = work / "digits64"
        if not digits.exists():
            write_digits(digits, size=64)
        for name, folder, arch, size in (("photos", data, "resnet34", SIZE), ("digits64", digits, "resnet18", 64)):
            time_to_accuracy(name, folder, work, arch=arch, size=size)


def _petclf_budget(data: Path, work: Path, *, arch: str, size: int, budget: float) -> dict:
    """The whole ``petclf train --time-budget`` command, timed from outside, with petclf's defaults otherwise."""
    out = work / f"petclf-budget-{data.name}-{budget:.0f}"
    cmd = [sys.executable, "-m", "petclf.cli", "train", str(data), "--out", str(out), "--arch", arch, "--size",
           str(size), "--bs", str(BS), "--no-pretrained", "--augment", "no-flip", "--time-budget", f"{budget:.1f}s"]
    shutil.rmtree(out, ignore_errors=True)  # a fresh run, never a resumed one
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="petclf-bench-cache-") as cache:
        proc = subprocess.run(cmd, env={**os.environ, "PETCLF_CACHE_DIR": cache}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"petclf --time-budget {budget:.0f}s failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    plan = summary["budget"]
    return {"command_s": wall, "error": summary["error_rate"], "epochs": plan["epochs"],
            "steps": f"{plan['steps_per_epoch']}/{plan['full_epoch_steps']}", "lr": summary["lr"],
            "precision": summary["precision"]}


def time_to_accuracy(name: str, data: Path, work: Path, *, arch: str, size: int) -> None:
    """Error against whole-command time: fastai for 3, 5, 8 epochs, the PyTorch loop, petclf at three budgets."""
    print(f"[time] {name}: {arch} from scratch, {size} px, bs {BS}, no flips; whole-command seconds, valid error")
    spec = {"arch": arch, "size": size, "lr": 3e-3}
    rows = []
    fastai = {}
    for epochs in (3, 5, 8):
        fastai[epochs] = _child("fastai_train", data, work, epochs, quiet=True, flip=False, **spec)
        rows.append((f"fastai fit_one_cycle({epochs}, 3e-3)", fastai[epochs], ""))
    rows.append(("PyTorch loop, 5 epochs, 3e-3", _child("torch_train", data, work, 5, quiet=True, **spec), ""))
    t5 = fastai[5]["command_s"]
    for share in (0.25, 0.5, 1.0):
        run = _petclf_budget(data, work, arch=arch, size=size, budget=share * t5)
        rows.append((f"petclf --time-budget {share:g} x T5 = {share * t5:.0f}s", run,
                     f"{run['epochs']} epochs of {run['steps']} batches, lr {run['lr']:.2g}, {run['precision']}, "
                     f"wall/budget {run['command_s'] / (share * t5):.2f}"))
    for label, r, note in rows:
        print(f"  {label:<44} {r['command_s']:7.1f} s  error {r['error']:.4f}  {note}", flush=True)
    quarter = rows[-3][1]
    print(f"  target: petclf at 0.25 x T5 error {quarter['error']:.4f} vs fastai e5 {fastai[5]['error']:.4f} "
          f"({'met' if quarter['error'] <= fastai[5]['error'] else 'missed'})")


if __name__ == "__main__":
    main()
