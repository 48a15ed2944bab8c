"""Bad input gets a 4xx JSON reason and the server goes on serving; limits and timeouts hold."""
from __future__ import annotations

import base64
import json
import struct
import zlib

import httpx
import pytest

from petclf.serve import ServeOptions, app

from ..web import ThreadServer
from .conftest import image_bytes
from .test_process import _send_slowly


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width × height pixels (and holds a few rows): a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (width * 3 + 1) * 4, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def _assert_refused(answer: httpx.Response, status: int, words: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    reason = answer.json()["error"]
    assert words.lower() in reason.lower(), reason


def _still_serving(client: httpx.Client) -> None:
    assert client.get("/health").status_code == 200
    ok = client.post("/predict", content=image_bytes(5), headers={"content-type": "image/png"})
    assert ok.status_code == 200 and len(ok.json()["predictions"][0]) == 3


PNG = {"content-type": "image/png"}
BAD_SIMPLE = {
    "random bytes": (dict(content=bytes(range(256)) * 8, headers=PNG), 422, "not an image petclf reads"),
    "empty body": (dict(content=b"", headers=PNG), 400, "body is empty"),
    "truncated png": (dict(content=image_bytes(1)[:200], headers=PNG), 422, "cannot read the body"),
    "a text file": (dict(files=[("image", ("notes.txt", b"just some words\n", "text/plain"))]), 422,
                    "file 1 ('notes.txt') is not an image"),
    "bomb over 2x the pixel limit": (dict(content=png_header(20_000, 20_000), headers=PNG), 422, "too large"),
    "image over the pixel limit": (dict(content=png_header(10_000, 10_000), headers=PNG), 422, "too large"),
    "wrong content type": (dict(content=b'{"image": 1}', headers={"content-type": "application/json"}), 415,
                           "expected an image"),
    "curl's default form encoding": (dict(content=image_bytes(1),
                                          headers={"content-type": "application/x-www-form-urlencoded"}), 415,
                                     "-H 'Content-Type: image/jpeg'"),
    "malformed multipart": (dict(content=b"--xyz\r\nnonsense", headers={"content-type": "multipart/form-data"}), 400,
                            "without a boundary"),
    "multipart without files": (dict(data={"a": "b"}, files=[]), 400, "no image"),
    "too many images": (dict(files=[("image", (f"{k}.png", image_bytes(k))) for k in range(17)]), 413,
                        "at most 16 images"),
    "body over the limit": (dict(content=b"\0" * (2 * 2**20 + 1), headers=PNG), 413, "larger than the server's limit"),
    "chunked body over the limit": (dict(content=iter([b"\0" * 2**20] * 3), headers=PNG), 413, "larger than"),
    "gzip bomb": (dict(content=zlib.compress(b"\0" * (8 * 2**20), 9), headers={**PNG, "content-encoding": "deflate"}),
                  413, "larger than"),
    "unknown content encoding": (dict(content=b"x", headers={**PNG, "content-encoding": "br"}), 415, "not supported"),
}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the image is refused all the same
@pytest.mark.parametrize("case", BAD_SIMPLE, ids=list(BAD_SIMPLE))
def test_bad_input_to_predict_is_a_4xx_json_reason(client, case):
    kwargs, status, words = BAD_SIMPLE[case]
    if "files" in kwargs and not kwargs["files"]:  # a form with fields only: build it as multipart by hand
        kwargs = dict(content=b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--b--\r\n',
                      headers={"content-type": "multipart/form-data; boundary=b"})
    _assert_refused(client.post("/predict", **kwargs), status, words)
    _still_serving(client)


def test_bad_query_unknown_routes_and_methods(client):
    _assert_refused(client.post("/predict?topk=0", content=image_bytes(1), headers=PNG), 400, "topk must be")
    _assert_refused(client.post("/predict?topk=x", content=image_bytes(1), headers=PNG), 400, "topk must be")
    for topk in ("%C2%B2", "9" * 5000, "%EF%BC%93"):  # '²', 5000 digits, a fullwidth '３': each int() refuses
        _assert_refused(client.post(f"/predict?topk={topk}", content=image_bytes(1), headers=PNG), 400, "topk must be")
    _assert_refused(client.post("/models/cats/predict", content=image_bytes(1), headers=PNG), 404,
                    "expected one of pets")
    _assert_refused(client.get("/nothing-here"), 404, "the page is at /")
    _assert_refused(client.get("/predict"), 405, "POST")
    _still_serving(client)


def _v2(client: httpx.Client, request: dict | bytes, **headers: str) -> httpx.Response:
    body = request if isinstance(request, bytes) else json.dumps(request).encode()
    return client.post("/v2/models/pets/infer", content=body, headers={"content-type": "application/json", **headers})


def _pixels_input(shape, datatype="UINT8", data=None):
    count = 1
    for d in shape:
        count *= d
    return {"inputs": [{"name": "pixels", "datatype": datatype, "shape": shape, "data": data or [0] * count}]}


BAD_V2 = {
    "not JSON": (b"{nope", 400, "not valid json"),
    "empty": (b"", 400, "empty"),
    "no inputs": ({"outputs": []}, 400, "'inputs' must be a list of one input"),
    "unknown input": ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [0]}]}, 400, "unknown input"),
    "pixels of the wrong shape": (_pixels_input([1, 10, 10, 3]), 400, "must have shape [N, 48, 48, 3]"),
    "pixels of the wrong datatype": (_pixels_input([1, 48, 48, 3], "FP32"), 400, "must have datatype UINT8"),
    "pixels out of range": (_pixels_input([1, 48, 48, 3], data=[300] * (48 * 48 * 3)), 400, "0 to 255"),
    "data shorter than the shape": (_pixels_input([1, 48, 48, 3], data=[0] * 10), 400, "its shape says"),
    "image of the wrong datatype": ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1], "data": [1]}]},
                                    400, "must have datatype BYTES"),
    "image of the wrong shape": ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1, 2],
                                              "data": ["", ""]}]}, 400, "shape [N] or [N, 1]"),
    "image not base64": ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]},
                         400, "base64"),
    "image not an image": ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                        "data": [base64.b64encode(b"hello").decode()]}]},
                           422, "image 0 is not an image"),
    "batch of zero": ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [0], "data": []}]}, 400,
                      "batch dimension"),
    "negative shape": (_pixels_input([1, 48, 48, 3]) | {"inputs": [{"name": "pixels", "datatype": "UINT8",
                                                                      "shape": [-1, 48, 48, 3], "data": [0]}]},
                       400, "non-negative integers"),
    "unknown output": ({**_pixels_input([1, 48, 48, 3]), "outputs": [{"name": "scores"}]}, 400, "unknown or repeated"),
    # 'parameters' of any type but an object used to reach .get(): a 500 ('str' object has no attribute 'get').
    "request parameters a string": ({**_pixels_input([1, 48, 48, 3]), "parameters": "binary"}, 400,
                                    "the inference request: 'parameters' must be a JSON object"),
    "request parameters a list": ({**_pixels_input([1, 48, 48, 3]), "parameters": [1]}, 400,
                                  "the inference request: 'parameters' must be a JSON object"),
    "input parameters a string": ({"inputs": [{**_pixels_input([1, 48, 48, 3])["inputs"][0], "parameters": "x"}]}, 400,
                                  "input 'pixels': 'parameters' must be a JSON object"),
    "input parameters a list": ({"inputs": [{**_pixels_input([1, 48, 48, 3])["inputs"][0], "parameters": []}]}, 400,
                                "input 'pixels': 'parameters' must be a JSON object"),
    "output parameters a number": ({**_pixels_input([1, 48, 48, 3]), "outputs": [{"name": "labels", "parameters": 3}]},
                                   400, "output 'labels': 'parameters' must be a JSON object"),
}


