"""The web page at ``/``: drop or choose images, see the top labels as bars, and each model's card.

One self-contained page (no external scripts, styles or fonts: it works offline). Class and
file names are other people's text, so the template escapes everything it prints and the
script writes text only (``textContent``); a per-response nonce lets only the page's own
script and style run (Content-Security-Policy).
"""
from __future__ import annotations

import secrets

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from petclf.serve.state import server_state

__all__ = ["PAGE_TOPK", "routes"]

#: Labels the page shows per image for single-label models (multi-label: every label over its threshold).
PAGE_TOPK = 5

_templates = Environment(loader=PackageLoader("petclf.serve", "templates"), autoescape=select_autoescape(("html",)),
                         trim_blocks=True, lstrip_blocks=True)


def _policy(nonce: str) -> str:
    return ("default-src 'none'; img-src 'self' blob: data:; connect-src 'self'; "
            f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


async def index(request: Request) -> HTMLResponse:
    """The page, for every served model (a menu chooses one when there are several)."""
    state = server_state(request)
    cards = [model.card() for model in state.models.values()]
    # Relative URLs: the page keeps working when the app is mounted under a prefix.
    page_models = [{"name": model.name, "max_images": state.options.max_images,
                    "predict_url": f"models/{model.name}/predict" + ("" if model.multi_label else f"?topk={PAGE_TOPK}"),
                    "explain_url": f"models/{model.name}/explain"}
                   for model in state.models.values()]
    nonce = secrets.token_urlsafe(16)
    html = _templates.get_template("index.html").render(cards=cards, page_models=page_models, nonce=nonce)
    return HTMLResponse(html, headers={"Content-Security-Policy": _policy(nonce), "X-Content-Type-Options": "nosniff",
                                       "Referrer-Policy": "no-referrer"})


def routes() -> list[Route]:
    """The page's route."""
    return [Route("/", index, methods=["GET"])]
