"""The ``petclf`` command: parses arguments and calls the library.

Long on purpose: every command's arguments and the call they make, read in one place (no logic of its own).
"""
from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Sequence

from petclf.core.defaults import (AUGMENTS, BACKENDS, BALANCES, DEFAULT_CALIB_IMAGES, DEFAULT_LR,
                                  DEFAULT_MAX_INT8_DROP, DEFAULT_QUANTIZER, LAYOUTS, PRECISIONS, QUANTIZERS)
from petclf.core.errors import PetclfError, UsageError
from petclf.core.safe_text import printable

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["main"]

#: When the command began (before fastai and torch load): a time budget counts from here.
_STARTED = time.perf_counter()


def _add_train_options(p: argparse.ArgumentParser, *, evaluation: bool = True) -> None:
    """The options of a training run; ``evaluation=False`` leaves out those only the evaluation and the saved
    model use (--threshold, --tta), for commands that train but ignore them (the audit)."""
    from petclf.core.options import (DEFAULT_EPOCHS, DEFAULT_PRETRAINED_EPOCHS,  # noqa: PLC0415 - light: no fastai
                                     TrainOptions)

    d = TrainOptions()
    p.add_argument("--arch", default=d.arch, help="torchvision or timm model name (default %(default)s)")
    p.add_argument("--size", type=int, default=d.size, help="image side in pixels (default %(default)s)")
    p.add_argument("--bs", type=int, default=d.bs,
                   help="batch size per process/device; global batch = bs × processes (default %(default)s; "
                        "reduced, saying so, when the training set is smaller)")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help=f"epochs with all layers training (default {DEFAULT_EPOCHS} from scratch, "
                        f"{DEFAULT_PRETRAINED_EPOCHS} after a pretrained body's head, 0: the head alone; with "
                        "--time-budget: as many as fit, at most this many when given)")
    p.add_argument("--time-budget", type=_duration, default=d.time_budget, metavar="DURATION",
                   help="end the whole job within this time, e.g. 90s, 10m, 1h: epochs and batches per epoch "
                        "are planned from the measured speed")
    p.add_argument("--freeze-epochs", type=int, default=d.freeze_epochs,
                   help="head-only epochs before unfreezing; pretrained only, on cached body features "
                        "(default %(default)s)")
    p.add_argument("--patience", type=int, default=d.patience,
                   help="stop the all-layer epochs after this many in a row without a new best validation "
                        "error; 0: never (default %(default)s)")
    p.add_argument("--lr", type=float, default=None,
                   help=f"learning rate, used as given in every process (default {DEFAULT_LR:g}; fine-tuning's "
                        "base rate for a pretrained body)")
    p.add_argument("--lr-find", action="store_true",
                   help="choose the learning rate with lr_find and plot it (lr_find.png); costs a short training")
    _add_data_options(p)
    p.add_argument("--balance", default=d.balance, choices=BALANCES,
                   help="skewed classes: sampler draws classes equally often, weights weights the loss "
                        "(default %(default)s)")
    if evaluation:
        # None when not given: single-label training refuses it rather than ignore it (TrainOptions says 'auto').
        p.add_argument("--threshold", type=_threshold, default=None,
                       help="multi-label (--label-delim) decision threshold: auto (best micro-F1 on valid), "
                            f"per-label, or a number (default {d.threshold})")
    p.add_argument("--no-pretrained", action="store_true", help="train from scratch (no weights download)")
    p.add_argument("--weights", default=None, help="local weights file for the body (.pth or .safetensors)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: fastest available)")
    p.add_argument("--precision", default=d.precision, choices=PRECISIONS)
    p.add_argument("--augment", default=d.augment, choices=AUGMENTS)
    if evaluation:
        p.add_argument("--tta", action="store_true",
                       help="evaluate each image and its mirror (flip-invariant photos; the saved model predicts so "
                            "too)")
    if evaluation:
        p.add_argument("--unknown-accept", type=float, default=d.unknown_accept, metavar="SHARE",
                       help="single-label: set the 'unknown' threshold so that this share of validation images "
                            "stays known (default %(default)s)")
    p.add_argument("--no-image-cache", action="store_true",
                   help="decode images every epoch instead of caching them pre-resized on disk")
    p.add_argument("--no-feature-cache", action="store_true",
                   help="run frozen epochs through the whole body (with augmentation) instead of on cached features")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    """How to read and split the data, as every command that reads a labelled folder takes it; defaults and help
    are TrainOptions' (its fields' metadata)."""
    from petclf.core.options import TrainOptions  # noqa: PLC0415 - light: no fastai

    d, about = TrainOptions(), {f.name: f.metadata.get("help", "") for f in fields(TrainOptions)}
    p.add_argument("--valid-pct", type=float, default=d.valid_pct, help=about["valid_pct"] + " (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help=about["seed"] + " (default %(default)s)")
    p.add_argument("--label-pat", default=d.label_pat, help=about["label_pat"])
    p.add_argument("--layout", default=d.layout, choices=LAYOUTS, help=about["layout"])
    p.add_argument("--strict", action="store_true", default=d.strict, help=about["strict"])
    _add_table_options(p)


def _add_table_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("tables", "when PATH is a CSV/TSV file of file names and labels")
    group.add_argument("--images", default=None, help="folder the file names are relative to (default: the table's)")
    group.add_argument("--fn-col", default=None, help="file name column (default: fname, file_name, image_id, ...)")
    group.add_argument("--label-col", default=None, help="label column (default: label, labels, class, target, ...)")
    group.add_argument("--valid-col", default=None, help="split column: is_valid (true/false) or split "
                                                         "(train/valid/test) (default: found by those names)")
    group.add_argument("--label-delim", default=None,
                       help="splits a label cell into several labels, e.g. ' ': multi-label training")


def _add_backend_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="torch", choices=BACKENDS,
                   help="runtime of the forward pass: torch, or the exported ONNX graph in onnxruntime or openvino "
                        "(default %(default)s)")
    p.add_argument("--int8", action="store_true",
                   help="run the model's int8 graph (MODEL_DIR/model.int8.onnx from `petclf export --int8`)")


