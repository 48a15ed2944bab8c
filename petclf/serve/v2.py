"""The Open Inference Protocol (KServe v2, Triton's HTTP/REST API), so ``tritonclient.http`` and KServe's SDK
work unchanged, and a deployment that outgrows one machine moves to Triton or KServe with the ONNX export.

Long on purpose: the protocol's request parsing and validation (JSON and binary tensors) read as one unit.

A model takes one of two inputs per request:

- ``image``, BYTES, shape ``[N]`` (or ``[N, 1]``): encoded image files (JPEG, PNG, …), each read as
  ``Predictor`` reads a file. In the JSON form each element is the file's bytes in base64 (JSON
  strings cannot hold arbitrary bytes); with the binary-data extension they are raw.
- ``pixels``, UINT8, shape ``[N, presize, presize, 3]``: RGB pixels as the ONNX export takes them
  (``petclf.runtime.export.onnx_input``), so client code written for the export runs here.

and answers with (all of them unless the request names some):

- ``probabilities``, FP32, ``[N, classes]``, in the model's class order (``GET /metadata``);
- ``labels``, BYTES, ``[N, classes]``: the class names ordered most likely first;
- ``logits``, FP32, ``[N, classes]``: the raw scores, as the ONNX export's output of the same name,
  so a client that sends ``pixels`` and reads ``logits`` runs unchanged against Triton or KServe
  serving that export;
- for a model with an "unknown" detector also ``ood_score``, FP32, ``[N]`` (higher: less like the training
  images) and ``unknown``, BOOL, ``[N]`` (over the model's threshold, or ``ServeOptions.unknown_accept``'s), as in
  the ONNX export.

With Triton's classification extension (``class_count=k`` in tritonclient) ``probabilities`` or
``logits`` come as BYTES ``[N, k]`` of ``"value:index:label"``, most likely first.

Errors are ``{"error": reason}`` with status 400 (Triton's form), 404 for unknown models.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from petclf.core.safe_text import printable
from petclf.serve.body import ascii_count, content_type, read_body
from petclf.serve.errors import RequestError
from petclf.serve.models import ServedModel
from petclf.serve.state import ServerState, server_state

__all__ = ["INPUT_IMAGE", "INPUT_PIXELS", "OUTPUTS", "UNKNOWN_OUTPUTS", "VERSION", "model_outputs", "inference_response",
           "model_metadata", "parse_inference", "routes"]

INPUT_IMAGE, INPUT_PIXELS = "image", "pixels"
#: Output names, as they are answered when a request names none.
OUTPUTS = ("probabilities", "labels", "logits")
#: The outputs a model with an "unknown" detector adds.
UNKNOWN_OUTPUTS = ("ood_score", "unknown")
#: Each output's datatype, and whether it has a column per class ([N, classes]) or one value per image ([N]).
_OUTPUT_TYPES = {"probabilities": ("FP32", True), "labels": ("BYTES", True), "logits": ("FP32", True),
                 "ood_score": ("FP32", False), "unknown": ("BOOL", False)}
#: A model directory is one version of a model; clients that name a version must name this one.
VERSION = "1"
_HEADER_LENGTH = "inference-header-content-length"
_BODY_TYPES = ("", "application/json", "application/octet-stream")
_END = object()  # marks an exhausted list while flattening nested JSON data


@dataclass(frozen=True)
class _Output:
    name: str
    binary: bool
    classification: int  # 0: the whole tensor; k: Triton's classification extension, top k


@dataclass(frozen=True)
class _Inference:
    images: list[tuple[str, bytes]] | None  # encoded files (input 'image'), or
    pixels: np.ndarray | None  # ready pixels (input 'pixels')
    outputs: list[_Output]
    request_id: str | None


def _bad(reason: str) -> RequestError:
    return RequestError(400, reason)


def _model(request: Request) -> tuple[ServerState, ServedModel]:
    state = server_state(request)
    model = state.model(request.path_params["name"])
    version = request.path_params.get("version")
    if version is not None and version != VERSION:
        raise RequestError(404, f"model {model.name!r} has no version {printable(version)!r}: the served version is "
                                f"{VERSION!r} (or leave the version out).")
    return state, model


def model_outputs(model: ServedModel) -> tuple[str, ...]:
    """The output names ``model`` answers (all of them when a request names none)."""
    return OUTPUTS + (UNKNOWN_OUTPUTS if model.has_unknown else ())


def model_metadata(model: ServedModel) -> dict:
    """The v2 model metadata: name, versions, platform, and the inputs and outputs with datatypes and shapes."""
    p, c = model.presize, len(model.classes)
    return {"name": model.name, "versions": [VERSION], "platform": "petclf_pytorch",
            "inputs": [{"name": INPUT_IMAGE, "datatype": "BYTES", "shape": [-1]},
                       {"name": INPUT_PIXELS, "datatype": "UINT8", "shape": [-1, p, p, 3]}],
            "outputs": [{"name": name, "datatype": _OUTPUT_TYPES[name][0],
                         "shape": [-1, c] if _OUTPUT_TYPES[name][1] else [-1]} for name in model_outputs(model)]}


# ---- reading a request -----------------------------------------------------------------------------------------

def _split_body(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """The JSON inference request and the binary tensor data after it (the binary-data extension)."""
    if header_length is None:
        head, tail = body, b""
    else:
        length = ascii_count(header_length)
        if length is None or length > len(body):
            raise _bad(f"Inference-Header-Content-Length {printable(header_length)[:40]!r} is not a length within "
                       f"the {len(body)}-byte body.")
        head, tail = body[:length], body[length:]
    if not head:
        raise _bad("the request body is empty: expected a JSON inference request "
                   '({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["<base64>"]}]}).')
    try:
        request = json.loads(head)
    except (ValueError, RecursionError) as err:
        raise _bad(f"the inference request is not valid JSON ({printable(str(err))[:160]}).") from None
    if not isinstance(request, dict):
        raise _bad("the inference request must be a JSON object with an 'inputs' list.")
    return request, tail


def _shape(tensor: dict) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise _bad(f"input {printable(tensor.get('name'))!r}: 'shape' must be a list of non-negative integers. "
                   f"Received: {printable(shape)[:80]}.")
    return shape


def _flat(data: object, *, count: int, name: str) -> list:
    """The JSON 'data' of a tensor as a flat list (nested lists allowed, as Triton allows), of exactly ``count``."""
    if not isinstance(data, list):
        raise _bad(f"input {name!r}: 'data' must be a list (or use the binary-data extension).")
    flat, stack = [], [iter(data)]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            flat.append(item)
            if len(flat) > count:
                break
    if len(flat) != count:
        raise _bad(f"input {name!r}: 'data' holds {'more than ' if len(flat) > count else ''}{len(flat)} elements; "
                   f"its shape says {count}.")
    return flat



def _parameters(item: dict, where: str) -> dict:
    """The 'parameters' object of a request, input or output ({} when absent or null); 400 when not an object."""
    params = item.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise _bad(f"{where}: 'parameters' must be a JSON object such as {{\"binary_data_output\": true}}. "
                   f"Received: {printable(json.dumps(params))[:80]}.")
    return params


def _binary_parts(inputs: list[dict], tail: bytes) -> list[bytes | None]:
    """Each input's binary data (None for JSON data), cut from ``tail`` in the order of the inputs."""
    parts, offset = [], 0
    for tensor in inputs:
        size = _parameters(tensor, f"input {printable(tensor.get('name'))[:40]!r}").get("binary_data_size")
        if size is None:
            parts.append(None)
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(tail):
            raise _bad(f"input {printable(tensor.get('name'))!r}: binary_data_size {printable(size)} does not fit the "
                       f"{len(tail)} bytes after the JSON header.")
        parts.append(tail[offset:offset + size])
        offset += size
    if offset != len(tail):
        raise _bad(f"{len(tail) - offset} bytes after the JSON header belong to no input: check binary_data_size and "
                   "Inference-Header-Content-Length.")
    return parts


