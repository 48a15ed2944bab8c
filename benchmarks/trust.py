"""Probabilities you can trust and an honest "unknown": calibration and out-of-distribution scores on real photos.

Usage:
    python benchmarks/trust.py --model5 M5 --model3 M3 [--data flowers5] [--work DIR] [--timing] [--quick]

where M5 is a flowers5 model and M3 one trained on three of its classes (the other two are the near
out-of-distribution set), both by petclf's default transfer recipe, e.g.

    petclf train flowers5 --arch tf_efficientnet_lite0 --size 128 --out M5
    petclf train flowers3 --arch tf_efficientnet_lite0 --size 128 --out M3   # class folders daisy, dandelion, rose

It measures, with the validation split as the in-distribution images and each score fitted on the train split:

1. ECE (15 bins) of the softmax before and after petclf's temperature scaling, on valid (temperature fitted on all
   of valid), on a random half of valid never used for fitting (temperature fitted on the other half), and
   cross-fitted over all of valid (10 folds); beside each, the ECE that chance alone gives a perfectly calibrated
   model with the same confidences on as many images (``petclf.evaluate.calibration.ece_by_chance``);
2. for each out-of-distribution score (``petclf.runtime.ood``'s msp, energy, mahalanobis, knn with k from a
   grid, on the features at the last Linear's input and on the body's pooled features; and cleanlab's
   ``OutOfDistribution`` on features and on probabilities): AUROC and the false-positive rate at 95%
   in-distribution acceptance (share of foreign images accepted) against
   far sets — Fashion-MNIST test images, scikit-learn's digits, scikit-image's sample photos (upscaled, RGB) —
   and near: the two flower classes M3 never saw;
3. ``--timing``: each score's cost per image (ms, batch of 64 features, after the network) and the network's
   own per-image time for scale (run it on a quiet machine).

Targets (issue #24): far AUROC ≥ 0.98 and FPR@95 ≤ 10% with the chosen score; near AUROC ≥ 0.80; ECE ≤ 0.03.
``--quick`` uses a few images of each set to check that the script works.
"""
from __future__ import annotations

import argparse
import copy
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from petclf.evaluate.calibration import ece_by_chance
from petclf.runtime.modeldir import load_model
from petclf.runtime.ood import fit_ood_score, split_network, threshold_at_acceptance
from petclf.runtime.predict import Predictor
from petclf.runtime.temperature import expected_calibration_error as ece
from petclf.runtime.temperature import fit_temperature

FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
KNN_GRID = (1, 5, 10, 20, 50)


# ---------------------------------------------------------------- foreign images
def fashion_mnist(n: int, side: int) -> list[Image.Image]:
    """The first ``n`` Fashion-MNIST test images, upscaled to ``side`` px and RGB."""
    with gzip.open(FMNIST) as f:
        raw = f.read()
    count, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    pixels = np.frombuffer(raw, np.uint8, offset=16).reshape(count, rows, cols)[:n]
    return [Image.fromarray(p).resize((side, side), Image.BICUBIC).convert("RGB") for p in pixels]


def digits(n: int, side: int) -> list[Image.Image]:
    """scikit-learn's 8×8 digit scans (0..16 → 0..255), upscaled and RGB."""
    from sklearn.datasets import load_digits

    images = load_digits().images[:n]
    return [Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((side, side), Image.BICUBIC).convert("RGB")
            for im in images]


def skimage_photos() -> list[Image.Image]:
    """Every 2-D sample image scikit-image ships (those that need a download are skipped), RGB."""
    import skimage.data as data

    out = []
    for name in ("astronaut", "brick", "camera", "cat", "cell", "checkerboard", "chelsea", "clock", "coffee",
                 "coins", "colorwheel", "eagle", "grass", "gravel", "horse", "hubble_deep_field",
                 "immunohistochemistry", "lily", "logo", "microaneurysms", "moon", "page", "retina", "rocket",
                 "shepp_logan_phantom", "skin", "text"):
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - some need pooch and a network; this machine has none
            continue
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[..., :3]
        if image.dtype != np.uint8:
            image = image.astype(float)
            image = (255 * (image - image.min()) / max(float(image.max() - image.min()), 1e-9)).astype(np.uint8)
        if image.ndim in (2, 3):
            out.append(Image.fromarray(image).convert("RGB"))
    return out


