"""``train_folder``: the whole job behind ``petclf train`` — learner, learning rate, training, files."""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from fastai.callback.core import Callback
from fastai.learner import Learner

from petclf.core import log
from petclf.core.atomic import read_json, write_json_atomic
from petclf.core.destinations import output_dir
from petclf.core.errors import DataError, PetclfError, TrainingDiverged, UsageError
from petclf.core.options import TrainOptions, resolve_options
from petclf.core.processes import is_main
from petclf.core.safe_text import csv_safe
from petclf.data.saved_split import split_record
from petclf.core.defaults import DEFAULT_UNKNOWN_ACCEPT, MULTI_LABEL, SINGLE_LABEL
from petclf.evaluate.calibration import ECE_KEYS, calibration_metrics, rescale
from petclf.evaluate.interpretation import AnyInterpretation, interpret_files
from petclf.evaluate.multilabel import MultiLabelInterpretation, choose_thresholds
from petclf.evaluate.plots import save_loss_plot, save_lr_find_plot
from petclf.evaluate.report import write_report
from petclf.learn.checkpoint import CHECKPOINT_FILE, ResumeState, load_checkpoint
from petclf.learn.distributed import broadcast
from petclf.learn.learner import learner_predictor, quick_learner, run_settings, run_settings_callback
from petclf.learn.recipe import TrainResult, find_lr, train
from petclf.learn.save import save_model
from petclf.learn.trust import Trust, fit_trust

__all__ = ["TrainOptions", "RunResult", "train_folder"]

CHECKPOINT_DIR = "checkpoints"
#: Settings added after runs were first resumable, with the value runs had before them.
_UNRECORDED = {"balance": "none", "unknown_accept": DEFAULT_UNKNOWN_ACCEPT}
#: Which file trains, validates or tests in this run (paths relative to the data folder).
SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class RunResult:
    """Where a run put its files and what it measured."""

    out: Path
    model_dir: Path
    summary: dict
    learn: Learner


