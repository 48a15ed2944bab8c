"""Find wrong labels, copies and outliers in a labelled image folder; review them in a browser; fix the folder.

``petclf.audit(data, ...)`` (this package is callable: it runs ``petclf.audit.audit``) returns an
``Audit`` of DataFrames and writes audit.csv/json/html; ``review`` serves the decisions page;
``apply_decisions`` and ``undo`` change the folder with a journal.

Example::

    import petclf
    found = petclf.audit("digits", pretrained=False, arch="resnet18", size=64, epochs=5, out="audit")
    found.label_issues.head()
"""
from __future__ import annotations

import sys
import types

from petclf.core.lazy import lazy_exports

_EXPORTS = {
    "Audit": "petclf.audit.api",
    "audit": "petclf.audit.api",
    "apply_decisions": "petclf.audit.apply",
    "undo": "petclf.audit.apply",
    "review_app": "petclf.audit.review",
    "serve_review": "petclf.audit.review",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["Audit", "apply_decisions", "audit", "review_app", "serve_review", "undo"]


class _CallablePackage(types.ModuleType):
    """``petclf.audit(...)`` is ``petclf.audit.audit(...)``: the package and its main function share a name."""

    def __call__(self, *args, **kwargs):
        return self.audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