def subset(files: list, labels: np.ndarray, limit: int | None, seed: int = 0) -> tuple[list, np.ndarray]:
    """A seeded random ``limit`` of (files, labels), in their order; all when ``limit`` is None."""
    if limit is None or limit >= len(files):
        return files, labels
    keep = np.sort(np.random.default_rng(seed).choice(len(files), limit, replace=False))
    return [files[i] for i in keep], labels[keep]


def class_files(root: Path, classes: tuple[str, ...], split: str) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for c, name in enumerate(classes):
        found = sorted((root / split / name).glob("*.jpg"))
        files += found
        labels += [c] * len(found)
    return files, np.array(labels)


# ---------------------------------------------------------------- network outputs
class _Everything(nn.Module):
    """One pass: [pooled body features | last Linear's input | logits]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.features, self.linear = split_network(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        body, head = self.features[0], self.features[1]
        pooled = head[:2](body(x))  # ConcatPool2d + flatten: the audit's embedding
        feats = head[2:](pooled)
        return torch.cat([pooled, feats, self.linear(feats)], 1)


def outputs(loaded, images: list, bs: int = 64) -> dict[str, np.ndarray]:
    net = _Everything(copy.deepcopy(loaded.model)).eval()
    d_pool = net.features[1][:2](net.features[0](torch.zeros(1, 3, 64, 64))).shape[1]
    d_feat, c = net.linear.in_features, net.linear.out_features
    names = [str(i) for i in range(d_pool + d_feat + c)]
    predictor = Predictor.from_network(net, names, loaded.pipeline, precision="fp32")
    rows = np.concatenate([z.numpy() for z in predictor.iter_logits(images, bs=bs)])
    return {"pooled": rows[:, :d_pool], "features": rows[:, d_pool:d_pool + d_feat],
            "logits": rows[:, d_pool + d_feat:]}


def cached_outputs(work: Path, name: str, loaded, images: list) -> dict[str, np.ndarray]:
    path = work / f"{name}.npz"
    if path.exists():
        return dict(np.load(path))
    start = time.perf_counter()
    out = outputs(loaded, images)
    print(f"  {name}: {len(images)} images in {time.perf_counter() - start:.0f} s", flush=True)
    np.savez(path, **out)
    return out


# ---------------------------------------------------------------- calibration
def softmax(z: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(z).double(), 1).numpy()


def crossfit(logits: np.ndarray, labels: np.ndarray, fold_of: np.ndarray) -> np.ndarray:
    """Calibrated probabilities of every image, each fold at a temperature fitted on the other folds' images
    (``fold_of``: each image's fold), so no image is calibrated by a fit on itself."""
    crossed = np.empty_like(logits, dtype=np.float64)
    for k in np.unique(fold_of):
        inside = fold_of == k
        crossed[inside] = softmax(logits[inside] / fit_temperature(logits[~inside], labels[~inside]))
    return crossed


def calibration(logits: np.ndarray, labels: np.ndarray, seed: int = 0, folds: int = 10) -> dict:
    """ECE before/after petclf's temperature: in-sample on valid, on a held-out half, and cross-fitted over all of
    valid (each fold's temperature fitted on the other folds); with each, the ECE chance alone gives a perfectly
    calibrated model with those confidences on as many images (mean and 95th percentile)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    fit, held = order[: len(order) // 2], order[len(order) // 2:]
    t_all = fit_temperature(logits, labels)
    t_half = fit_temperature(logits[fit], labels[fit])
    fold_of = np.empty(len(labels), dtype=int)
    for k, part in enumerate(np.array_split(order, folds)):
        fold_of[part] = k
    crossed = crossfit(logits, labels, fold_of)
    after_all, after_half = softmax(logits / t_all), softmax(logits[held] / t_half)
    chance = {name: ece_by_chance(p) for name, p in (("valid", after_all), ("heldout", after_half),
                                                      ("crossfit", crossed))}
    return {"temperature_valid": t_all, "ece_valid_before": ece(softmax(logits), labels),
            "ece_valid_after": ece(after_all, labels),
            "temperature_half": t_half, "ece_heldout_before": ece(softmax(logits[held]), labels[held]),
            "ece_heldout_after": ece(after_half, labels[held]),
            "ece_crossfit_after": ece(crossed, labels),
            **{f"ece_{name}_chance_mean": c[0] for name, c in chance.items()},
            **{f"ece_{name}_chance_p95": c[1] for name, c in chance.items()},
            "error_valid": float((logits.argmax(1) != labels).mean())}


# ---------------------------------------------------------------- scores
def auroc_fpr(inside: np.ndarray, foreign: np.ndarray, accept: float = 0.95) -> tuple[float, float]:
    from sklearn.metrics import roc_auc_score

    auroc = roc_auc_score(np.r_[np.zeros(len(inside)), np.ones(len(foreign))], np.r_[inside, foreign])
    limit = threshold_at_acceptance(torch.from_numpy(inside), accept)
    return float(auroc), float((foreign <= limit).mean())


def score_table(train: dict, labels: np.ndarray, sets: dict[str, dict], *, timing: bool) -> dict[str, dict]:
    """{score name: {set name: scores}} for every score, fitted on ``train``."""
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).float()  # noqa: E731
    fitted: dict[str, tuple] = {}
    y = torch.from_numpy(labels).long()
    for space in ("features", "pooled"):
        tag = "" if space == "features" else " (pooled body)"
        if space == "features":
            fitted["msp"] = (fit_ood_score("msp", features=t(train[space]), logits=t(train["logits"]), labels=y), space)
            fitted["energy"] = (fit_ood_score("energy", features=t(train[space]), logits=t(train["logits"]), labels=y),
                                space)
        fitted["mahalanobis" + tag] = (fit_ood_score("mahalanobis", features=t(train[space]),
                                                     logits=t(train["logits"]), labels=y), space)
        for k in KNN_GRID:
            fitted[f"knn k={k}{tag}"] = (fit_ood_score("knn", features=t(train[space]), logits=t(train["logits"]),
                                                       labels=y, k=k, max_bytes=2**40, half=False), space)
    # As fit_ood_score ships it: the bank in float16, subsampled to MAX_OOD_BYTES.
    fitted["knn k=10 (pooled body, float16, ≤ 20 MB)"] = (
        fit_ood_score("knn", features=t(train["pooled"]), logits=t(train["logits"]), labels=y, k=10), "pooled")
    out: dict[str, dict] = {}
    for name, (score, space) in fitted.items():
        with torch.inference_mode():
            out[name] = {s: score(t(v[space]), t(v["logits"])).numpy() for s, v in sets.items()}
        if timing:
            x, z = t(sets["valid"][space][:64]), t(sets["valid"]["logits"][:64])
            with torch.inference_mode():
                score(x, z)
                start = time.perf_counter()
                for _ in range(20):
                    score(x, z)
            out[name]["ms_per_image"] = (time.perf_counter() - start) / 20 / len(x) * 1000
        out[name]["bytes"] = sum(v.numel() * v.element_size() for v in score.tensors().values())
    out.update(cleanlab_scores(train, labels, sets))
    return out


def cleanlab_scores(train: dict, labels: np.ndarray, sets: dict[str, dict]) -> dict[str, dict]:
    """cleanlab's OutOfDistribution (its scores are 'higher = more typical': negated here)."""
    from cleanlab.outlier import OutOfDistribution

    out = {}
    for space in ("features", "pooled"):
        ood = OutOfDistribution()
        ood.fit(features=train[space], verbose=False)
        tag = "" if space == "features" else " (pooled body)"
        out["cleanlab features k=10" + tag] = {s: -ood.score(features=v[space]) for s, v in sets.items()}
    ood = OutOfDistribution()
    ood.fit(pred_probs=softmax(train["logits"]), labels=labels, verbose=False)
    out["cleanlab pred_probs"] = {s: -ood.score(pred_probs=softmax(v["logits"])) for s, v in sets.items()}
    return out


def figures(scores: dict[str, dict], foreign: tuple[str, ...]) -> dict[str, dict]:
    return {name: {s: auroc_fpr(per["valid"], per[s]) for s in foreign} for name, per in scores.items()}


def markdown(table: dict[str, dict], foreign: tuple[str, ...], extra: dict[str, dict]) -> str:
    head = "| score | " + " | ".join(f"{s} AUROC | {s} FPR@95" for s in foreign) + " | bytes | ms/image |"
    lines = [head, "|" + "---|" * (2 * len(foreign) + 3)]
    for name, per in table.items():
        cells = " | ".join(f"{per[s][0]:.4f} | {100 * per[s][1]:.1f}%" for s in foreign)
        bytes_, ms = extra[name].get("bytes", "—"), extra[name].get("ms_per_image")
        lines.append(f"| {name} | {cells} | {bytes_} | {'—' if ms is None else f'{ms:.4f}'} |")
    return "\n".join(lines)


def network_ms(loaded, images: list) -> float:
    net = Predictor.from_network(copy.deepcopy(loaded.model), loaded.classes, loaded.pipeline)
    pixels = net.pixels(images[:64])
    with torch.inference_mode():
        net.scores(pixels)
        start = time.perf_counter()
        for _ in range(3):
            net.scores(pixels)
    return (time.perf_counter() - start) / 3 / len(pixels) * 1000


# ---------------------------------------------------------------- audit outliers (issue #24, item 4)
def audit_case(work: Path, data: Path, *, arch: str, size: int, merge: tuple[str, str], foreign: int,
               quick: bool) -> dict:
    """The audit's outlier check on real embeddings (a pretrained body, as ``petclf audit`` uses by default):
    flowers5 train images with two classes merged into one label (a class of two clusters) and ``foreign``
    images (half scikit-image photos, half Fashion-MNIST) injected under random flower labels. Compares the
    distance to the nearest class centroid (the audit's old score) with the knn score, in-sample."""
    from petclf.audit.oof import centroid_distances, embed, knn_distances, pretrained_body
    from petclf.audit.outliers import OutlierSettings, _robust_z
    from petclf.core.options import TrainOptions
    from sklearn.metrics import average_precision_score, roc_auc_score

    classes = tuple(sorted(p.name for p in (data / "train").iterdir() if p.is_dir()))
    files, labels = class_files(data, classes, "train")
    if quick:
        files, labels = files[::40], labels[::40]
    codes = np.array([classes.index(merge[0]) if classes[c] == merge[1] else c for c in labels])
    extra = skimage_photos()[: foreign // 2] + fashion_mnist(foreign - foreign // 2, size)
    rng = np.random.default_rng(0)
    codes = np.r_[codes, rng.integers(0, len(classes), len(extra))]
    codes = np.unique(codes, return_inverse=True)[1]  # the merged class's code is gone: renumber
    is_foreign = np.r_[np.zeros(len(files), bool), np.ones(len(extra), bool)]
    path = work / f"audit_{arch}_{size}_{len(files)}_{len(extra)}.npy"
    if path.exists():
        feats = np.load(path)
    else:
        net, pipeline = pretrained_body(TrainOptions(arch=arch, size=size), len(classes))
        feats = embed(net, pipeline, [*files, *extra], precision="fp32")
        np.save(path, feats)
    n_classes = int(codes.max()) + 1
    in_merged = np.r_[np.isin(labels, [classes.index(m) for m in merge]), np.zeros(len(extra), bool)]
    out = {"images": len(files), "foreign": len(extra), "merged": list(merge)}
    limit = OutlierSettings().max_z
    candidates = {"centroid": centroid_distances(feats, codes, n_classes),
                  **{f"knn k={k}": knn_distances(feats, k=k) for k in KNN_GRID}}
    for name, dist in candidates.items():
        z = _robust_z(dist)
        flagged = z > limit
        top = np.argsort(-dist)[: len(extra)]
        out[name] = {"auroc": float(roc_auc_score(is_foreign, dist)),
                     "average_precision": float(average_precision_score(is_foreign, dist)),
                     "foreign_in_top_n": int(is_foreign[top].sum()),
                     "flagged": int(flagged.sum()), "flagged_foreign": int((flagged & is_foreign).sum()),
                     "merged_class_flagged": int((flagged & in_merged).sum()),
                     "foreign_z_min": float(z[is_foreign].min()), "foreign_z_median": float(np.median(z[is_foreign])),
                     "z_p99_of_flowers": float(np.quantile(z[~is_foreign], 0.99))}
        print(f"  audit outliers, {name}: {json.dumps(out[name])}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model5", type=Path, help="flowers5 model directory")
    parser.add_argument("--model3", type=Path, help="model of 3 of the 5 classes (near-OOD; without it: skipped)")
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/flowers5"))
    parser.add_argument("--work", type=Path, default=Path("trust-work"), help="cache of network outputs, results")
    parser.add_argument("--fmnist", type=int, default=1000, help="Fashion-MNIST test images")
    parser.add_argument("--digits", type=int, default=1797, help="scikit-learn digit scans (all: 1,797)")
    parser.add_argument("--train-limit", type=int, default=None,
                        help="fit the scores on this many training photos (a seeded random subset; default all)")
    parser.add_argument("--near-splits", default="train,valid", help="splits of the held-out classes used as near")
    parser.add_argument("--timing", action="store_true", help="also time each score (ms/image): quiet machine only")
    parser.add_argument("--quick", action="store_true", help="a few images of each set, to check the script")
    parser.add_argument("--audit-only", action="store_true", help="only the audit's outlier case (item 4)")
    parser.add_argument("--no-audit", action="store_true", help="leave the audit's outlier case out")
    parser.add_argument("--arch", default="tf_efficientnet_lite0", help="audit case: the pretrained body")
    parser.add_argument("--size", type=int, default=128, help="audit case: image side")
    parser.add_argument("--foreign", type=int, default=20, help="audit case: foreign images injected")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cap = 40 if args.quick else None
    results: dict = {}

    if not args.no_audit:
        results["audit_outliers"] = audit_case(args.work, args.data, arch=args.arch, size=args.size,
                                               merge=("daisy", "sunflower"), foreign=args.foreign, quick=args.quick)
    if args.audit_only:
        return
    if args.model5 is None:
        parser.error("--model5 is needed (all but --audit-only)")
    m5 = load_model(args.model5)
    side = m5.pipeline.presize
    train_files, train_labels = class_files(args.data, m5.classes, "train")
    valid_files, valid_labels = class_files(args.data, m5.classes, "valid")
    if cap:
        pick = lambda n: np.random.default_rng(0).permutation(n)[:cap]  # noqa: E731
        tr, va = pick(len(train_files)), pick(len(valid_files))
        train_files, train_labels = [train_files[i] for i in tr], train_labels[tr]
        valid_files, valid_labels = [valid_files[i] for i in va], valid_labels[va]
    far = {"fashion-mnist": fashion_mnist(cap or args.fmnist, side), "digits": digits(cap or args.digits, side),
           "skimage": skimage_photos()[: cap or None]}
    print(f"flowers5: {len(train_files)} train, {len(valid_files)} valid; far: "
          + ", ".join(f"{k} {len(v)}" for k, v in far.items()), flush=True)
    sets5 = {"valid": cached_outputs(args.work, "m5_valid", m5, valid_files)}
    for name, images in far.items():
        sets5[name] = cached_outputs(args.work, f"m5_{name}", m5, images)
    train_files, train_labels = subset(train_files, train_labels, args.train_limit)
    train5 = cached_outputs(args.work, f"m5_train{len(train_files)}", m5, train_files)
    results["calibration"] = calibration(sets5["valid"]["logits"], valid_labels)
    print(json.dumps(results["calibration"], indent=1), flush=True)
    scores5 = score_table(train5, train_labels, sets5, timing=args.timing)
    results["far"] = figures(scores5, tuple(far))
    print(markdown(results["far"], tuple(far), scores5), flush=True)

    if args.model3 is None:
        print("no --model3: near out-of-distribution figures skipped")
        (args.work / "trust.json").write_text(json.dumps(results, indent=1))
        return
    m3 = load_model(args.model3)
    held_out = tuple(c for c in m5.classes if c not in m3.classes)
    tr3, y3 = class_files(args.data, m3.classes, "train")
    va3, vy3 = class_files(args.data, m3.classes, "valid")
    near = [f for s in args.near_splits.split(",") for f in class_files(args.data, held_out, s)[0]]
    tr3, y3 = subset(tr3, y3, args.train_limit)
    if cap:  # random, so that every class is there
        (tr3, y3), (va3, vy3), near = subset(tr3, y3, cap), subset(va3, vy3, cap), near[:cap]
    print(f"near: model of {m3.classes}, {len(near)} images of {held_out}", flush=True)
    sets3 = {"valid": cached_outputs(args.work, "m3_valid", m3, va3),
             "near": cached_outputs(args.work, f"m3_near{len(near)}", m3, near)}
    train3 = cached_outputs(args.work, f"m3_train{len(tr3)}", m3, tr3)
    scores3 = score_table(train3, y3, sets3, timing=False)
    results["near"] = figures(scores3, ("near",))
    results["calibration_m3"] = calibration(sets3["valid"]["logits"], vy3)
    print(markdown(results["near"], ("near",), scores3), flush=True)
    if args.timing:
        results["network_ms_per_image"] = network_ms(m5, valid_files)
        print(f"network: {results['network_ms_per_image']:.2f} ms/image (batch 64, fp32 or auto precision)")
    results["sizes"] = {"train": len(train_files), "valid": len(valid_files), "near": len(near), "train3": len(tr3),
                        **{k: len(v) for k, v in far.items()}}
    (args.work / "trust.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {args.work / 'trust.json'}")


if __name__ == "__main__":
    main()