def train_folder(path: str | Path | pd.DataFrame, *, out: str | Path = "petclf-out",
                 options: TrainOptions | None = None, progress: bool | None = None, resume: bool | None = None,
                 cbs: Sequence[Callback] = (), started: float | None = None, **settings: Any) -> RunResult:
    """Train a classifier on the images in ``path`` (a folder or a label table) and write model, history, plots
    and summary to ``out``.

    ``cbs`` are fastai callbacks for every training epoch, as ``train`` takes them.
    A checkpoint is written to ``out/checkpoints`` after every epoch. An interrupted run in
    ``out`` is continued (``resume=None``, the default, does so when a checkpoint is there;
    ``True`` insists on one; ``False`` starts over). ``options.time_budget`` counts from ``started``
    (a ``time.perf_counter()`` value, e.g. when the command began; default: this call).

    ``settings`` are TrainOptions fields by name (``arch="resnet18"``), winning over ``options``.

    Example: ``train_folder("pets/images", out="runs/pets", options=TrainOptions(arch="resnet50"))``;
    ``train_folder("pets/images", out="runs/pets", arch="resnet50", epochs=3)``.
    """
    options = resolve_options(options, "train_folder", **settings)
    options.validate()
    out = output_dir(out)
    data = "a DataFrame" if isinstance(path, pd.DataFrame) else str(Path(path).resolve())
    config = {**asdict(options), "data": data}
    state = _resume_state(out, config, resume)
    # A resumed run trains and validates on the files it started with, whatever the folder holds now.
    split = _stored_split(out) if state is not None else None
    start = time.perf_counter() if started is None else started
    learn = quick_learner(path, options=options, split=split)
    if is_main():  # under a launcher, one process writes every file
        _write_skipped(run_settings_callback(learn).scan.skipped, out)
        write_json_atomic(out / "config.json", config)
        if split is None:
            write_json_atomic(out / SPLIT_FILE, split_record(run_settings_callback(learn).dataset))
    lr = options.lr
    if options.lr_find and state is None:
        lr = broadcast(find_lr(learn, progress=progress))
        if is_main():
            save_lr_find_plot(learn.recorder, lr, out / "lr_find.png")
    try:
        # lr_find ran above (its plot is a file of the run): train is given its choice, not asked again.
        result = train(learn, options=options, lr=lr, lr_find=False, progress=progress,
                       checkpoints=out / CHECKPOINT_DIR, resume=state, started=start, cbs=cbs)
    except KeyboardInterrupt:
        if (out / CHECKPOINT_DIR / CHECKPOINT_FILE).is_file():
            log.info(f"stopped; the checkpoint in {out / CHECKPOINT_DIR} keeps the finished epochs: "
                     "run the same command again to go on from there.")
        raise
    if not is_main():  # under a launcher the other processes are done: process 0 evaluates and writes
        return RunResult(out=out, model_dir=out / "model", summary={}, learn=learn)
    evaluated = time.perf_counter()
    interps = _evaluate(learn, threshold=options.threshold, tta=options.tta)
    # Single-label: calibrated on the validation split, and an "unknown" detector (an extra pass over the images,
    # counted in a time budget's evaluation).
    trust = fit_trust(learn, interps[0], accept=options.unknown_accept) if run_settings(learn).task == SINGLE_LABEL \
        else None
    calibration = {}
    if trust is not None:  # the report shows what the saved model will answer: calibrated probabilities
        interps = _calibrated(learn, interps, trust.temperature, tta=options.tta)
        calibration = {i.split: calibration_metrics(i.probs, i.targets, temperature=trust.temperature,
                                                    calibrated=True) for i in interps}
    summary = _summary(learn, result, interps, seconds=time.perf_counter() - start, trust=trust,
                       calibration=calibration)
    # Where the job's time went: before the first training step (imports, scan, caches, lr choice), training,
    # evaluation (writing the files comes after summary.json; the command's own wall time holds it).
    summary["timing"] = {"setup_s": round(evaluated - start - result.seconds, 2), "train_s": round(result.seconds, 2),
                         "evaluate_s": round(time.perf_counter() - evaluated, 2)}
    try:
        model_dir = _write_results(learn, out, result, interps, summary, tta=options.tta, trust=trust,
                                   calibration=calibration)
    except OSError as err:
        raise _unwritten(out, err, epochs=len(result.history)) from err
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)  # the run is complete; the model dir has it all
    if result.diverged:
        raise TrainingDiverged(f"{result.diverged} (lr {result.lr:.2e}), so training stopped; the model of epoch "
                               f"{result.best_epoch}, the best with a finite loss ({headline(summary)}), is saved in "
                               f"{model_dir}. Train again with a smaller learning rate (--lr) for a better one.")
    log.info(f"{headline(summary)}; results in {out}")
    return RunResult(out=out, model_dir=model_dir, summary=summary, learn=learn)


def _write_results(learn: Learner, out: Path, result: TrainResult, interps: list[AnyInterpretation],
                   summary: dict, *, tta: bool, trust: Trust | None = None,
                   calibration: dict[str, dict] | None = None) -> Path:
    if any(i.skipped for i in interps):
        _write_skipped(_all_skipped(learn, interps), out)
    result.history.to_csv(out / "history.csv", index=False)
    save_loss_plot(result, out / "loss.png")
    thresholds = getattr(interps[0], "thresholds", None)  # the validation split's, for a multi-label model
    model_dir = save_model(learn, out / "model", summary=summary, thresholds=thresholds, tta=tta, trust=trust)
    write_json_atomic(out / "summary.json", summary)
    write_report(out, interps, summary=summary, history=result.history, loss_png=out / "loss.png",
                 heatmaps=model_dir, temperature=None if trust is None else trust.temperature, calibrated=True,
                 calibration=calibration)
    return model_dir