def _byte_elements(raw: bytes, *, count: int, name: str) -> list[bytes]:
    """BYTES tensor data in the binary form: each element a 4-byte little-endian length, then its bytes."""
    items, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise _bad(f"input {name!r}: BYTES data ends inside an element's 4-byte length.")
        (length,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + length > len(raw):
            raise _bad(f"input {name!r}: a BYTES element claims {length} bytes; only {len(raw) - pos} follow.")
        items.append(raw[pos:pos + length])
        pos += length
    if len(items) != count:
        raise _bad(f"input {name!r}: the BYTES data holds {len(items)} elements; its shape says {count}.")
    return items


def _images(tensor: dict, raw: bytes | None, shape: list[int]) -> list[tuple[str, bytes]]:
    if tensor.get("datatype") != "BYTES":
        raise _bad(f"input {INPUT_IMAGE!r} must have datatype BYTES (encoded image files). "
                   f"Received: {printable(tensor.get('datatype'))!r}; send decoded pixels as {INPUT_PIXELS!r} (UINT8).")
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise _bad(f"input {INPUT_IMAGE!r} must have shape [N] or [N, 1] (one encoded file per image). "
                   f"Received: {shape}.")
    n = shape[0]
    if raw is not None:
        blobs = _byte_elements(raw, count=n, name=INPUT_IMAGE)
    else:
        blobs = []
        for k, text in enumerate(_flat(tensor.get("data"), count=n, name=INPUT_IMAGE)):
            try:
                blobs.append(base64.b64decode(text, validate=True))
            except (TypeError, ValueError, binascii.Error):
                raise _bad(f"input {INPUT_IMAGE!r}, element {k}: in the JSON form each element is an image file in "
                           "base64 (or send raw bytes with the binary-data extension, as tritonclient does).") from None
    return [(f"image {k}", blob) for k, blob in enumerate(blobs)]


def _pixels(tensor: dict, raw: bytes | None, shape: list[int], presize: int) -> np.ndarray:
    expected = [presize, presize, 3]
    if tensor.get("datatype") != "UINT8":
        raise _bad(f"input {INPUT_PIXELS!r} must have datatype UINT8 (RGB values 0..255). "
                   f"Received: {printable(tensor.get('datatype'))!r}.")
    if len(shape) != 4 or shape[1:] != expected:
        raise _bad(f"input {INPUT_PIXELS!r} must have shape [N, {presize}, {presize}, 3] (RGB, shorter side resized to "
                   f"{presize} and centre-cropped, as petclf.runtime.export.onnx_input makes). Received: {shape}.")
    count = math.prod(shape)
    if raw is not None:
        if len(raw) != count:
            raise _bad(f"input {INPUT_PIXELS!r}: {len(raw)} bytes of data; shape {shape} needs {count}.")
        return np.frombuffer(raw, dtype=np.uint8).reshape(shape).copy()
    values = _flat(tensor.get("data"), count=count, name=INPUT_PIXELS)
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in values):
        raise _bad(f"input {INPUT_PIXELS!r}: every element must be an integer from 0 to 255.")
    return np.array(values, dtype=np.uint8).reshape(shape)


