"""Shared by the tests of petclf's web apps: a real uvicorn server in a thread on a free port, and headless Chromium."""
from __future__ import annotations

import os
import re
import subprocess
import shutil
import socket
import threading
import time

import pytest

CHROMIUM = os.environ.get("PETCLF_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# As root Chromium needs --no-sandbox; the rest keeps a headless run from reaching for the network or a GPU.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving_url(proc: subprocess.Popen) -> re.Match:
    """Read a `petclf serve` child's stderr until it says it is serving; the match of its URL (group 1: the port)."""
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "serving" in line:
            break
    url = re.search(r"http://127\.0\.0\.1:(\d+)/", "".join(lines))
    assert url, "".join(lines)
    return url


class ThreadServer:
    """uvicorn serving an ASGI app in a thread of this process, on a free port, until ``stop``.

    Use ``ThreadServer(app).start()`` … ``.stop()``, or ``with ThreadServer(app) as server:``.
    """

    def __init__(self, application) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(application, host="127.0.0.1", port=self.port, log_config=None, access_log=False,
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> "ThreadServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> "ThreadServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def chromium():
    """Headless Chromium driven by Playwright (a generator for a fixture); skips with the reason when missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is a test extra: pip install -e '.[test]'")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does), or set PETCLF_CHROMIUM")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def watched_page(browser):
    """(a new page, the list its script errors and console errors/warnings go to), for an assert at the end."""
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda message: message.type in ("error", "warning") and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    return page, problems