def _unwritten(out: Path, err: OSError, *, epochs: int) -> PetclfError:
    """The error for results that could not be written, saying what the checkpoints still hold."""
    try:
        done = getattr(load_checkpoint(out / CHECKPOINT_DIR), "epochs_done", 0)
    except PetclfError:
        done = 0
    if done >= epochs:
        kept = "keep the trained weights; it writes the results without training again"
    elif done:
        kept = f"hold epoch {done} of {epochs}; it trains the rest and writes the results"
    else:
        kept = "could not be written either; it trains again"
    return PetclfError(f"training finished, but its results could not be written to {out} ({err.strerror or err}). "
                       "Free space (or fix the permissions) and run the same command again: the checkpoints in "
                       f"{out / CHECKPOINT_DIR} {kept}.")


def _resume_state(out: Path, config: dict, resume: bool | None) -> ResumeState | None:
    checkpoints = out / CHECKPOINT_DIR
    if resume is False:
        shutil.rmtree(checkpoints, ignore_errors=True)
        return None
    state = load_checkpoint(checkpoints)
    if state is None:
        if resume:
            raise UsageError(f"--resume: no checkpoint in {checkpoints}; run without --resume to start training.")
        return None
    stored = out / "config.json"
    advice = f"delete {checkpoints} to start over."
    # Missing: a run from an older petclf; damaged: its settings are unknown, so resuming could mix two runs.
    previous = read_json(stored, missing=DataError(f"{stored} is gone: {advice}"),
                         unreadable=f"{stored} cannot be read ({{err}}): {advice}") if stored.is_file() else {}
    # A setting a run from an older petclf did not record had the value it then always had.
    changed = sorted(k for k in config if previous.get(k, _UNRECORDED.get(k, config[k])) != config[k] and k != "lr")
    if changed:
        raise UsageError(
            f"{out} holds an interrupted run with other settings ({', '.join(changed)}); resume it with the same "
            f"settings, use another --out, or delete {checkpoints} to start over."
        )
    return state


def _stored_split(out: Path) -> dict | None:
    path = out / SPLIT_FILE
    if not path.is_file():  # a run started by an older petclf
        return None
    advice = f"delete it and {out / CHECKPOINT_DIR} to start over."
    return read_json(path, missing=DataError(f"{path} is gone: {advice}"),
                     unreadable=f"{path} cannot be read ({{err}}): {advice}")


def _write_skipped(skipped: pd.DataFrame, out: Path) -> None:
    csv_safe(skipped).to_csv(out / "skipped.csv", index=False)
    if len(skipped):
        log.info(f"{len(skipped)} files skipped; the list with reasons is in {out / 'skipped.csv'}")


def _all_skipped(learn: Learner, interps: list[AnyInterpretation]) -> pd.DataFrame:
    """The scan's skipped files, then those that could not be read when the trained model was evaluated."""
    late = [(path, f"could not be read for the {i.split} evaluation: {reason}") for i in interps for path, reason in i.skipped]
    return pd.concat([run_settings_callback(learn).scan.skipped, pd.DataFrame(late, columns=["path", "reason"])],
                     ignore_index=True)


def _evaluate(learn: Learner, *, threshold: str | float, tta: bool) -> list[AnyInterpretation]:
    """Valid (and test) predictions of the trained network, in plain torch: no fastai gathering across processes.

    A multi-label model's thresholds are chosen on the validation split and applied to both. With ``tta``
    each image and its mirror are scored, as the saved model's ``Predictor`` will by default.
    """
    predictor = learner_predictor(learn, tta=tta)
    frame = run_settings_callback(learn).dataset.frame
    interps = [interpret_files(predictor, list(part.path), list(part.label), split=split)
               for split in ("valid", "test") if len(part := frame[frame.split == split])]
    if isinstance(interps[0], MultiLabelInterpretation):
        thresholds = choose_thresholds(interps[0].probs, interps[0].targets, mode=threshold)
        interps = [interp.with_thresholds(thresholds) for interp in interps]
        log.info(f"decision threshold {interps[0].threshold_label()} (chosen on the validation set: "
                 f"micro-F1 {interps[0].metrics()['f1_micro']:.4f})" if isinstance(threshold, str) else
                 f"decision threshold {threshold:g} (given)")
    return interps