def _outputs(request: dict, names: tuple[str, ...] = OUTPUTS) -> list[_Output]:
    default_binary = bool(_parameters(request, "the inference request").get("binary_data_output", False))
    asked = request.get("outputs") or [{"name": name} for name in names]
    if not isinstance(asked, list):
        raise _bad("'outputs' must be a list of {\"name\": …} objects.")
    outputs, seen = [], set()
    for item in asked:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in names or name in seen:
            raise _bad(f"unknown or repeated output {printable(name)!r}: the outputs are "
                       f"{', '.join(map(repr, names))}, each at most once.")
        seen.add(name)
        params = _parameters(item, f"output {name!r}")
        k = params.get("classification", 0)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0 or (k and name not in ("probabilities", "logits")):
            raise _bad(f"output {name!r}: 'classification' must be a non-negative integer, on 'probabilities' or "
                       f"'logits' only. Received: {printable(k)!r}.")
        outputs.append(_Output(name, bool(params.get("binary_data", default_binary)), k))
    return outputs


def parse_inference(body: bytes, header_length: str | None, *, model: ServedModel, max_images: int) -> _Inference:
    """An inference request's one input (image files or pixels) and its requested outputs, or 400 saying what is wrong.

    Example: ``parse_inference(b'{"inputs": [...]}', None, model=m, max_images=64).images``.
    """
    request, tail = _split_body(body, header_length)
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(t, dict) for t in inputs) or len(inputs) != 1:
        raise _bad(f"'inputs' must be a list of one input: {INPUT_IMAGE!r} (BYTES, encoded files) or {INPUT_PIXELS!r} "
                   f"(UINT8 [N, {model.presize}, {model.presize}, 3]).")
    raw = _binary_parts(inputs, tail)[0]
    tensor = inputs[0]
    shape = _shape(tensor)
    if not shape or not 1 <= shape[0] <= max_images:
        raise RequestError(400 if not shape or shape[0] < 1 else 413,
                           f"the batch dimension must be 1 to {max_images} (images per request). Received shape "
                           f"{shape}.")
    images = pixels = None
    if tensor.get("name") == INPUT_IMAGE:
        images = _images(tensor, raw, shape)
    elif tensor.get("name") == INPUT_PIXELS:
        pixels = _pixels(tensor, raw, shape, model.presize)
    else:
        raise _bad(f"unknown input {printable(tensor.get('name'))!r}: expected {INPUT_IMAGE!r} (BYTES) or "
                   f"{INPUT_PIXELS!r} (UINT8).")
    request_id = request.get("id")
    return _Inference(images=images, pixels=pixels, outputs=_outputs(request, model_outputs(model)),
                      request_id=request_id if isinstance(request_id, str) else None)


# ---- writing the answer ------------------------------------------------------------------------------------------

