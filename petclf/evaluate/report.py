"""Report files and one self-contained HTML page (images embedded, no network needed to view it).

The page is rendered from ``templates/report.html`` by Jinja2 with autoescaping: class names and
file paths come from strangers' folders and are shown as text, never as markup.
"""
from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd
from markupsafe import Markup

from petclf.core.atomic import write_json_atomic
from petclf.core.destinations import output_dir
from petclf.core.safe_text import csv_safe
from petclf.evaluate.calibration import ECE_KEYS, calibration_metrics, plot_reliability
from petclf.evaluate.interpretation import AnyInterpretation, Interpretation, interpret_saved
from petclf.evaluate.multilabel import MultiLabelInterpretation
from petclf.evaluate.plots import figure_png
from petclf.runtime.modeldir import read_meta

if TYPE_CHECKING:  # captum behind it is imported only when heat maps are drawn
    from petclf.runtime.explain import Explainer

__all__ = ["SECTIONS", "MULTI_LABEL_SECTIONS", "report_saved_model", "write_report"]

#: Section ids of the page for a single-label model (anchors: report.html#per-class).
SECTIONS = ("summary", "metrics", "learning-curves", "calibration", "confusion-matrix", "most-confused", "top-losses", "per-class")
#: Section ids of the page for a multi-label model.
MULTI_LABEL_SECTIONS = ("summary", "metrics", "learning-curves", "per-label", "most-missed", "most-added",
                        "top-losses")
_HEADINGS = {"confusion-matrix": "Confusion matrix", "most-confused": "Most confused", "top-losses": "Top losses",
             "per-class": "Per class", "per-label": "Per label", "most-missed": "Labels most often missed",
             "most-added": "Labels most often added", "calibration": "Calibration"}