def _add_unknown_accept(p: argparse.ArgumentParser) -> None:
    """--unknown-accept as the commands that use a saved model take it (`predict`, `serve`): None keeps the
    model's own acceptance; the library checks the range (exit 2)."""
    from petclf.core.defaults import MIN_UNKNOWN_ACCEPT  # noqa: PLC0415

    p.add_argument("--unknown-accept", type=float, default=None, metavar="SHARE",
                   help=f"share ({MIN_UNKNOWN_ACCEPT:g}-1) of ordinary images to keep known, moving the 'unknown' "
                        "threshold of a model with a detector (default: as the model was trained)")


def _threshold(text: str) -> str | float:
    from petclf.core.defaults import THRESHOLD_MODES  # noqa: PLC0415

    if text in THRESHOLD_MODES:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {' or '.join(THRESHOLD_MODES)} or a number between 0 and 1, "
                                         f"not {text!r}") from None


def _duration(text: str) -> float:
    from petclf.core.options import parse_duration  # noqa: PLC0415

    try:
        return parse_duration(text)
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _table_spec(args: argparse.Namespace):
    from petclf.data.table import TableFormat  # noqa: PLC0415

    return TableFormat.from_fields(args)


def _options(args: argparse.Namespace):
    from petclf.core.options import TrainOptions  # noqa: PLC0415

    names = {f.name for f in fields(TrainOptions)} - {"pretrained", "image_cache", "feature_cache"}
    # An option not given (None) or not offered by this command takes TrainOptions' default.
    values = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return TrainOptions(pretrained=not args.no_pretrained, image_cache=False if args.no_image_cache else None,
                        feature_cache=not args.no_feature_cache, **values)