def _bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def _tensor(output: _Output, logits: np.ndarray, probs: np.ndarray, model: ServedModel,
            ood: np.ndarray | None = None, unknown: np.ndarray | None = None) -> tuple[str, list[int], list | np.ndarray]:
    """(datatype, shape, values) of one output: a float32 or bool array, or a list of bytes for BYTES."""
    if output.name == "ood_score":
        return "FP32", [len(ood)], ood.astype("<f4")
    if output.name == "unknown":
        return "BOOL", [len(unknown)], unknown.astype(np.bool_)
    order = np.argsort(-probs, axis=1, kind="stable")
    if output.name == "labels":
        names = [model.classes[i].encode() for row in order for i in row]
        return "BYTES", list(probs.shape), names
    values = probs if output.name == "probabilities" else logits
    if output.classification:
        k = min(output.classification, values.shape[1])
        rows = [f"{values[r, i]:f}:{i}:{model.classes[i]}".encode() for r in range(len(values)) for i in order[r, :k]]
        return "BYTES", [len(values), k], rows
    return "FP32", list(values.shape), values.astype("<f4")


def inference_response(model: ServedModel, logits: np.ndarray, spec: _Inference) -> Response:
    """The v2 response: JSON, or JSON followed by the binary outputs when any output asked for binary data."""
    logits, ood, unknown = model.split(logits)
    probs = model.probabilities(logits)
    outputs, blobs = [], []
    for output in spec.outputs:
        datatype, shape, values = _tensor(output, logits, probs, model, ood, unknown)
        entry: dict = {"name": output.name, "datatype": datatype, "shape": shape}
        if output.binary:
            blob = values.tobytes() if datatype != "BYTES" else _bytes_tensor(values)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = values.ravel().tolist() if datatype != "BYTES" else [v.decode() for v in values]
        outputs.append(entry)
    answer = {"model_name": model.name, "model_version": VERSION, "outputs": outputs}
    if spec.request_id is not None:
        answer["id"] = spec.request_id
    if not blobs:
        return JSONResponse(answer)
    head = json.dumps(answer).encode()
    return Response(head + b"".join(blobs), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(head))})


# ---- endpoints -------------------------------------------------------------------------------------------------

async def infer(request: Request) -> Response:
    """``POST /v2/models/{name}[/versions/{version}]/infer``."""
    state, model = _model(request)
    kind = content_type(request)
    if kind not in _BODY_TYPES:
        raise RequestError(415, f"an inference request is JSON (application/json), optionally followed by binary "
                                f"tensor data (application/octet-stream). Received: {printable(kind)}; to upload "
                                "image files as a form, POST them to /predict.")

    async def answer() -> Response:
        body = await read_body(request, limit=state.options.max_body_bytes)
        spec = parse_inference(body, request.headers.get(_HEADER_LENGTH), model=model,
                               max_images=state.options.max_images)
        if spec.pixels is not None:
            logits = await state.predict_pixels(model, spec.pixels)
        else:
            logits = await state.predict_encoded(model, spec.images)
        return inference_response(model, logits, spec)

    return await state.within_timeout(answer())


async def model_metadata_endpoint(request: Request) -> JSONResponse:
    """``GET /v2/models/{name}[/versions/{version}]``."""
    return JSONResponse(model_metadata(_model(request)[1]))


async def model_ready(request: Request) -> Response:
    """``GET /v2/models/{name}[/versions/{version}]/ready``: 200 when the model answers."""
    state, _ = _model(request)
    return Response(status_code=200 if state.ready else 503)


async def live(request: Request) -> Response:
    """``GET /v2/health/live``: 200 while the process serves HTTP."""
    return Response(status_code=200)


async def ready(request: Request) -> Response:
    """``GET /v2/health/ready``: 200 once every model answers, 503 while starting or stopping."""
    return Response(status_code=200 if server_state(request).ready else 503)


async def server_metadata(request: Request) -> JSONResponse:
    """``GET /v2``: the server's name, version and protocol extensions."""
    from petclf import __version__  # noqa: PLC0415 - the package's own version, set before its parts load

    return JSONResponse({"name": "petclf", "version": __version__,
                         "extensions": ["binary_tensor_data", "classification"]})


def routes() -> list[Route]:
    """The Open Inference Protocol's routes (with and without a model version in the path)."""
    out = [Route("/v2", server_metadata, methods=["GET"]),
           Route("/v2/health/live", live, methods=["GET"]),
           Route("/v2/health/ready", ready, methods=["GET"])]
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        out += [Route(base, model_metadata_endpoint, methods=["GET"]),
                Route(base + "/ready", model_ready, methods=["GET"]),
                Route(base + "/infer", infer, methods=["POST"])]
    return out
