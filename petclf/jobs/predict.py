"""``petclf predict``: predictions for image files and folders, printed and written as a CSV table.

The predictor itself (``petclf.runtime.predict``) knows nothing of terminals or files; this job lists the images,
prints one line per image and writes the table.
"""
from __future__ import annotations

import csv as csv_module
import sys
from pathlib import Path
from typing import Sequence

from petclf.core.atomic import atomic_path
from petclf.core.destinations import output_file
from petclf.core.errors import UsageError, require_positive
from petclf.core.safe_text import csv_cell, printable
from petclf.data.listing import expand_images
from petclf.runtime.pickled import PickledPredictor
from petclf.runtime.predict import DEFAULT_TOPK, UNKNOWN, Predictor

__all__ = ["predict_files"]


def predict_files(model_dir: str | Path, inputs: Sequence[str | Path], *, topk: int | None = None,
                  csv: str | Path | None = None, bs: int = 64, trust_pickle: bool = False,
                  tta: bool | None = None, unknown: float | None = None, reject_unknown: bool = False,
                  backend: str = "torch", int8: bool = False, graph: str | Path | None = None) -> int:
    """Print predictions for image files and folders, as ``Predictor.predict`` makes them (top-k classes, or the
    labels over their thresholds for a multi-label model); unreadable files are reported, not fatal.

    A single-label model with an "unknown" detector adds each image's OOD score and flag (CSV columns
    ``ood_score`` and ``unknown``); ``reject_unknown`` answers ``unknown`` instead of classes for flagged
    images, and ``unknown`` sets the share of ordinary images accepted (see ``Predictor``).
    ``backend``/``int8``/``graph`` run the model's exported graph in ONNX Runtime or OpenVINO (see ``Predictor``).

    Returns 0 when every file was predicted, 1 when some could not be read.

    Example: ``predict_files("runs/pets/model", ["photos/"], csv="preds.csv")``.
    """
    require_positive(bs=bs)
    if topk is not None:
        require_positive(topk=topk)
    csv_path = output_file(csv) if csv is not None else None
    if Path(model_dir).is_file() and trust_pickle:
        ignored = [flag for flag, given in (("--tta", tta is not None), ("--unknown-accept", unknown is not None),
                                            ("--reject-unknown", reject_unknown), ("--backend", backend != "torch"),
                                            ("--int8", int8), ("--graph", graph is not None)) if given]
        if ignored:
            raise UsageError(f"--trust-pickle runs fastai's own Learner.predict, which has no {', '.join(ignored)}: "
                             "leave them out, or predict with a petclf model directory.")
        predictor = PickledPredictor(model_dir, trust=True)  # the fastai learner inside, behind Predictor's interface
    else:
        predictor = Predictor(model_dir, precision="auto", tta=tta, unknown=unknown, reject_unknown=reject_unknown,
                              backend=backend, int8=int8, graph=graph)
    files = expand_images(inputs)
    if not files:
        raise UsageError(f"no image files found in {printable(', '.join(map(str, inputs)))}.")
    rows, failed = [], []
    batches = predictor.iter_readable(files, bs=bs)
    if sys.stderr.isatty() and len(files) > bs:
        from fastprogress.fastprogress import progress_bar  # noqa: PLC0415 - only for a terminal

        batches = progress_bar(batches, total=-(-len(files) // bs))
    for batch in batches:
        failed += batch.failed
        probs = predictor.probabilities(batch.logits) if predictor.multi_label else None
        for k, (file, answer) in enumerate(zip(batch.items, predictor.answers(batch.logits, batch.ood, topk=topk))):
            top = answer.top
            rows.append((file, top, None if probs is None else probs[k].tolist(), answer))
            shown = ", ".join(f"{printable(label)} {p:.1%}" for label, p in top) or "no label over its threshold"
            if answer.unknown:
                shown = UNKNOWN if not top else f"{shown} ({UNKNOWN}: unlike the training images)"
            print(f"{printable(file)}: {shown}")
    for file, reason in failed:
        print(f"petclf: skipped {printable(file)}: {printable(reason)}", file=sys.stderr)
    if csv_path is not None:
        if predictor.multi_label:
            delim = (predictor.meta.get("data") or {}).get("label_delim") or ";"
            _write_label_sets(csv_path, rows, failed, classes=predictor.classes, delim=delim)
        else:
            _write_predictions(csv_path, rows, failed, topk=topk or DEFAULT_TOPK, scored=predictor.detector is not None)
    return 1 if failed else 0


def _write_predictions(path: Path, rows: list, failed: list, *, topk: int, scored: bool = False) -> None:
    """Single-label predictions; ``scored``: with the ``ood_score`` and ``unknown`` columns (a rejected image's
    ``label_1`` is ``unknown``, with no probability)."""
    # Whole or not at all; names are defused for spreadsheets (a file may be named '=HYPERLINK(...)').
    extra = ["ood_score", "unknown"] if scored else []
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv_module.writer(f)
        writer.writerow(["path"] + [c for k in range(1, topk + 1) for c in (f"label_{k}", f"prob_{k}")] + extra
                        + ["error"])
        for file, top, _, answer in rows:
            cells = [v for label, p in top for v in (csv_cell(label), f"{p:.6f}")]
            if answer.unknown and not top:
                cells = [UNKNOWN, ""]
            flags = [f"{answer.ood_score:.6f}", str(answer.unknown).lower()] if scored else []
            writer.writerow([csv_cell(str(file))] + cells + [""] * (2 * topk - len(cells)) + flags + [""])
        for file, reason in failed:
            writer.writerow([csv_cell(str(file))] + [""] * (2 * topk + len(extra)) + [csv_cell(reason)])


def _write_label_sets(path: Path, rows: list, failed: list, *, classes: Sequence[str], delim: str) -> None:
    """Multi-label predictions: the labels over their thresholds (joined by the training table's delimiter, as
    a table petclf reads), then every label's probability."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv_module.writer(f)
        writer.writerow(["path", "labels"] + [csv_cell(f"prob_{c}") for c in classes] + ["error"])
        for file, top, probs, _ in rows:
            writer.writerow([csv_cell(str(file)), csv_cell(delim.join(label for label, _ in top))]
                            + [f"{p:.6f}" for p in probs] + [""])
        for file, reason in failed:
            writer.writerow([csv_cell(str(file)), ""] + [""] * len(classes) + [csv_cell(reason)])
