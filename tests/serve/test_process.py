"""`petclf serve` as a process: it prints its URL, needs no fastai, and SIGTERM lets the request in flight finish."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from petclf.cli import main

from ..web import serving_url
from .conftest import image_bytes

ROOT = Path(__file__).resolve().parents[2]
# Runs the command line as `python -m petclf.cli` would, and says afterwards whether fastai was ever imported.
CHILD = ("import atexit, sys\n"
         "atexit.register(lambda: print('fastai imported:', 'fastai' in sys.modules, file=sys.stderr, flush=True))\n"
         "from petclf.cli import main\n"
         "sys.exit(main(sys.argv[1:]))\n")


def _send_slowly(port: int, body: bytes, *, pause_s: float, during_pause=None) -> bytes:
    """POST /predict with half the body, a pause (calling ``during_pause``), then the rest; the raw answer."""
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body[:len(body) // 2])
        if during_pause is not None:
            during_pause()
        time.sleep(pause_s)
        try:
            sock.sendall(body[len(body) // 2:])
        except OSError:  # the server answered (and closed) before the rest was sent
            pass
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_sigterm_lets_the_request_in_flight_finish(model_dir):
    command = [sys.executable, "-c", CHILD, "serve", str(model_dir), "--port", "0", "--precision", "fp32"]
    proc = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = serving_url(proc)
        # SIGTERM arrives while the request's body is still on its way: the request is in flight.
        answer = _send_slowly(int(url.group(1)), image_bytes(3), pause_s=0.8,
                              during_pause=lambda: (time.sleep(0.2), proc.send_signal(signal.SIGTERM)))
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 200"), answer[:500]
        assert len(json.loads(body)["predictions"][0]) == 3
        assert proc.wait(timeout=30) == 0
        rest = proc.stderr.read()
        assert "stopped: every request in flight was answered" in rest and "fastai imported: False" in rest
        assert re.search(r"127\.0\.0\.1 POST /predict 200 \d+\.\d ms", rest)  # the access-log line
        with httpx.Client(timeout=5) as client:  # nothing listens any more
            with pytest.raises(httpx.ConnectError):
                client.get(url.group(0) + "health")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_refuses_a_folder_that_is_not_a_model(tmp_path, capsys):
    assert main(["serve", str(tmp_path)]) == 2
    assert "is not a petclf model directory" in capsys.readouterr().err


def test_the_limit_flags_reach_the_server_options(monkeypatch, model_dir):
    import petclf.serve

    seen = {}
    monkeypatch.setattr(petclf.serve, "serve", lambda dirs, **kwargs: seen.update(kwargs), raising=False)
    assert main(["serve", str(model_dir), "--allowed-host", "pets.example.org", "--allowed-host", "*.lan",
                 "--max-decode-mpx", "200", "--max-header-kb", "8", "--header-timeout", "3"]) == 0
    options = seen["options"]
    assert options.allowed_hosts == ("pets.example.org", "*.lan") and options.max_decode_mpx == 200
    assert options.max_header_kb == 8 and options.header_timeout_s == 3
    assert main(["serve", str(model_dir)]) == 0 and seen["options"].allowed_hosts == ()  # decided by the address


def test_unknown_accept_reaches_the_server_options_and_is_checked(monkeypatch, model_dir, capsys):
    assert main(["serve", str(model_dir), "--unknown-accept", "1.5"]) == 2  # checked before any model loads
    assert "unknown_accept is the share of ordinary images" in capsys.readouterr().err
    # This model has no "unknown" detector: the acceptance would be ignored, so it is refused.
    assert main(["serve", str(model_dir), "--unknown-accept", "0.99"]) == 2
    assert "has one: leave it out" in capsys.readouterr().err
    import petclf.serve

    seen = {}
    monkeypatch.setattr(petclf.serve, "serve", lambda dirs, **kwargs: seen.update(kwargs), raising=False)
    assert main(["serve", str(model_dir), "--unknown-accept", "0.99"]) == 0
    assert seen["options"].unknown_accept == 0.99
