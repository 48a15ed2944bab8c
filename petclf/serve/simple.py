"""The simple JSON API: ``POST /predict`` (and ``/models/NAME/predict``), ``GET /health``, ``GET /metadata``.

``POST /predict`` takes one image as the raw body (``Content-Type: image/jpeg``, ``image/png``, …
or ``application/octet-stream``) or any number of files as ``multipart/form-data``, and answers
``{"model": NAME, "predictions": [[{"label": …, "probability": …}, …], …]}``: one list per image, in
the order sent, most likely label first. A model with an "unknown" detector adds ``"ood_scores"`` and
``"unknown"`` (one number and one boolean per image: how unlike the training images it is, and whether that
is over the model's threshold, or the one ``ServeOptions.unknown_accept`` sets); with ``?reject_unknown=true``
an unknown image's predictions are ``[]``.
"""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from petclf.core.safe_text import printable
from petclf.serve.body import ascii_count, content_type, parse_multipart, read_body
from petclf.serve.errors import RequestError
from petclf.serve.state import ServerState, server_state

__all__ = ["request_images", "routes"]

# A raw body is taken as one image under these media types (or none at all, as `curl --data-binary` without -H
# would send one if it did not default to form encoding).
_RAW_TYPES = ("application/octet-stream", "")


def _topk(request: Request) -> int | None:
    text = request.query_params.get("topk")
    if text is None:
        return None
    count = ascii_count(text)
    if not count:
        raise RequestError(400, f"topk must be a positive integer. Received: topk={printable(text)[:40]!r}.")
    return count


def _reject_unknown(request: Request) -> bool:
    text = request.query_params.get("reject_unknown", "false").lower()
    if text not in ("true", "1", "false", "0"):
        raise RequestError(400, f"reject_unknown must be true or false. Received: {printable(text)[:40]!r}.")
    return text in ("true", "1")


async def _images(request: Request, state: ServerState) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image in the request: the raw body, or every file of a multipart body."""
    kind = content_type(request)
    if kind != "multipart/form-data" and not kind.startswith("image/") and kind not in _RAW_TYPES:
        hint = " (curl sends form encoding for --data-binary: add -H 'Content-Type: image/jpeg', or use -F " \
               "image=@cat.jpg)" if kind == "application/x-www-form-urlencoded" else ""
        raise RequestError(415, f"cannot read a {printable(kind)} body as images: expected an image (Content-Type "
                                f"image/jpeg, image/png, …, or application/octet-stream) or multipart/form-data "
                                f"files{hint}.")
    body = await read_body(request, limit=state.options.max_body_bytes)
    if kind != "multipart/form-data":
        if not body:
            raise RequestError(400, "the request body is empty: send the bytes of an image (curl --data-binary "
                                    "@cat.jpg -H 'Content-Type: image/jpeg') or multipart files "
                                    "(curl -F image=@cat.jpg).")
        return [("the body", body)]
    parts = parse_multipart(body, request.headers["content-type"], max_parts=state.options.max_images)
    files = [p for p in parts if p.filename is not None]
    return [(f"file {k + 1} ({printable(p.filename)!r})" if p.filename else f"file {k + 1}", p.data)
            for k, p in enumerate(files)]


#: The images of a request as ``/predict`` reads them, for the other routes that take images (the heat map's).
request_images = _images


async def predict(request: Request) -> JSONResponse:
    """Top-k labels and probabilities for each image of the request (see the module's docstring)."""
    state = server_state(request)
    model = state.model(request.path_params.get("name"))
    topk, reject = _topk(request), _reject_unknown(request)

    async def answer() -> dict:
        logits, ood, unknown = model.split(await state.predict_encoded(model, await _images(request, state)))
        predictions = model.top(model.probabilities(logits), topk)
        if ood is None:
            return {"predictions": predictions}
        if reject:
            predictions = [[] if flag else top for top, flag in zip(predictions, unknown.tolist())]
        return {"predictions": predictions, "ood_scores": ood.tolist(), "unknown": unknown.tolist()}

    return JSONResponse({"model": model.name, **await state.within_timeout(answer())})


async def health(request: Request) -> JSONResponse:
    """200 and the model names once every model is loaded and its batcher runs; 503 while starting or stopping."""
    state = server_state(request)
    if not state.ready:
        return JSONResponse({"error": "the server is starting or shutting down."}, status_code=503)
    return JSONResponse({"status": "ok", "models": list(state.models)})


async def metadata(request: Request) -> JSONResponse:
    """Each served model's card: classes, architecture, input, validation metrics, versions."""
    state = server_state(request)
    return JSONResponse({"models": [model.card() for model in state.models.values()]})


async def prometheus_metrics(request: Request) -> Response:
    """Prometheus text exposition of the server's own registry."""
    body, media_type = server_state(request).metrics.render()
    return Response(body, media_type=media_type)


def routes() -> list[Route]:
    """The simple API's routes."""
    return [
        Route("/predict", predict, methods=["POST"]),
        Route("/models/{name}/predict", predict, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metadata", metadata, methods=["GET"]),
        Route("/metrics", prometheus_metrics, methods=["GET"]),
    ]