@lru_cache(maxsize=1)
def _template():
    from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: PLC0415 - only when writing a page

    env = Environment(loader=PackageLoader("petclf.evaluate", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html")


def _image(png: bytes, alt: str) -> dict:
    return {"kind": "image", "alt": alt, "data": base64.b64encode(png).decode()}


def _table(frame: pd.DataFrame, *, index: bool = True) -> dict:
    # pandas escapes every cell (escape=True); the markup around them is its own.
    return {"kind": "table", "html": Markup(frame.to_html(index=index, float_format=lambda v: f"{v:.4f}", border=0,
                                                           escape=True))}


def _text(text: str) -> dict:
    return {"kind": "text", "text": text}


def _prefix(split: str) -> str:
    return "" if split == "valid" else f"{split}_"


def _single_label_parts(interp: Interpretation, out: Path, *, top_k: int,
                        explainer: "Explainer | None" = None) -> dict[str, list[dict]]:
    """Write one split's files (confusion matrix, top losses and, with an ``explainer``, their heat maps,
    most-confused and per-class CSVs); its page blocks."""
    prefix = _prefix(interp.split)
    confused, per_class = interp.most_confused(), interp.per_class()
    confusion = figure_png(interp.plot_confusion_matrix(normalize=len(interp.classes) > 30))
    losses = figure_png(interp.plot_top_losses(top_k))
    (out / f"{prefix}confusion_matrix.png").write_bytes(confusion)
    (out / f"{prefix}top_losses.png").write_bytes(losses)
    # Class names come from folder and file names: defused for spreadsheets.
    csv_safe(confused).to_csv(out / f"{prefix}most_confused.csv", index=False)
    csv_safe(per_class).to_csv(out / f"{prefix}per_class.csv")
    parts = {
        "confusion-matrix": [_image(confusion, f"{interp.split} confusion matrix")],
        "most-confused": [_table(confused, index=False) if len(confused) else _text("No mistakes.")],
        "top-losses": [_image(losses, f"{interp.split} top losses"), _table(interp.top_losses(top_k), index=False)],
        "per-class": [_table(per_class)],
    }
    _add_heatmaps(parts, interp, out, top_k=top_k, explainer=explainer)
    return parts


def _multi_label_parts(interp: MultiLabelInterpretation, out: Path, *, top_k: int,
                       explainer: "Explainer | None" = None) -> dict[str, list[dict]]:
    """Write one split's files (per-label, most-missed and most-added CSVs, top losses and, with an ``explainer``,
    their heat maps); its page blocks."""
    prefix = _prefix(interp.split)
    per_label, missed, added = interp.per_label(), interp.most_missed(), interp.most_added()
    losses = figure_png(interp.plot_top_losses(top_k))
    (out / f"{prefix}top_losses.png").write_bytes(losses)
    csv_safe(per_label).to_csv(out / f"{prefix}per_label.csv")
    csv_safe(missed).to_csv(out / f"{prefix}most_missed.csv", index=False)
    csv_safe(added).to_csv(out / f"{prefix}most_added.csv", index=False)
    parts = {
        "per-label": [_table(per_label)],
        "most-missed": [_table(missed, index=False) if len(missed) else _text("No label was missed.")],
        "most-added": [_table(added, index=False) if len(added) else _text("No label was added.")],
        "top-losses": [_image(losses, f"{interp.split} top losses"), _table(interp.top_losses(top_k), index=False)],
    }
    _add_heatmaps(parts, interp, out, top_k=top_k, explainer=explainer)
    return parts


def _add_heatmaps(parts: dict[str, list[dict]], interp: AnyInterpretation, out: Path, *, top_k: int,
                  explainer: "Explainer | None") -> None:
    """With an ``explainer``: the top losses beside their heat maps, written and shown after the top losses' grid."""
    if explainer is None or not interp.items:
        return
    from petclf.evaluate.heatmaps import plot_top_loss_heatmaps  # noqa: PLC0415 - only when asked for

    figure = plot_top_loss_heatmaps(interp, explainer, k=top_k)
    if figure is not None:
        png = figure_png(figure)
        (out / f"{_prefix(interp.split)}top_losses_heatmaps.png").write_bytes(png)
        parts["top-losses"].insert(1, _image(png, f"{interp.split} top losses beside their heat maps"))


def write_report(out: str | Path, interps: Sequence[AnyInterpretation], *, summary: dict | None = None,
                 history: pd.DataFrame | None = None, loss_png: Path | None = None, top_k: int = 9,
                 heatmaps: str | Path | None = None, temperature: float | None = None,
                 calibrated: bool = False, calibration: dict[str, dict] | None = None) -> Path:
    """Write the figures and tables of each split in ``interps``, ``metrics.json`` and ``report.html`` into
    ``out``; return the HTML path.

    Single-label splits get a confusion matrix, most-confused pairs, top losses and per-class
    figures; multi-label splits per-label figures, the labels most often missed and added, and
    top losses with given and predicted label sets. Files of the validation split have plain
    names; other splits get a prefix (``test_per_class.csv``). ``heatmaps``: the model directory of the
    predictions, to draw each top loss beside its Grad-CAM heat maps (``top_losses_heatmaps.png``: the predicted
    and the actual class, or a multi-label item's worst added and worst missed label).
    With a single-label model's ``temperature``, each split's ECE before and after it goes into ``metrics.json``
    and a reliability diagram into the page (``calibrated``: the probabilities are already at that temperature,
    as a saved model's ``Predictor`` gives them; ``calibration``: each split's ``calibration_metrics`` where the
    caller has them already, not computed again).

    Example: ``write_report("runs/pets", [interpret(learn)], summary=summary)``.
    """
    out = output_dir(out, what="the report files")
    metrics = {i.split: i.metrics() for i in interps}
    multi = any(isinstance(i, MultiLabelInterpretation) for i in interps)
    if calibration is None:
        calibration = {} if multi or temperature is None else {
            i.split: calibration_metrics(i.probs, i.targets, temperature=temperature, calibrated=calibrated)
            for i in interps}
    for split, figures in calibration.items():
        metrics[split].update({key: figures[key] for key in ECE_KEYS})
    write_json_atomic(out / "metrics.json", metrics)
    sections: dict[str, list[dict]] = {key: [] for key in (MULTI_LABEL_SECTIONS if multi else SECTIONS)}
    sections["summary"] = [_summary_block(summary or {})]
    sections["metrics"] = [_table(pd.DataFrame(metrics).T)]
    if loss_png is not None and Path(loss_png).is_file():
        sections["learning-curves"].append(_image(Path(loss_png).read_bytes(), "training and validation loss"))
    sections["learning-curves"].append(_table(history, index=False) if history is not None
                                       else _text("No training history (saved model)."))
    if not multi:
        sections["calibration"] = _calibration_blocks(calibration, out)
    explainer = None
    if heatmaps is not None and any(i.items for i in interps):  # one network for every split's maps
        from petclf.evaluate.heatmaps import heatmap_explainer  # noqa: PLC0415 - only when asked for

        explainer = heatmap_explainer(heatmaps)
    for interp in interps:
        if isinstance(interp, MultiLabelInterpretation):
            split_parts = _multi_label_parts(interp, out, top_k=top_k, explainer=explainer)
        else:
            split_parts = _single_label_parts(interp, out, top_k=top_k, explainer=explainer)
        title = {"kind": "title", "text": f"{interp.split} split ({len(interp.targets)} images)"}
        for key, blocks in split_parts.items():
            sections[key] += [title, *blocks]
        if interp.skipped:
            key = "per-label" if multi else "per-class"
            sections[key] += [_text(f"{len(interp.skipped)} {interp.split} images could not be read and are left "
                                    "out of these figures:"),
                              _table(pd.DataFrame(interp.skipped, columns=["path", "reason"]), index=False)]
    headings = {"summary": "Summary", "metrics": "Metrics", "learning-curves": "Learning curves", **_HEADINGS}
    page = _template().render(sections=[{"id": key, "heading": headings[key], "blocks": blocks}
                                        for key, blocks in sections.items()])
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _calibration_blocks(calibration: dict[str, dict], out: Path) -> list[dict]:
    """Per split: the reliability diagram (also written as ``[split_]reliability.png``) and the two ECE figures."""
    if not calibration:
        return [_text("No temperature: this model was saved before calibration.")]
    blocks = [_text("Probabilities are divided by a temperature fitted on the validation split. Expected "
                    "calibration error (ECE, 15 bins): the mean gap between confidence and accuracy; 0 is perfect. "
                    "Even a perfectly calibrated model shows some ECE on a finite split: 'ECE by chance' is the 95th "
                    "percentile of the ECE such a model with these confidences would show on as many images. An ECE "
                    "after below it cannot be told from perfect calibration on this split (on the validation split, "
                    "which the temperature was fitted on, the ECE after is a little optimistic; a test split is "
                    "the strict check).")]
    for split, figures in calibration.items():
        png = figure_png(plot_reliability(figures, title=f"Reliability diagram ({split})"))
        (out / f"{_prefix(split)}reliability.png").write_bytes(png)
        blocks += [{"kind": "title", "text": f"{split} split"}, _image(png, f"{split} reliability diagram"),
                   {"kind": "pairs", "rows": [("temperature", f"{figures['temperature']:.4f}"),
                                              ("ECE before", f"{figures['ece_before']:.4f}"),
                                              ("ECE after", f"{figures['ece_after']:.4f}"),
                                              ("ECE by chance (95%)", f"{figures['ece_chance_p95']:.4f}")]}]
    return blocks


def _summary_block(summary: dict) -> dict:
    if not summary:
        return _text("No run summary.")
    return {"kind": "pairs", "rows": [(str(k), _fmt(v)) for k, v in summary.items()]}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if len(value) <= 40 else f"{len(value)} items"
    return json.dumps(value) if isinstance(value, dict) else str(value)


def report_saved_model(model_dir: str | Path, data: str | Path, *, split: str = "valid",
                       out: str | Path | None = None, layout: str | None = None,
                       label_pat: str | None = None, images: str | Path | None = None,
                       heatmaps: bool = True) -> Path:
    """Evaluate a saved model on a split of ``data`` and write the report files; return ``report.html``.

    ``out`` defaults to ``report-<split>`` beside the model directory; ``layout`` and ``label_pat``
    override the ones the model was trained with; ``images`` is the folder a table's file names are
    relative to (default: the table's folder). ``heatmaps``: draw the top losses beside their Grad-CAM heat maps
    (needs captum: ``pip install 'petclf[explain]'``; skipped with a warning without it).

    Example: ``report_saved_model("runs/caltech/model", "data/caltech10", split="test")``.
    """
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    summary = meta.get("summary", {})
    target = output_dir(out if out is not None else model_dir.resolve().parent / f"report-{split}",
                        what="the report files")
    interp = interpret_saved(model_dir, data, split=split, layout=layout, label_pat=label_pat, images=images)
    return write_report(target, [interp], summary=summary, heatmaps=model_dir if heatmaps else None,
                        temperature=meta.get("temperature"), calibrated=True)
