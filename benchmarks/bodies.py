"""CPU cost of the bodies a CPU user would pick, as petclf builds them (body + fastai head): a training step
(forward, backward, AdamW step) and an inference batch, per image, in fp32 with and without channels-last and
in bf16 autocast with channels-last.

    python benchmarks/bodies.py                       # 224 px, batches of 16
    python benchmarks/bodies.py --size 128 --archs resnet18,tf_efficientnet_lite0
"""
from __future__ import annotations

import argparse
import os
import time

import torch

ARCHS = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2", "mobilenetv3_large_100",
         "resnet18", "resnet34", "resnet50", "convnext_tiny")
VARIANTS = (("fp32", False), ("fp32", True), ("bf16", True))  # (precision, channels-last)


def per_image(fn, *, bs: int, repeats: int) -> float:
    """Milliseconds per image of ``fn`` (one batch), the fastest of ``repeats`` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / bs * 1000


def measure(arch: str, *, size: int, bs: int, repeats: int) -> dict[str, float]:
    from petclf.learn.models import build_model

    out = {}
    for precision, channels_last in VARIANTS:
        model = build_model(arch, 10, pretrained=False).model
        x = torch.randn(bs, 3, size, size)
        y = torch.randint(0, 10, (bs,))
        if channels_last:
            model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            opt.step()

        def infer():
            with torch.no_grad(), autocast:
                model(x)

        name = f"{precision}{'+cl' if channels_last else ''}"
        model.train()
        out[f"train {name}"] = per_image(step, bs=bs, repeats=repeats)
        model.eval()
        out[f"infer {name}"] = per_image(infer, bs=bs, repeats=repeats)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--bs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--archs", default=",".join(ARCHS))
    args = parser.parse_args()
    print(f"ms per image at {args.size} px, batches of {args.bs}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    header = None
    for arch in args.archs.split(","):
        row = measure(arch, size=args.size, bs=args.bs, repeats=args.repeats)
        if header is None:
            header = list(row)
            print(f"{'body':<24}" + "".join(f"{h:>17}" for h in header), flush=True)
        print(f"{arch:<24}" + "".join(f"{row[h]:>17.1f}" for h in header), flush=True)


if __name__ == "__main__":
    main()