def _cmd_train(args: argparse.Namespace) -> int:
    from petclf.jobs.run import train_folder  # noqa: PLC0415

    from petclf.core.processes import is_main  # noqa: PLC0415

    if args.threshold is not None and args.label_delim is None:
        # From the command line only a table read with --label-delim is multi-label; elsewhere the most likely
        # class wins and a threshold would be ignored without a word.
        raise UsageError(f"--threshold {args.threshold} applies to multi-label training (a table read with "
                         "--label-delim), where each label has a sigmoid to compare with it; this data is "
                         "single-label, where the most likely class wins: drop --threshold.")
    run = train_folder(args.path, out=args.out, options=_options(args), resume=True if args.resume else None,
                       started=_STARTED)
    if is_main():
        print(f"model: {run.model_dir}\nsummary: {run.out / 'summary.json'}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from petclf.jobs.demo import DEMO_OPTIONS, run_demo  # noqa: PLC0415

    options = DEMO_OPTIONS if args.epochs is None else replace(DEMO_OPTIONS, epochs=args.epochs)
    demo = run_demo(args.out, options=options)
    s, out = demo.run.summary, demo.run.out
    top = ", ".join(f"{label} {p:.1%}" for label, p in demo.prediction)
    print(f"\nvalidation error rate {s['error_rate']:.2%} on {s['n_valid']} images "
          f"({s['arch']}, {s['device']}, {s['precision']}, {s['seconds']:.0f} s)")
    print(f"prediction for {demo.image.name}: {top}")
    print(f"files in {out}:")
    for name in ("report.html", "model", "summary.json", "history.csv", "metrics.json", "per_class.csv",
                 "most_confused.csv", "confusion_matrix.png", "top_losses.png", "top_losses_heatmaps.png",
                 "lr_find.png", "loss.png"):
        if (out / name).exists():
            print(f"  {out / name}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from petclf.jobs.predict import predict_files  # noqa: PLC0415

    return predict_files(args.model_dir, args.images, topk=args.topk, csv=args.csv, trust_pickle=args.trust_pickle,
                         tta=args.tta, unknown=args.unknown_accept, reject_unknown=args.reject_unknown,
                         backend=args.backend, int8=args.int8, graph=args.graph)


def _cmd_explain(args: argparse.Namespace) -> int:
    from petclf.jobs.explain import explain_files  # noqa: PLC0415

    index = explain_files(args.model_dir, args.images, out=args.out, label=args.class_name, topk=args.topk,
                          device=args.device)
    print(f"heat maps: {printable(str(index.parent))} (index: {printable(str(index))})")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from petclf.runtime.targets import export_model, written_bytes  # noqa: PLC0415

    if args.onnx and (args.format or args.out):
        raise UsageError("pass either --onnx OUT.onnx or --format FORMAT --out PATH, not both.")
    if args.onnx:
        args.format, args.out = "onnx", args.onnx
    if args.int8:
        from petclf.runtime.quantize import export_int8  # noqa: PLC0415

        if args.format not in (None, "onnx"):
            raise UsageError(f"--int8 writes an ONNX graph (run it with --backend onnxruntime or openvino); "
                             f"--format {args.format} has no int8 export here: leave out --format.")
        if args.dtype != "uint8":
            raise UsageError("--int8 graphs take uint8 pixels: leave out --dtype.")
        result = export_int8(args.model_dir, args.out, calib=args.calib, valid=args.valid, quantizer=args.quantizer,
                             max_drop=args.max_drop, calib_images=args.calib_images)
        print(f"int8 onnx: {result.path} ({result.path.stat().st_size / 1e6:.1f} MB); {result.summary()}")
        return 0
    if args.calib or args.valid:
        raise UsageError("--calib and --valid calibrate and check an int8 export: add --int8.")
    if not args.format or not args.out:
        raise UsageError("say what to export: --format onnx|openvino|tflite|coreml --out PATH (or --onnx OUT.onnx, "
                         "or --int8)")
    path = export_model(args.model_dir, args.out, format=args.format, dtype=args.dtype)
    print(f"{args.format}: {path} ({written_bytes(path) / 1e6:.1f} MB)")
    return 0


#: `petclf check` lists this many skipped (and converted) files; a longer list is counted by reason and written whole
#: to a CSV file (a 200 MB table can skip millions of rows).
CHECK_SHOWN = 20


def _print_listed(frame: pd.DataFrame, *, column: str, tag: str, what: str, out: str) -> None:
    """The first ``CHECK_SHOWN`` rows of ``frame`` (path, ``column``), then counts by reason and where the whole
    list is."""
    from petclf.core.destinations import output_dir  # noqa: PLC0415
    from petclf.core.safe_text import csv_safe  # noqa: PLC0415
    from petclf.data.scan import count_reasons  # noqa: PLC0415

    for row in frame.head(CHECK_SHOWN).itertuples():
        print(f"{tag:<8} {printable(row.path)}: {printable(getattr(row, column))}")
    if len(frame) <= CHECK_SHOWN:
        return
    path = output_dir(out, what="the full lists of `petclf check`") / f"{what}.csv"
    csv_safe(frame[["path", column]]).to_csv(path, index=False)
    counts = "; ".join(f"{printable(kind)}: {n:,}" for kind, n in count_reasons(frame[column])[:10])
    print(f"{'':<8} … and {len(frame) - CHECK_SHOWN:,} more {what} ({len(frame):,} in all: {counts}); "
          f"the whole list: {printable(path)}")


def _cmd_check(args: argparse.Namespace) -> int:
    from petclf.data.scan import check_folder, class_table  # noqa: PLC0415

    from pathlib import Path  # noqa: PLC0415

    if Path(args.out).expanduser().is_file():  # found now, not after a scan of millions of files
        raise UsageError(f"--out {args.out} is a file: expected a folder for the lists of skipped and converted "
                         "files (it is created only when they are too long to print).")
    # The report below is what `check` says: the scan's own log lines would say its summary and warnings twice.
    report = check_folder(args.path, layout=args.layout, label_pat=args.label_pat, valid_pct=args.valid_pct,
                          seed=args.seed, strict=args.strict, table=_table_spec(args), log_results=False)
    print(printable(report.dataset.describe()))
    print(report.summary())
    for line in class_table(report.dataset).to_string().splitlines():  # line by line: printable escapes newlines
        print(printable(line))
    _print_listed(report.skipped, column="reason", tag="skipped", what="skipped", out=args.out)
    _print_listed(report.notes, column="note", tag="note", what="converted", out=args.out)
    for problem in report.warnings:
        print(f"warning  {printable(problem)}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from petclf.evaluate.report import report_saved_model  # noqa: PLC0415

    page = report_saved_model(args.model_dir, args.data, split=args.split, out=args.out, layout=args.layout,
                              label_pat=args.label_pat, images=args.images, heatmaps=args.heatmaps)
    print(f"report: {page}")
    return 0


def _cmd_prepare_caltech10(args: argparse.Namespace) -> int:
    from petclf.data.caltech import prepare_caltech10  # noqa: PLC0415

    counts = prepare_caltech10(args.src, args.dst)
    print(f"{args.dst}: " + ", ".join(f"{n} {split}" for split, n in counts.items()) + " images")
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    from petclf.jobs.zoo import classify  # noqa: PLC0415

    for image, top in zip(args.images, classify(args.images, arch=args.arch, weights=args.weights, topk=args.topk)):
        print(f"{printable(image)}:")
        for label, p in top:
            print(f"  {p:7.2%}  {label}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from petclf.jobs.zoo import DEFAULT_COMPARE, compare_to  # noqa: PLC0415

    table, csv, chart = compare_to(args.out, args.archs.split(",") if args.archs else DEFAULT_COMPARE, runs=args.runs)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"table: {csv}  chart: {chart}")
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from petclf.data.cachedir import cache_usage, clear_cache  # noqa: PLC0415

    if args.action == "clear":
        print(f"removed {clear_cache() / 1e6:.1f} MB")
    print(cache_usage())
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from petclf.serve import ServeOptions, serve  # noqa: PLC0415 - no fastai: serving uses the runtime only

    options = ServeOptions(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_body_mb=args.max_body_mb,
                           max_images=args.max_images, timeout_s=args.timeout, precision=args.precision,
                           device=args.device, cors_origins=tuple(args.cors_origin), access_log=not args.no_access_log,
                           allowed_hosts=tuple(args.allowed_host), max_decode_mpx=args.max_decode_mpx,
                           max_header_kb=args.max_header_kb, header_timeout_s=args.header_timeout,
                           backend=args.backend, int8=args.int8, unknown_accept=args.unknown_accept,
                           streams=args.streams)
    serve(args.model_dirs, host=args.host, port=args.port, options=options)
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from petclf.audit.api import audit  # noqa: PLC0415

    found = audit(args.path, out=args.out, model=args.model, folds=args.folds, options=_options(args))
    print(printable(found.summary()))
    for name in ("audit.html", "audit.csv", "audit.json"):
        print(f"  {printable(found.out / name)}")
    print(f"review and decide: petclf review {printable(found.out)}")
    return 0


def _cmd_review(args: argparse.Namespace) -> int:
    from petclf.audit.review import serve_review  # noqa: PLC0415

    serve_review(args.dir, port=args.port, open_browser=args.open, host=args.host)
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    from petclf.audit.apply import apply_decisions, undo  # noqa: PLC0415

    if (args.decisions is None) == (args.undo is None):
        raise UsageError("pass DIR/decisions.csv to apply, or --undo JOURNAL to put a change back (not both).")
    result = undo(args.undo) if args.undo else apply_decisions(args.decisions, dry_run=args.dry_run,
                                                               whole_groups=args.remove_whole_groups)
    for line in result.applied:
        print(f"{'would ' if result.dry_run else ''}{printable(line)}")
    for line in result.skipped:
        print(f"skipped  {printable(line)}")
    for line in result.refused:
        print(f"refused  {printable(line)}")
    print(result.summary() + (f"; journal {printable(result.journal)} (petclf apply --undo it)"
                              if result.journal and not args.undo else ""))
    return 1 if result.refused else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="petclf", description="Train, judge and ship image classifiers.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    from petclf import __version__  # noqa: PLC0415

    parser.add_argument("--version", action="version", version=f"petclf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a classifier on a folder of images")
    train.add_argument("path", help="image folder (Pets file names, train/valid(/test) folders, or class folders), "
                                    "or a CSV/TSV file of file names and labels")
    train.add_argument("--out", default="petclf-out", help="output directory (default %(default)s)")
    train.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in --out (also automatic when a checkpoint is there)")
    _add_train_options(train)
    train.set_defaults(func=_cmd_train)

    check = sub.add_parser("check", help="scan an image folder: unreadable files, conversions, leakage")
    check.add_argument("path", help="image folder or label table, in any layout `petclf train` reads")
    _add_data_options(check)
    check.add_argument("--out", default="petclf-check",
                       help=f"where the whole lists go (skipped.csv, converted.csv) when they are longer than "
                            f"{CHECK_SHOWN} files (default %(default)s)")
    check.set_defaults(func=_cmd_check)

    demo = sub.add_parser("demo", help="the whole job on scikit-learn's handwritten digits (offline)")
    demo.add_argument("--out", default="petclf-demo", help="work directory (default %(default)s)")
    demo.add_argument("--epochs", type=int, default=None, help="override the demo's epochs")
    demo.set_defaults(func=_cmd_demo)

    predict = sub.add_parser("predict", help="top-k classes (multi-label: labels over threshold) with a saved model")
    predict.add_argument("model_dir", help="model directory written by `petclf train` (OUT/model)")
    predict.add_argument("images", nargs="+", help="image files or folders")
    predict.add_argument("--topk", type=int, default=None,
                         help="classes per image (default 3; multi-label: the labels over their thresholds)")
    predict.add_argument("--csv", default=None, help="also write the predictions to this CSV file")
    predict.add_argument("--trust-pickle", action="store_true",
                         help="allow MODEL to be a fastai export.pkl; unpickling runs code from the file")
    predict.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                         help="also score each image's mirror (default: as the model was trained, --tta or not)")
    predict.add_argument("--reject-unknown", action="store_true",
                         help="answer 'unknown' instead of classes for images unlike the training images")
    _add_unknown_accept(predict)
    _add_backend_options(predict)
    predict.add_argument("--graph", default=None, metavar="ONNX",
                         help="run this exported ONNX graph (from `petclf export`) with --backend")
    predict.set_defaults(func=_cmd_predict)

    explain = sub.add_parser("explain", help="heat maps (Grad-CAM) of where a saved model looked, one PNG per image")
    explain.add_argument("model_dir", help="model directory written by `petclf train` (OUT/model)")
    explain.add_argument("images", nargs="+", help="image files or folders")
    explain.add_argument("--out", required=True, help="folder for the overlays (PNG), raw maps (.npy) and index.csv")
    explain.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                         help="explain this class (default: the predicted one)")
    explain.add_argument("--topk", type=int, default=None,
                         help="explain the K most likely classes (default: the predicted one; multi-label: every "
                              "label over its threshold, else the most likely)")
    explain.add_argument("--device", default=None, help="cpu, cuda, mps (default: the fastest here)")
    explain.set_defaults(func=_cmd_explain)

    export = sub.add_parser("export", help="export a saved model (ONNX, OpenVINO, TFLite, Core ML; preprocessing "
                                           "inside)")
    export.add_argument("model_dir", help="model directory written by `petclf train` (OUT/model)")
    export.add_argument("--format", default=None, help="onnx, openvino, tflite or coreml (each needs its extra: "
                                                       "pip install 'petclf[FORMAT]')")
    export.add_argument("--out", default=None, help="where to write it (.onnx, .xml, .tflite, .mlpackage)")
    export.add_argument("--onnx", default=None, help="write an ONNX file here (same as --format onnx --out OUT)")
    export.add_argument("--dtype", default="uint8", choices=["uint8", "float32"], help="pixel input type")
    export.add_argument("--int8", action="store_true",
                        help="quantize to int8 (to --onnx, default MODEL_DIR/model.int8.onnx); refused when validation "
                             "top-1 drops more than --max-drop")
    export.add_argument("--calib", default=None, metavar="DIR",
                        help="calibration images (default: the run's training split, from split.json)")
    export.add_argument("--valid", default=None, metavar="DIR",
                        help="validation images, one sub-folder per class (default: the run's validation split)")
    export.add_argument("--max-drop", type=float, default=DEFAULT_MAX_INT8_DROP,
                        help="largest top-1 loss allowed, in percentage points (default %(default)s)")
    export.add_argument("--quantizer", default=DEFAULT_QUANTIZER, choices=QUANTIZERS,
                        help="who quantizes (default %(default)s)")
    export.add_argument("--calib-images", type=int, default=DEFAULT_CALIB_IMAGES,
                        help="calibration images used (default %(default)s)")
    export.set_defaults(func=_cmd_export)

    caltech = sub.add_parser("prepare-caltech10", help="build the 10-animal Caltech-256 subset (train/valid/test)")
    caltech.add_argument("src", help="Caltech-256 download: the folder holding 256_ObjectCategories/")
    caltech.add_argument("dst", help="where to write train/, valid/ and test/")
    caltech.set_defaults(func=_cmd_prepare_caltech10)

    classify = sub.add_parser("classify", help="ImageNet top-k labels from a pretrained torchvision model")
    classify.add_argument("images", nargs="+")
    classify.add_argument("--arch", default="resnet101")
    classify.add_argument("--weights", default=None, help="local torchvision weight file (offline use)")
    classify.add_argument("--topk", type=int, default=5)
    classify.set_defaults(func=_cmd_classify)

    compare = sub.add_parser("compare", help="parameters, size, GFLOPs, latency and ImageNet error of networks")
    compare.add_argument("--archs", default=None, help="comma-separated torchvision names (default: 11 classics)")
    compare.add_argument("--runs", type=int, default=5, help="timed runs per network (median reported)")
    compare.add_argument("--out", default="petclf-compare", help="directory for compare.csv and compare.png")
    compare.set_defaults(func=_cmd_compare)

    report = sub.add_parser("report", help="confusion matrix, top losses, per-class figures for a saved model")
    report.add_argument("model_dir", help="model directory written by `petclf train` (OUT/model)")
    report.add_argument("data", help="the image folder (or label table) to evaluate on")
    report.add_argument("--split", default="valid", choices=["valid", "test", "all"],
                        help="valid/test: rebuilt as in training; all: every image, for data the model never saw")
    report.add_argument("--out", default=None, help="report directory (default: report-SPLIT beside the model)")
    report.add_argument("--layout", default=None, choices=LAYOUTS,
                        help="layout of DATA (default: the one the model was trained on, else detected)")
    report.add_argument("--label-pat", default=None,
                        help="regex whose first group is the label (default: the model's, run under a time limit)")
    report.add_argument("--images", default=None,
                        help="for a CSV/TSV DATA: the folder its file names are relative to (default: the table's)")
    report.add_argument("--heatmaps", action=argparse.BooleanOptionalAction, default=True,
                        help="draw the top losses beside their Grad-CAM heat maps (default: on; needs petclf[explain])")
    report.set_defaults(func=_cmd_report)

    cache = sub.add_parser("cache", help="show (or clear) petclf's cache of scan results and presized images",
                           description="The cache folder ($PETCLF_CACHE_DIR, else ~/.cache/petclf) is kept under "
                                       "$PETCLF_CACHE_MAX_GB (default 10), least recently used files first.")
    cache.add_argument("action", nargs="?", default="info", choices=["info", "clear"])
    cache.set_defaults(func=_cmd_cache)

    audit = sub.add_parser("audit", help="find likely wrong labels, copies and outliers in a labelled folder",
                           description="Out-of-sample probabilities by k-fold cross-validation: with --model (or a "
                                       "pretrained body) embeddings once and a head per fold (seconds); with "
                                       "--no-pretrained, k trainings from scratch (k times one training).")
    audit.add_argument("path", help="image folder or label table, in any layout `petclf train` reads")
    audit.add_argument("--model", default=None, help="model directory (OUT/model) whose body gives the embeddings")
    audit.add_argument("--folds", type=int, default=5, help="cross-validation folds (default %(default)s)")
    audit.add_argument("--out", default="petclf-audit", help="folder for audit.csv/json/html (default %(default)s)")
    _add_train_options(audit, evaluation=False)  # the audit keeps no model and judges at no threshold
    audit.set_defaults(func=_cmd_audit)

    review = sub.add_parser("review", help="decide in the browser: keep, relabel or remove each flagged image")
    review.add_argument("dir", help="the audit folder (audit.json); decisions go to DIR/decisions.csv")
    review.add_argument("--port", type=int, default=0, help="port (default: a free one, printed)")
    review.add_argument("--host", default="127.0.0.1", help="address (default %(default)s: this machine only)")
    review.add_argument("--open", action="store_true", help="open the page in the default browser")
    review.set_defaults(func=_cmd_review)

    apply = sub.add_parser("apply", help="carry out the review's decisions on the folder (journal, --undo)")
    apply.add_argument("decisions", nargs="?", default=None, help="DIR/decisions.csv written by petclf review")
    apply.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    apply.add_argument("--undo", default=None, metavar="JOURNAL", help="put back what one apply changed (its journal)")
    apply.add_argument("--remove-whole-groups", action="store_true",
                       help="remove every copy of a group when each is marked remove (default: one is kept)")
    apply.set_defaults(func=_cmd_apply)

    from petclf.serve.options import ServeOptions  # noqa: PLC0415 - light: core only, no torch

    d = ServeOptions()
    serve = sub.add_parser("serve", help="serve models over HTTP: a web page, a JSON API and KServe v2 / Triton's API",
                           description="Requests arriving together are predicted as one batch. Errors are JSON "
                                       '{"error": reason}; metrics in Prometheus format at /metrics.')
    serve.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR",
                       help="model directory (OUT/model), served under its folder's name, or MODEL_DIR=NAME")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default %(default)s: this machine only; 0.0.0.0 for every network)")
    serve.add_argument("--port", type=int, default=8000, help="port (default %(default)s; 0 picks a free one)")
    serve.add_argument("--max-batch", type=int, default=d.max_batch, help="images per forward pass (default %(default)s)")
    serve.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                       help="how long a request waits for others to batch with (default %(default)s)")
    serve.add_argument("--max-images", type=int, default=d.max_images, help="images per request (default %(default)s)")
    serve.add_argument("--max-body-mb", type=float, default=d.max_body_mb, help="request body size limit (default %(default)s)")
    serve.add_argument("--timeout", type=float, default=d.timeout_s,
                       help="seconds before a request gets 504 (default %(default)s)")
    serve.add_argument("--precision", default=d.precision, choices=PRECISIONS)
    serve.add_argument("--device", default=d.device, help="cpu, cuda, cuda:N or mps (default: fastest available)")
    serve.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                       help="let pages from ORIGIN call the API (repeatable; default: CORS off)")
    serve.add_argument("--no-access-log", action="store_true", help="no line per request on stderr")
    serve.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                       help="answer requests for Host NAME (repeatable; '*' any; default: loopback names only on a "
                            "loopback --host, any on other addresses)")
    serve.add_argument("--max-decode-mpx", type=float, default=d.max_decode_mpx,
                       help="megapixels decoded at once, all requests together (default %(default)s)")
    serve.add_argument("--max-header-kb", type=float, default=d.max_header_kb,
                       help="request line and headers size limit (default %(default)s)")
    serve.add_argument("--header-timeout", type=float, default=d.header_timeout_s,
                       help="seconds a client has to send its request headers (default %(default)s)")
    _add_unknown_accept(serve)
    _add_backend_options(serve)
    serve.add_argument("--streams", type=int, default=d.streams,
                       help="batches computed at once on a graph backend, each on its share of the cores: 2 or more "
                            "answer more requests a second under load, 1 answers each soonest (default %(default)s)")
    serve.set_defaults(func=_cmd_serve)
    return parser


