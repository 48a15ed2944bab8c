"""Report files and one self-contained HTML page (images embedded, no network needed to view it)."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Sequence

import pandas as pd
from petclf.core.atomic import write_json_atomic
from petclf.core.destinations import output_dir
from petclf.core.safe_text import csv_safe
from petclf.evaluate.interpret import Interpretation, interpret_saved
from petclf.evaluate.plots import figure_png
from petclf.runtime.modeldir import read_meta

__all__ = ["report_saved_model", "write_report"]

SECTIONS = ("summary", "metrics", "learning-curves", "confusion-matrix", "most-confused", "top-losses", "per-class")

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}h2{border-bottom:1px solid #ddd;margin-top:1.6em}"""


def _img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(frame: pd.DataFrame, *, index: bool = True) -> str:
    return frame.to_html(index=index, float_format=lambda v: f"{v:.4f}", border=0, escape=True)


def _prefix(split: str) -> str:
    return "" if split == "valid" else f"{split}_"


def _write_split_files(interp: Interpretation, out: Path, *, top_k: int, confused: pd.DataFrame,
                       per_class: pd.DataFrame) -> dict[str, bytes]:
    prefix = _prefix(interp.split)
    pngs = {"confusion": figure_png(interp.plot_confusion_matrix(normalize=len(interp.classes) > 30)),
            "top_losses": figure_png(interp.plot_top_losses(top_k))}
    (out / f"{prefix}confusion_matrix.png").write_bytes(pngs["confusion"])
    (out / f"{prefix}top_losses.png").write_bytes(pngs["top_losses"])
    # Class names come from folder and file names: defused for spreadsheets.
    csv_safe(confused).to_csv(out / f"{prefix}most_confused.csv", index=False)
    csv_safe(per_class).to_csv(out / f"{prefix}per_class.csv")
    return pngs


def write_report(out: str | Path, interps: Sequence[Interpretation], *, summary: dict | None = None,
                 history: pd.DataFrame | None = None, loss_png: Path | None = None, top_k: int = 9) -> Path:
    """Write confusion matrices, top losses, most-confused and per-class CSVs, ``metrics.json`` and
    ``report.html`` for each split in ``interps`` into ``out``; return the HTML path.

    Files of the validation split have plain names; other splits get a prefix (``test_per_class.csv``).

    Example: ``write_report("runs/pets", [interpret(learn)], summary=summary)``.
    """
    out = output_dir(out, what="the report files")
    metrics = {i.split: i.metrics() for i in interps}
    write_json_atomic(out / "metrics.json", metrics)
    parts = ["<h1>petclf report</h1>", '<h2 id="summary">Summary</h2>', _summary_html(summary or {})]
    parts += ['<h2 id="metrics">Metrics</h2>', _table(pd.DataFrame(metrics).T)]
    parts.append('<h2 id="learning-curves">Learning curves</h2>')
    if loss_png is not None and Path(loss_png).is_file():
        parts.append(_img_tag(Path(loss_png).read_bytes(), "training and validation loss"))
    parts.append(_table(history, index=False) if history is not None else "<p>No training history (saved model).</p>")
    split_parts: dict[str, list[str]] = {s: [] for s in SECTIONS[3:]}
    for interp in interps:
        confused, per_class = interp.most_confused(), interp.per_class()
        pngs = _write_split_files(interp, out, top_k=top_k, confused=confused, per_class=per_class)
        title = f"<h3>{html.escape(interp.split)} split ({len(interp.targets)} images)</h3>"
        split_parts["confusion-matrix"] += [title, _img_tag(pngs["confusion"], f"{interp.split} confusion matrix")]
        split_parts["most-confused"] += [title, _table(confused, index=False) if len(confused)
                                         else "<p>No mistakes.</p>"]
        split_parts["top-losses"] += [title, _img_tag(pngs["top_losses"], f"{interp.split} top losses"),
                                      _table(interp.top_losses(top_k), index=False)]
        split_parts["per-class"] += [title, _table(per_class)]
        if interp.skipped:
            split_parts["per-class"] += [f"<p>{len(interp.skipped)} {html.escape(interp.split)} images could not be "
                                         "read and are left out of these figures:</p>",
                                         _table(pd.DataFrame(interp.skipped, columns=["path", "reason"]), index=False)]
    headings = {"confusion-matrix": "Confusion matrix", "most-confused": "Most confused",
                "top-losses": "Top losses", "per-class": "Per class"}
    for key, heading in headings.items():
        parts += [f'<h2 id="{key}">{heading}</h2>', *split_parts[key]]
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>petclf report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _summary_html(summary: dict) -> str:
    if not summary:
        return "<p>No run summary.</p>"
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in summary.items())
    return f"<table>{rows}</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if len(value) <= 40 else f"{len(value)} items"
    return json.dumps(value) if isinstance(value, dict) else str(value)


def report_saved_model(model_dir: str | Path, data: str | Path, *, split: str = "valid",
                       out: str | Path | None = None, layout: str | None = None,
                       label_pat: str | None = None) -> Path:
    """Evaluate a saved model on a split of ``data`` and write the report files; return ``report.html``.

    ``out`` defaults to ``report-<split>`` beside the model directory; ``layout`` and ``label_pat``
    override the ones the model was trained with.

    Example: ``report_saved_model("runs/caltech/model", "data/caltech10", split="test")``.
    """
    model_dir = Path(model_dir)
    summary = read_meta(model_dir).get("summary", {})
    target = output_dir(out if out is not None else model_dir.resolve().parent / f"report-{split}",
                        what="the report files")
    interp = interpret_saved(model_dir, data, split=split, layout=layout, label_pat=label_pat)
    return write_report(target, [interp], summary=summary)
