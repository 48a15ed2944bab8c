"""A model directory at work over HTTP: a web page, a simple JSON API and the Open Inference Protocol (KServe v2 /
Triton), with dynamic batching, limits and Prometheus metrics; no fastai.

Example::

    from petclf.serve import app, serve
    serve(["runs/pets/model"], port=8000)            # or mount app([...]) in your own ASGI server
"""
from __future__ import annotations

from petclf.core.lazy import lazy_exports

_EXPORTS = {
    "app": "petclf.serve.server",
    "serve": "petclf.serve.server",
    "ServeOptions": "petclf.serve.options",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
