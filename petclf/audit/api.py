"""``audit``: a labelled folder (or table) in; label issues, copies and outliers out, as DataFrames and files."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from petclf.core import log
from petclf.core.errors import UsageError
from petclf.core.options import DEFAULT_EPOCHS, TrainOptions
from petclf.data.dataset import LabelledImages
from petclf.data.layouts import find_dataset
from petclf.data.scan import scan_dataset, scan_files
from petclf.data.table import TableFormat
from petclf.audit.duplicates import NearCopySettings, find_duplicates
from petclf.audit.fingerprints import fingerprint_files
from petclf.audit.issues import find_label_issues, overlapping_classes
from petclf.audit.oof import (OutOfSample, assign_folds, embed, knn_distances, pretrained_body,
                              probabilities_from_features, probabilities_from_trainings)
from petclf.audit.outliers import OutlierSettings, find_outliers
from petclf.audit.report import folder_identity

__all__ = ["Audit", "audit"]

DEFAULT_FOLDS = 5


@dataclass(frozen=True)
class Audit:
    """What ``audit`` found: one DataFrame per kind of problem, plus what it cost.

    ``label_issues`` (path, given, suggested, score, …; most likely wrong first), ``duplicates``
    (one row per image in a group of copies: group, kind, leakage, conflicting), ``outliers``
    (reason far/blank/tiny, score), ``class_summary`` (per class: images, issues, copies, outliers),
    ``overlapping`` (class pairs cleanlab finds most confused), ``items`` (every flagged image once,
    as the review page and ``apply`` use them), ``counts``, ``seconds``, ``settings``.
    """

    dataset: LabelledImages = field(repr=False)
    label_issues: pd.DataFrame = field(repr=False)
    duplicates: pd.DataFrame = field(repr=False)
    outliers: pd.DataFrame = field(repr=False)
    class_summary: pd.DataFrame = field(repr=False)
    overlapping: pd.DataFrame = field(repr=False)
    items: pd.DataFrame = field(repr=False)
    probs: np.ndarray = field(repr=False)
    counts: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    out: Path | None = None

    def summary(self) -> str:
        c = self.counts
        return (f"{c['images']} images: {c['label_issues']} label issues, {c['duplicate_images']} images in "
                f"{c['duplicate_groups']} groups of copies ({c['leakage_groups']} across splits, "
                f"{c['conflicting_groups']} with different labels), {c['outliers']} outliers "
                f"({self.seconds['total']:.0f} s, {self.settings['method']})")


def _require_extras() -> None:
    import importlib.util  # noqa: PLC0415

    missing = [name for name in ("cleanlab", "imagehash") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"the audit needs {' and '.join(missing)}: pip install 'petclf[audit]' "
                         f"(or pip install {' '.join(missing)}).")


def _options(options: TrainOptions | None, layout: str, table: TableFormat | None, overrides: dict) -> TrainOptions:
    options = replace(options or TrainOptions(), **overrides)
    if table is not None:
        options = replace(options, images=table.images, fn_col=table.fn_col, label_col=table.label_col,
                          valid_col=table.valid_col, label_delim=table.label_delim)
    options = replace(options, layout=layout if layout != "auto" else options.layout)
    options.validate()
    if options.time_budget is not None:
        raise UsageError("audit does not take a time budget: it trains one model per fold. Set --epochs instead "
                         "(or audit with a trained model's embeddings: --model).")
    return options


def _oof(data, dataset: LabelledImages, codes, classes, fold, options: TrainOptions, model) -> OutOfSample:
    paths = list(dataset.frame.path)
    seconds = {}
    if model is not None or options.pretrained:
        start = time.perf_counter()
        if model is not None:
            from petclf.runtime.modeldir import load_model  # noqa: PLC0415

            loaded = load_model(model)
            network, pipeline, method = loaded.model, loaded.pipeline, "model"
        else:
            network, pipeline = pretrained_body(options, len(classes))
            method = "pretrained"
        features = embed(network, pipeline, paths, device=options.device, precision=options.precision)
        seconds["embeddings"] = time.perf_counter() - start
        start = time.perf_counter()
        probs = probabilities_from_features(features, codes, len(classes), fold, seed=options.seed)
        seconds["heads"] = time.perf_counter() - start
        distances = knn_distances(features)
        log.info(f"audit: embeddings of {len(paths)} images in {seconds['embeddings']:.1f} s, "
                 f"{int(fold.max()) + 1} fold heads in {seconds['heads']:.1f} s")
        return OutOfSample(probs, classes, distances, features, method, int(fold.max()) + 1, seconds)
    log.info(f"audit: {int(fold.max()) + 1} trainings from scratch ({options.arch}, {options.size} px, "
             f"{options.epochs or DEFAULT_EPOCHS} epochs each): about {int(fold.max()) + 1} times one training")
    probs, distances, seconds = probabilities_from_trainings(data, dataset, codes, classes, fold, options)
    return OutOfSample(probs, classes, distances, None, "trainings", int(fold.max()) + 1, seconds)


def _items(frame: pd.DataFrame, issues: pd.DataFrame, dups: pd.DataFrame, outliers: pd.DataFrame,
           suggested: np.ndarray, classes, checks: dict, root: Path) -> pd.DataFrame:
    """Every flagged image once, most telling first: label issues, copies, outliers."""
    order: list[int] = []
    what: dict[int, list[str]] = {}
    score: dict[int, float] = {}
    group: dict[int, int] = {}
    for r in issues.itertuples():
        order.append(r.row)
        what.setdefault(r.row, []).append(f"label: given {r.given}, suggested {r.suggested} ({r.p_suggested:.0%})")
        score[r.row] = r.score
    for r in dups.itertuples():
        flags = ", ".join(f for f, on in (("leakage", r.leakage), ("conflicting labels", r.conflicting)) if on)
        what.setdefault(r.row, []).append(f"{r.kind} copy, group {r.group}" + (f" ({flags})" if flags else ""))
        group[r.row] = int(r.group)
        score.setdefault(r.row, r.score)
        order.append(r.row)
    for r in outliers.itertuples():
        what.setdefault(r.row, []).append(f"outlier ({r.reason}): {r.detail}")
        score.setdefault(r.row, r.score)
        order.append(r.row)
    rows = list(dict.fromkeys(order))
    return pd.DataFrame({
        "item": range(len(rows)),
        "row": rows,
        "path": [os.path.relpath(frame.path.iat[k], root) for k in rows],
        "split": [frame.split.iat[k] for k in rows],
        "given": [frame.label.iat[k] for k in rows],
        "suggested": [classes[suggested[k]] for k in rows],
        "issues": ["; ".join(what[k]) for k in rows],
        "score": [float(score[k]) for k in rows],
        "group": [group.get(k, 0) for k in rows],
        "size": [checks[frame.path.iat[k]][0] for k in rows],
        "mtime_ns": [checks[frame.path.iat[k]][1] for k in rows],
        "digest": [checks[frame.path.iat[k]][2] for k in rows],
    })


def _class_summary(frame, classes, issues, dups, outliers) -> pd.DataFrame:
    table = pd.DataFrame(index=pd.Index(classes, name="class"))
    table["images"] = frame.label.value_counts().reindex(classes, fill_value=0)
    table["label_issues"] = issues.given.value_counts().reindex(classes, fill_value=0)
    table["suggested_into"] = issues.suggested.value_counts().reindex(classes, fill_value=0)
    table["issue_rate"] = (table.label_issues / table.images.clip(lower=1)).round(4)
    table["in_copies"] = dups.label.value_counts().reindex(classes, fill_value=0) if len(dups) else 0
    table["outliers"] = outliers.label.value_counts().reindex(classes, fill_value=0) if len(outliers) else 0
    return table.reset_index()


def audit(data, *, out: str | Path | None = None, model: str | Path | None = None, folds: int = DEFAULT_FOLDS,
          options: TrainOptions | None = None, layout: str = "auto", table: TableFormat | None = None,
          near: NearCopySettings = NearCopySettings(), outlier: OutlierSettings = OutlierSettings(),
          **train_options) -> Audit:
    """Audit the labelled images of ``data`` (any layout ``petclf train`` reads): label issues, copies, outliers.

    Probabilities come out of sample, by ``folds``-fold cross-validation: from ``model`` (a petclf
    model directory) or a pretrained body, as embeddings computed once with a fitted head per fold
    (seconds); with ``pretrained=False`` (``--no-pretrained``), from ``folds`` trainings with the
    train options (``options`` or keywords such as ``arch``, ``size``, ``epochs``, ``lr``). With
    ``out``, writes audit.csv, audit.json and audit.html there (``petclf review OUT`` then shows them).

    Example::

        found = petclf.audit("digits", model="runs/digits/model", out="audit")
        found.label_issues.head()      # path, given, suggested, score
    """
    _require_extras()
    started = time.perf_counter()
    seconds: dict = {}
    options = _options(options, layout, table, train_options)
    spec = TableFormat.from_fields(options)
    dataset = find_dataset(data, layout=options.layout, label_pat=options.label_pat, valid_pct=options.valid_pct,
                           seed=options.seed, table=spec)
    if dataset.multi_label:
        raise UsageError("the audit handles one label per image; this table has several (--label-delim). "
                         "Audit it without --label-delim only if each image really has one label.")
    scan = scan_dataset(dataset, strict=options.strict)
    dataset = scan.dataset
    frame = dataset.frame
    seconds["scan"] = time.perf_counter() - started
    classes = tuple(sorted(frame.label.unique()))
    codes = np.array([classes.index(label) for label in frame.label])
    fold = assign_folds(codes, folds, seed=options.seed)

    start = time.perf_counter()
    oof = _oof(data, dataset, codes, classes, fold, options, model)
    seconds["probabilities"] = time.perf_counter() - start
    seconds.update({f"probabilities_{k}": v for k, v in oof.seconds.items() if k != "lr"})

    start = time.perf_counter()
    issues = find_label_issues(frame, codes, oof.probs, classes)
    overlapping = overlapping_classes(codes, oof.probs, classes)
    seconds["label_issues"] = time.perf_counter() - start

    start = time.perf_counter()
    paths = list(frame.path)
    checks_list, _ = scan_files(paths, root=dataset.root)
    stamps = {p: os.stat(p) for p in paths}
    checks = {c.path: (stamps[c.path].st_size, stamps[c.path].st_mtime_ns, c.digest) for c in checks_list}
    prints = fingerprint_files(paths)
    seconds["fingerprints"] = time.perf_counter() - start
    start = time.perf_counter()
    dups = find_duplicates(frame, [checks[p][2] for p in paths], prints, oof.features, near)
    seconds["duplicates"] = time.perf_counter() - start
    outliers = find_outliers(frame, prints, oof.distances, outlier)

    suggested = oof.probs.argmax(1)
    items = _items(frame, issues, dups, outliers, suggested, classes, checks, dataset.root)
    summary = _class_summary(frame, classes, issues, dups, outliers)
    seconds["total"] = time.perf_counter() - started
    groups = dups.drop_duplicates("group") if len(dups) else dups
    counts = {
        "images": len(frame), "classes": len(classes), "label_issues": len(issues),
        "duplicate_images": len(dups), "duplicate_groups": int(len(groups)),
        "exact_groups": int((groups.kind == "exact").sum()) if len(groups) else 0,
        "leakage_groups": int(groups.leakage.sum()) if len(groups) else 0,
        "conflicting_groups": int(groups.conflicting.sum()) if len(groups) else 0,
        "outliers": len(outliers), "flagged_images": len(items), "skipped_files": len(scan.skipped),
        "oof_accuracy": float((suggested == codes).mean()),
    }
    settings = {
        "data": str(data) if not isinstance(data, pd.DataFrame) else "DataFrame",
        # Absolute and resolved: apply, undo and review may run from any folder (a relative root named
        # whatever folder of that name the shell was in).
        "root": str(Path(dataset.root).resolve()), "root_identity": folder_identity(dataset.root),
        "layout": dataset.layout, "classes": list(classes), "table": dataset.table.as_meta() if dataset.table else None,
        "table_file": (str(Path(data).expanduser().resolve()) if dataset.layout == "csv"
                       and not isinstance(data, pd.DataFrame) else None),
        "method": oof.method, "folds": oof.folds, "model": str(model) if model is not None else None,
        "train_options": {k: v for k, v in vars(options).items()},
        "lr": oof.seconds.get("lr"), "near_copies": vars(near), "outliers": vars(outlier),
    }
    found = Audit(dataset, issues, dups, outliers, summary, overlapping, items, oof.probs, counts, seconds, settings,
                  Path(out) if out is not None else None)
    if out is not None:
        from petclf.audit.report import write_audit  # noqa: PLC0415

        write_audit(found, Path(out))
    log.info(found.summary())
    return found