_NEGATIVE = re.compile(r"-\.?\d")


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """The option strings, in ``parser`` and its sub-commands, that take exactly one value."""
    found = set()
    for action in parser._actions:  # noqa: SLF001 - argparse lists its actions nowhere public
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                found |= _value_options(sub)
        elif action.option_strings and action.nargs is None:
            found.update(action.option_strings)
    return found


def _negative_values_attached(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``argv`` with ``--opt -5m`` written ``--opt=-5m`` for options that take a value.

    argparse reads a word that starts with '-' as an option unless it is a plain negative number, so
    ``--time-budget -5m`` or ``--lr -1e-3`` got "expected one argument" instead of their own error.
    """
    takes_value = _value_options(parser)
    out: list[str] = []
    for k, word in enumerate(argv):
        if word == "--":  # the rest are positional arguments, as written
            return out + argv[k:]
        if out and out[-1] in takes_value and _NEGATIVE.match(word):
            out[-1] = f"{out[-1]}={word}"
        else:
            out.append(word)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``petclf`` command; returns the exit code (2: usage or data error)."""
    # fastai's import triggers a torch deprecation notice that users can do nothing about.
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=FutureWarning)
    parser = build_parser()
    args = parser.parse_args(_negative_values_attached(parser, sys.argv[1:] if argv is None else list(argv)))
    try:
        return int(args.func(args) or 0)
    except PetclfError as err:
        if args.debug:
            raise
        print(f"petclf: error: {printable(err)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("petclf: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line, not a stack
        if args.debug:
            raise
        print(f"petclf: error: {type(err).__name__}: {printable(err)} (run `petclf --debug ...` for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
