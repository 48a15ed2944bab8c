"""What `petclf serve` refuses below the app: Host names on loopback, header size and time, decode memory."""
from __future__ import annotations

import asyncio
import io
import json
import select
import socket
import threading
import time
import tracemalloc

import httpx
import numpy as np
import pytest
from PIL import Image

from petclf.data.images import to_rgb
from petclf.serve import ServeOptions
from petclf.serve.budget import PixelBudget
from petclf.serve.hosts import LOOPBACK_HOSTS, host_allowed, host_name
from petclf.serve.server import prepare

from .conftest import image_bytes


class PreparedServer:
    """The server `petclf serve` runs (``prepare``: its protocol, limits and Host rule), in a thread, until ``stop``."""

    def __init__(self, model_dir, *, host: str = "127.0.0.1", **options) -> None:
        options = ServeOptions(precision="fp32", access_log=False, **options)
        self.server, self.sock = prepare([model_dir], host=host, port=0, options=options)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "PreparedServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture(scope="module")
def loopback(model_dir):
    with PreparedServer(model_dir, max_header_kb=4, header_timeout_s=0.5, max_decode_mpx=1) as running:
        yield running


def _exchange(port: int, data: bytes, *, pause_s: float = 0.0, drip: bool = False) -> tuple[int, dict, float]:
    """Send ``data`` (all at once, or a byte at a time ``pause_s`` apart), read until the server closes: the status,
    the JSON body and the seconds until the close."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            if drip:
                for k in range(len(data)):
                    if select.select([sock], [], [], pause_s)[0]:
                        break  # answered: more bytes would only reset the connection before the answer is read
                    sock.sendall(data[k:k + 1])
            else:
                sock.sendall(data)
        except OSError:  # closed by the server while this was still sending
            pass
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), answer[:200]
    headers = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:])
    assert headers["content-type"] == "application/json", head
    return int(head.split()[1]), json.loads(body), time.monotonic() - start


# ---- item 7: Host names on loopback ---------------------------------------------------------------------------

def test_host_names_are_parsed_without_port_brackets_or_final_dot():
    assert host_name("LocalHost.:8000") == "localhost"
    assert host_name("[::1]:8000") == "::1" and host_name("[::1]") == "::1"
    assert host_name("127.0.0.1") == "127.0.0.1"
    for bad in ("", "[::1", "localhost:80x", "localhost:²", "a:b:c"):
        assert host_name(bad) is None, bad
    assert all(host_allowed(host_name(h), LOOPBACK_HOSTS) for h in ("localhost:1", "127.0.0.1:8000", "[::1]:9"))
    assert not host_allowed(host_name("localhost.evil.example"), LOOPBACK_HOSTS)
    assert host_allowed("api.example.org", ("*.example.org",))
    assert not host_allowed("example.org.evil", ("*.example.org",))
    assert host_allowed(None, ("*",)) and not host_allowed(None, ("localhost",))


def test_on_loopback_only_loopback_host_names_are_answered(loopback):
    with httpx.Client(base_url=loopback.url, timeout=30) as client:
        port = loopback.port
        for host in ("127.0.0.1", f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", "[::1]:8000"):
            assert client.get("/health", headers={"host": host}).status_code == 200, host
        # A page of evil.example whose DNS name now points at 127.0.0.1 (DNS rebinding) sends its own name.
        for host in ("evil.example", f"evil.example:{loopback.port}", "localhost.evil.example", "127.0.0.1.nip.io"):
            refused = client.post("/predict", content=image_bytes(1),
                                  headers={"host": host, "content-type": "image/png"})
            assert refused.status_code == 400 and refused.headers["content-type"] == "application/json", host
            assert "answers requests for the host names localhost, 127.0.0.1, [::1] only" in refused.json()["error"]
            assert "--allowed-host" in refused.json()["error"]
    # HTTP/1.0 without a Host header: no browser sends that, and nothing says which name it meant.
    status, body, _ = _exchange(loopback.port, b"GET /health HTTP/1.0\r\n\r\n")
    assert status == 400 and "0 Host headers" in body["error"]


def test_on_every_interface_any_host_is_answered_unless_names_are_given(model_dir):
    with PreparedServer(model_dir, host="0.0.0.0") as running, httpx.Client(base_url=running.url, timeout=30) as client:
        assert client.get("/health", headers={"host": "pets.example.org"}).status_code == 200
    with PreparedServer(model_dir, host="0.0.0.0", allowed_hosts=("api.example.org",)) as running, \
            httpx.Client(base_url=running.url, timeout=30) as client:
        assert client.get("/health", headers={"host": "api.example.org:443"}).status_code == 200
        assert client.get("/health", headers={"host": "pets.example.org"}).status_code == 400
    # On loopback, a reverse proxy's public name is answered once it is named (and then only the names given).
    with PreparedServer(model_dir, allowed_hosts=("pets.example.org",)) as running, \
            httpx.Client(base_url=running.url, timeout=30) as client:
        assert client.get("/health", headers={"host": "pets.example.org"}).status_code == 200
        assert client.get("/health").status_code == 400


# ---- item 11: headers, their size and their time ----------------------------------------------------------------

def test_headers_over_the_limit_get_431_json(loopback):
    # Just over the limit, whole in one read (h11's own limit applies only to incomplete headers).
    status, body, _ = _exchange(loopback.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 5000
                                + b"\r\n\r\n")
    assert status == 431 and "larger than the server's limit of 4 KiB" in body["error"]
    # A 4 MiB header line: refused at the limit, and the client, still sending, reads the answer (no reset).
    status, body, _ = _exchange(loopback.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                                + b"a" * 2**22 + b"\r\n\r\n")
    assert status == 431 and "larger than the server's limit of 4 KiB" in body["error"]
    assert "--max-header-kb" in body["error"]
    with httpx.Client(base_url=loopback.url, timeout=30) as client:  # under the limit, headers are fine
        assert client.get("/health", headers={"x-fine": "a" * 3000}).status_code == 200


def test_headers_sent_slowly_get_408_json_at_the_header_timeout(loopback):
    # A byte every 0.1 s: each byte arrives well within the timeout, but the headers do not.
    status, body, seconds = _exchange(loopback.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                                      pause_s=0.1, drip=True)
    assert status == 408 and "did not arrive within the server's 0.5 s limit" in body["error"]
    # A connection that sends nothing is closed as well.
    with socket.create_connection(("127.0.0.1", loopback.port), timeout=20) as sock:
        assert b"408 Request Timeout" in sock.recv(65536)


def test_a_kept_alive_connection_gets_the_same_header_timeout_for_its_next_request(loopback):
    with socket.create_connection(("127.0.0.1", loopback.port), timeout=20) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.8)  # idle longer than the header timeout: idle is uvicorn's keep-alive timeout's (5 s) to end
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408")


def test_a_malformed_request_gets_400_json(loopback):
    status, body, _ = _exchange(loopback.port, b"GARBAGE\r\n\r\n")
    assert status == 400 and body["error"].startswith("not a valid HTTP/1.1 request (")
    status, body, _ = _exchange(loopback.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n")
    assert status == 400 and "not a valid HTTP/1.1 request" in body["error"]
    # A chunked body that breaks its own framing while the app reads it.
    status, body, _ = _exchange(loopback.port, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                b"Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nZZ\r\n")
    assert status == 400 and "not a valid HTTP/1.1 request" in body["error"]
    with httpx.Client(base_url=loopback.url, timeout=30) as client:
        assert client.get("/health").status_code == 200


# ---- item 11: decoding memory -----------------------------------------------------------------------------------

def _png(width: int, height: int, *, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def test_images_beyond_the_decode_budget_are_refused_before_decoding(loopback):
    with httpx.Client(base_url=loopback.url, timeout=30) as client:
        alone = client.post("/predict", content=_png(1250, 1000), headers={"content-type": "image/png"})
        assert alone.status_code == 422 and "the body holds 1.2 Mpx; the server decodes at most 1 Mpx at once" in \
            alone.json()["error"]
        pair = client.post("/predict", files=[("image", (f"{k}.png", _png(800, 700, seed=k))) for k in range(2)])
        assert pair.status_code == 413 and "the 2 images of this request hold 1.1 Mpx together" in pair.json()["error"]
        assert "--max-decode-mpx" in pair.json()["error"]
        one = client.post("/predict", content=_png(800, 700), headers={"content-type": "image/png"})
        assert one.status_code == 200
        # A JPEG is budgeted at the reduced scale it is decoded at (1/8 here), not at its full size.
        buf = io.BytesIO()
        Image.new("RGB", (2000, 1500), (200, 40, 40)).save(buf, format="JPEG")
        jpeg = client.post("/predict", content=buf.getvalue(), headers={"content-type": "image/jpeg"})
        assert jpeg.status_code == 200


def test_sixteen_bit_images_convert_without_a_float64_copy_and_to_the_same_values():
    rng = np.random.default_rng(0)
    wide = Image.fromarray(rng.integers(0, 65536, size=(1000, 2000), dtype=np.uint16))
    assert wide.mode == "I;16"
    tracemalloc.start()
    try:
        rgb = to_rgb(wide)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # numpy's arrays are traced: a float64 copy alone would be 8 bytes a pixel, the old conversion held three.
    assert peak < 6 * wide.width * wide.height, f"{peak / 1e6:.0f} MB for 2 Mpx"
    expected = np.clip(np.asarray(wide, dtype=np.float64) * (255.0 / 65535.0), 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(rgb)[..., 0], expected)
    for values in (rng.integers(-9, 70_000, size=(300, 4000), dtype=np.int32),  # 'I', over 255: scaled as 16-bit
                   rng.integers(0, 256, size=(30, 40), dtype=np.int32),  # 'I', within 0..255: kept
                   rng.random((500, 2100), dtype=np.float32) * 300):  # 'F'
        img = Image.fromarray(values)
        top = 65535.0 if values.max() > 255 else 255.0
        expected = np.clip(values.astype(np.float64) * (255.0 / top), 0, 255).astype(np.uint8)
        assert np.array_equal(np.asarray(to_rgb(img))[..., 0], expected), img.mode


def test_the_pixel_budget_is_never_exceeded_and_serves_in_order():
    async def scenario() -> tuple[list[str], int]:
        budget, order, peak = PixelBudget(10), [], 0

        async def request(name: str, pixels: int, hold_s: float) -> None:
            nonlocal peak
            async with budget.hold(pixels):
                order.append(name)
                peak = max(peak, budget.used)
                await asyncio.sleep(hold_s)

        big_waits = asyncio.create_task(request("a", 6, 0.05))
        await asyncio.sleep(0)
        tasks = [big_waits, asyncio.create_task(request("big", 10, 0.01)), asyncio.create_task(request("c", 1, 0))]
        # 'timed out' queues behind 'big', then is cancelled: the rest go on, its place is not kept.
        cancelled = asyncio.create_task(request("timed out", 3, 0))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.gather(*tasks)
        assert budget.used == 0 and not budget._waiting
        with pytest.raises(ValueError):
            await budget.acquire(11)
        return order, peak

    order, peak = asyncio.run(scenario())
    assert order == ["a", "big", "c"] and peak == 10  # 'c' fits beside 'a' but waits its turn behind 'big'


def test_a_failed_or_timed_out_request_keeps_its_pixels_until_its_decoders_stop():
    from concurrent.futures import ThreadPoolExecutor

    from petclf.serve.metrics import Metrics
    from petclf.serve.state import ServerState

    async def scenario() -> None:
        state = ServerState(models={}, options=ServeOptions(), metrics=Metrics(max_batch=1))
        state.budget = PixelBudget(10)
        await state.budget.acquire(10)
        still_decoding = threading.Event()
        with ThreadPoolExecutor(max_workers=1) as pool:
            jobs = [pool.submit(still_decoding.wait, 20), pool.submit(time.sleep, 0)]
            await asyncio.sleep(0.05)
            state._release_when_decoded(jobs, 10, asyncio.get_running_loop())
            assert jobs[1].cancelled()  # queued, not started: it never will be
            await asyncio.sleep(0.1)
            assert state.budget.used == 10  # a thread still decodes: its memory is still held
            still_decoding.set()
            for _ in range(200):
                await asyncio.sleep(0.01)
                if state.budget.used == 0:
                    break
            assert state.budget.used == 0

    asyncio.run(scenario())


def test_the_new_limits_are_validated_with_the_value_named():
    from petclf.core.errors import UsageError

    for bad, words in ((dict(allowed_hosts="localhost"), "allowed_hosts must be a tuple"),
                       (dict(allowed_hosts=("",)), "allowed_hosts must be a tuple"),
                       (dict(max_decode_mpx=0), "max_decode_mpx must be from"),
                       (dict(max_header_kb=0.5), "max_header_kb must be from"),
                       (dict(header_timeout_s=0), "header_timeout_s must be from")):
        with pytest.raises(UsageError, match=words):
            ServeOptions(**bad).validate()