@pytest.mark.parametrize("case", BAD_V2, ids=list(BAD_V2))
def test_bad_v2_requests_are_a_4xx_json_reason(client, case):
    request, status, words = BAD_V2[case]
    _assert_refused(_v2(client, request), status, words)
    _still_serving(client)


def test_bad_v2_binary_data_and_paths(client):
    head = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                   "parameters": {"binary_data_size": 100}}]}).encode()
    # binary_data_size larger than what follows the header
    _assert_refused(_v2(client, head + b"\x05\x00\x00\x00abc", **{"inference-header-content-length": str(len(head))}),
                    400, "does not fit")
    # an element length running past the end
    head = head.replace(b"100", b"7")
    _assert_refused(_v2(client, head + b"\xff\x00\x00\x00abc", **{"inference-header-content-length": str(len(head))}),
                    400, "claims 255 bytes")
    _assert_refused(_v2(client, head, **{"inference-header-content-length": "99999"}), 400, "not a length within")
    # Digits str.isdigit() takes and int() does not ('²', as latin-1 on the wire), and more digits than int() reads.
    for length in ("²".encode("latin-1"), b"9" * 5000, b"-1", b"1e3"):
        _assert_refused(_v2(client, head, **{"inference-header-content-length": length}), 400, "not a length within")
    _assert_refused(client.post("/v2/models/pets/infer", content=image_bytes(1), headers=PNG), 415, "inference request")
    _assert_refused(client.get("/v2/models/cats"), 404, "no model named 'cats'")
    _assert_refused(client.get("/v2/models/pets/versions/2"), 404, "no version '2'")
    _still_serving(client)


def test_a_request_past_its_time_limit_gets_504_and_the_server_goes_on(model_dir):
    options = ServeOptions(precision="fp32", timeout_s=0.3, access_log=False)
    running = ThreadServer(app({"slow": model_dir}, options=options)).start()
    try:
        # A client that sends half its body and stalls (slow loris): answered at the limit, not held open.
        answer = _send_slowly(running.port, image_bytes(1), pause_s=1.5)
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 504") and "0.3 s limit" in json.loads(body)["error"]
        with httpx.Client(base_url=running.url, timeout=30) as client:
            _still_serving(client)
    finally:
        running.stop()


# Every field of a valid v2 request, each replaced by JSON of every type: a 4xx with a reason or an answer, never a 500.
_V2_FIELDS = [("id",), ("inputs",), ("outputs",), ("parameters",), ("inputs", 0), ("inputs", 0, "name"),
              ("inputs", 0, "datatype"), ("inputs", 0, "shape"), ("inputs", 0, "shape", 0), ("inputs", 0, "data"),
              ("inputs", 0, "data", 0), ("inputs", 0, "parameters"), ("outputs", 0), ("outputs", 0, "name"),
              ("outputs", 0, "parameters"), ("outputs", 0, "parameters", "classification"),
              ("parameters", "binary_data_output")]
_JSON_VALUES = ["s", "", [], [1], [[]], {}, {"binary_data_size": "x"}, None, 0, -1, 1.5, True, 10**30]


def test_no_field_of_a_v2_request_of_any_json_type_gets_a_500(client):
    valid = {"id": "x", "parameters": {"binary_data_output": False},
             "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                         "data": [base64.b64encode(image_bytes(1)).decode()]}],
             "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}]}
    assert _v2(client, valid).status_code == 200
    for path in _V2_FIELDS:
        for value in _JSON_VALUES:
            request = json.loads(json.dumps(valid))
            node = request
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            answer = _v2(client, request)
            assert answer.status_code < 500, (path, value, answer.text)
            if answer.status_code >= 400:
                assert answer.json()["error"], (path, value)
    _still_serving(client)