def _calibrated(learn: Learner, interps: list[AnyInterpretation], temperature: float, *,
                tta: bool) -> list[AnyInterpretation]:
    """The single-label evaluations at ``temperature``: the probabilities rescaled (exact: log-probabilities are
    logits up to a constant), or with ``tta`` scored again, since a mean of probabilities does not rescale."""
    if tta:
        predictor = learner_predictor(learn, tta=True, temperature=temperature)
        return [interpret_files(predictor, list(i.items), [i.classes[t] for t in i.targets], split=i.split)
                for i in interps]
    return [replace(i, probs=rescale(i.probs, 1.0 / temperature)) for i in interps]


def headline(summary: dict) -> str:
    """The run's main validation figures in words, by task."""
    if summary.get("task") == MULTI_LABEL:
        return (f"validation micro-F1 {summary['f1_micro']:.4f} (macro-F1 {summary['f1_macro']:.4f}, "
                f"mAP {summary['map']:.4f}) at threshold {summary['threshold']}")
    return (f"validation error rate {summary['error_rate']:.4f} (accuracy {summary['accuracy']:.4f}, "
            f"balanced accuracy {summary['balanced_accuracy']:.4f}, macro-F1 {summary['f1_macro']:.4f})")


#: Validation figures summary.json takes from the evaluation of the saved network (the Predictor's, as users
#: will run it), by task; metrics.json and the report hold the same figures.
_SUMMARY_METRICS = {SINGLE_LABEL: ("error_rate", "accuracy", "balanced_accuracy", "f1_macro"),
                    MULTI_LABEL: ("f1_micro", "f1_macro", "map", "threshold", "accuracy_multi", "exact_match")}
_TEST_METRICS = {SINGLE_LABEL: ("error_rate", "accuracy", "balanced_accuracy", "f1_macro"),
                 MULTI_LABEL: ("f1_micro", "f1_macro", "map", "accuracy_multi")}


def _summary(learn: Learner, result: TrainResult, interps: list[AnyInterpretation], *, seconds: float,
             trust: Trust | None = None, calibration: dict[str, dict] | None = None) -> dict:
    spec = run_settings(learn)
    dataset = run_settings_callback(learn).dataset
    best = result.best
    summary = {
        "task": spec.task, "classes": list(spec.classes), "arch": spec.arch.name, "pretrained": spec.pretrained,
        "device": spec.device, "precision": spec.precision, "layout": spec.layout, "balance": spec.balance,
        "size": spec.pipeline.size, "n_train": dataset.count("train"), "n_valid": dataset.count("valid"),
        "n_test": dataset.count("test"), "n_skipped": len(run_settings_callback(learn).scan.skipped),
        "lr": result.lr, "epochs": int(len(result.history)), "best_epoch": result.best_epoch,
    }
    valid = interps[0].metrics()
    summary.update({key: valid[key] for key in _SUMMARY_METRICS[spec.task]})
    summary.update(valid_loss=best["valid_loss"], train_seconds=round(result.seconds, 2))
    if result.diverged:
        summary["diverged"] = result.diverged
    if result.budget is not None:
        summary["budget"] = result.budget.as_dict()
    for interp in interps:
        if interp.split == "test":
            m = interp.metrics()
            summary.update(test_loss=m["log_loss"], **{f"test_{key}": m[key] for key in _TEST_METRICS[spec.task]})
    if trust is not None:
        summary["temperature"] = round(trust.temperature, 4)
        for split, ece in (calibration or {}).items():
            prefix = "" if split == "valid" else f"{split}_"
            summary.update({f"{prefix}{key}": ece[key] for key in ECE_KEYS})
        if trust.unknown is not None:
            summary["unknown"] = {"score": trust.unknown.score.kind, "accept": trust.unknown.accept,
                                  "threshold": round(trust.unknown.threshold, 6)}
    summary["seconds"] = round(seconds, 2)
    return summary

