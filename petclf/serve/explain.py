"""``POST /explain`` (and ``/models/NAME/explain``): one image in, its Grad-CAM heat map out, as a PNG.

The image is sent as to ``/predict`` (raw body or one multipart file) and read under the same
limits (body size, pixel budget, time limit). The answer is the overlay (``image/png``) for the
predicted class (a multi-label model's most likely label: one map per answer), or for ``?class=NAME``;
the headers ``Petclf-Class`` (percent-encoded UTF-8) and ``Petclf-Probability`` say which class it shows
and how likely it is. A heat map costs a forward and a backward pass in float32: it runs on a forward
thread of the server, one explanation at a time (a Grad-CAM pass hooks the network, so two at once would
mix their activations), and each model's float32 explainer is built on the first request.
"""
from __future__ import annotations

import asyncio
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from petclf.core.errors import UsageError
from petclf.core.safe_text import printable
from petclf.runtime.explain import EXPLAIN_EXTRA, Explainer, explain_available
from petclf.serve.errors import RequestError
from petclf.serve.models import ServedModel
from petclf.serve.simple import request_images
from petclf.serve.state import ServerState, server_state

__all__ = ["routes"]


def _explainer(state: ServerState, model: ServedModel) -> Explainer:
    """The model's explainer, built once (called under ``state.explain_lock``)."""
    explainer = state.explainers.get(model.name)
    if explainer is None:
        explainer = state.explainers[model.name] = Explainer(model.directory, device=model.predictor.device)
    return explainer


async def explain_image(request: Request) -> Response:
    """The heat map of the one image of the request, as PNG (see the module's docstring)."""
    state = server_state(request)
    model = state.model(request.path_params.get("name"))
    if not explain_available():
        raise RequestError(501, f"this server cannot draw heat maps: captum is not installed (pip install "
                                f"'petclf[{EXPLAIN_EXTRA}]' where the server runs).")
    label = request.query_params.get("class")
    if label is not None and label not in model.classes:
        raise RequestError(400, f"the model {model.name} has no class {printable(label)[:80]!r}: GET /metadata lists "
                                "its classes.")

    async def answer() -> Response:
        images = await request_images(request, state)
        if len(images) != 1:
            raise RequestError(400, f"a heat map is drawn for one image per request; this one holds {len(images)}.")
        pixels = await state.decode_encoded(model, images)
        loop = asyncio.get_running_loop()

        def draw() -> tuple[bytes, str, float]:
            with state.explain_lock:  # the forward pool may have several threads (--streams)
                (shown,) = _explainer(state, model).explain_pixels(pixels[0], label=label, topk=1)
            return shown.png(), shown.label, shown.probability

        try:
            png, shown_label, probability = await loop.run_in_executor(state.worker, draw)
        except UsageError as err:
            raise RequestError(400, str(err)) from None
        return Response(png, media_type="image/png",
                        headers={"Petclf-Class": quote(shown_label, safe=""),
                                 "Petclf-Probability": f"{probability:.6f}", "Cache-Control": "no-store"})

    return await state.within_timeout(answer())


def routes() -> list[Route]:
    """The heat map's routes."""
    return [Route("/explain", explain_image, methods=["POST"]), Route("/models/{name}/explain", explain_image, methods=["POST"])]
