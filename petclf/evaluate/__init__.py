"""Where a model is wrong: interpretation of predictions, the report files and page, plots."""
from __future__ import annotations

from petclf.core.lazy import lazy_exports

_EXPORTS = {
    "Interpretation": "petclf.evaluate.interpretation",
    "interpret_files": "petclf.evaluate.interpretation",
    "interpret_saved": "petclf.evaluate.interpretation",
    "MultiLabelInterpretation": "petclf.evaluate.multilabel",
    "choose_thresholds": "petclf.evaluate.multilabel",
    "figure_png": "petclf.evaluate.plots",
    "InterpretationLike": "petclf.evaluate.protocol",
    "save_figure": "petclf.evaluate.plots",
    "report_saved_model": "petclf.evaluate.report",
    "write_report": "petclf.evaluate.report",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
