"""``petclf review DIR``: a local page to decide, image by image, what to do with what the audit flagged.

Starlette on 127.0.0.1. Images are served by item number from audit.json's list (never by a path
the browser names) and only when they lie inside the audited data folder. Every decision is written
at once to ``DIR/decisions.csv`` (merged with what is on disk, under a lock, and rewritten whole), so a
reload, a closed tab, a crash, a second server or a hand edit loses nothing. Only the page the server
served can write: JSON bodies, same origin, a per-run token; other Host headers get 400 (DNS rebinding).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import webbrowser
from collections.abc import Iterator, Sequence
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from petclf.audit.decisions import ACTIONS, Decision, now, read_decisions, write_decisions
from petclf.audit.report import audited_root, read_audit
from petclf.core import log
from petclf.core.errors import DataError

__all__ = ["allowed_hosts", "inside", "review_app", "serve_review"]


def inside(root: Path, relative: str) -> Path | None:
    """``root/relative`` when it resolves inside ``root`` (symlinks followed), else None."""
    base = os.path.realpath(root)
    target = os.path.realpath(os.path.join(base, relative))
    return Path(target) if os.path.commonpath([target, base]) == base else None


def _json_error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


#: Request bodies over this many bytes are refused unread: a decision is a few dozen bytes.
MAX_BODY = 4096
TOKEN_HEADER = "X-Petclf-Token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost")
_EXPECTED = 'expected JSON {"item": whole number, "action": "keep|relabel|remove|clear", "label": class}'


def allowed_hosts(host: str) -> list[str]:
    """The Host header values the server answers when bound to ``host``; any other is refused (DNS rebinding).

    Loopback answers to its loopback names; an address for every interface (0.0.0.0, ::) to this
    machine's names and addresses; any other address or name to itself.
    """
    if host in ("0.0.0.0", "::", ""):
        names = {*LOOPBACK_NAMES, socket.gethostname(), socket.getfqdn()}
        with contextlib.suppress(OSError):
            names |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
        return sorted(names)
    if host in LOOPBACK_NAMES or host.startswith("127."):
        return sorted({*LOOPBACK_NAMES, host})
    return [host]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (made when missing) across processes: two review servers on one
    audit take turns at reading and writing decisions.csv. Without fcntl (Windows) only this process's."""
    with open(path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when ``path`` is saved again (None when there is no file)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _decision_body(raw: bytes) -> tuple[int, str, str] | str:
    """``(item, action, label)`` from a request body, or why the body is refused."""
    if len(raw) > MAX_BODY:
        return f"the body is over {MAX_BODY} bytes; {_EXPECTED}"
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        return _EXPECTED
    if not isinstance(body, dict):
        return _EXPECTED
    item, action, label = body.get("item"), body.get("action"), body.get("label")
    # Strictly an int: true, 1.9 and 1e999 (infinity) are not item numbers.
    if type(item) is not int or not isinstance(action, str) or not (label is None or isinstance(label, str)):
        return _EXPECTED
    return item, action, label or ""


def review_app(directory: str | Path, *, hosts: Sequence[str] = LOOPBACK_NAMES) -> Starlette:
    """The review app for the audit in ``directory`` (audit.json there; decisions.csv written there).

    Only requests whose Host is one of ``hosts`` are answered (a page that DNS-rebinds its own name to
    this address gets 400). Writes must be JSON, from this origin, and carry the token the page was
    served with; each one is merged into decisions.csv as it is on disk, under a lock, so a second
    server on the same audit or a hand edit is never overwritten.

    Example: ``uvicorn.run(review_app("audit"), host="127.0.0.1", port=8765)``.
    """
    directory = Path(directory)
    record = read_audit(directory)
    items, settings = record["items"], record["settings"]
    classes, root = list(settings["classes"]), audited_root(record, directory)
    path = directory / "decisions.csv"
    lock_path = directory / ".decisions.csv.lock"
    try:
        _, problems = read_decisions(path, items, classes)
    except DataError as err:
        problems = [str(err)]
    for problem in problems:
        log.warn(f"{path}: {problem} (left out until fixed)")
    lock = threading.Lock()
    token = secrets.token_urlsafe(32)  # per run: a page from an earlier run, or from elsewhere, cannot write
    hosts = [h.lower() for h in hosts]

    from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: PLC0415

    template = Environment(loader=PackageLoader("petclf.audit", "templates"),
                           autoescape=select_autoescape(["html"])).get_template("review.html")

    def read() -> tuple[dict[int, Decision], list[str]]:
        """decisions.csv as it is now; a file that cannot be read at all is one problem (no decisions)."""
        try:
            return read_decisions(path, items, classes)
        except DataError as err:
            return {}, [str(err)]

    def on_disk() -> tuple[dict[int, Decision], list[str]]:
        with lock:
            try:
                with _file_lock(lock_path):
                    return read()
            except OSError:  # a folder this user cannot write to: reading needs no lock to be shown
                return read()

    async def page(request: Request) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        html = template.render(nonce=nonce, token=token, root=str(root), directory=str(directory), count=len(items))
        csp = (f"default-src 'none'; img-src 'self'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        return HTMLResponse(html, headers={"Content-Security-Policy": csp, "Cache-Control": "no-store",
                                           "X-Frame-Options": "DENY"})

    async def state(request: Request) -> JSONResponse:
        decisions, problems = on_disk()  # what is on disk: another server's or a hand edit's rows included
        chosen = {str(k): {"action": d.action, "label": d.label} for k, d in decisions.items()}
        public = [{k: item[k] for k in ("item", "path", "split", "given", "suggested", "issues", "score", "group")}
                  for item in items]
        return JSONResponse({"classes": classes, "items": public, "decisions": chosen, "problems": problems,
                             "decisions_file": str(path)}, headers={"Cache-Control": "no-store"})

    async def image(request: Request):
        try:
            k = int(request.path_params["item"])
        except ValueError:
            return _json_error("no such item", 404)
        if not 0 <= k < len(items):
            return _json_error("no such item", 404)
        target = inside(root, items[k]["path"])
        if target is None or not target.is_file():
            return _json_error("the file is outside the data folder or gone", 404)
        return FileResponse(target, headers={"Cache-Control": "no-store"})

    def refuse_write(request: Request) -> JSONResponse | None:
        """Why a write request does not come from this server's page (None when it does)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            # A cross-site form or text/plain fetch needs no CORS preflight; a JSON one does, and gets none.
            return _json_error(f"expected Content-Type: application/json, got {kind or 'none'!r}", 415)
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() != f"{request.url.scheme}://{request.headers.get('host', '')}".lower():
            return _json_error(f"writes come only from this page's origin, not {origin!r}", 403)
        if not secrets.compare_digest(request.headers.get(TOKEN_HEADER, "").encode(), token.encode()):
            return _json_error(f"missing or wrong {TOKEN_HEADER}: reload the page (each run of petclf review has "
                               "its own token)", 403)
        return None

    async def decide(request: Request) -> JSONResponse:
        refused = refuse_write(request)
        if refused is not None:
            return refused
        raw = b""
        async for chunk in request.stream():  # read no more than a decision's worth of a large body
            raw += chunk
            if len(raw) > MAX_BODY:
                break
        parsed = _decision_body(raw)
        if isinstance(parsed, str):
            return _json_error(parsed)
        k, action, label = parsed
        if not 0 <= k < len(items):
            return _json_error(f"item {k} is not in the audit ({len(items)} items)", 404)
        if action not in (*ACTIONS, "clear"):
            return _json_error(f"action {action!r} is not one of {', '.join(ACTIONS)} or clear")
        if action == "relabel" and label not in classes:
            return _json_error(f"{label!r} is not a class of the audit")
        if action == "relabel" and label == items[k]["given"]:
            action, label = "keep", ""
        try:
            return write(k, action, label)
        except OSError as err:
            return _json_error(f"cannot write {path} ({err.strerror or err}): nothing was saved; check the folder "
                               "is writable and has space", 503)

    def write(k: int, action: str, label: str) -> JSONResponse:
        with lock, _file_lock(lock_path):
            for _ in range(5):
                # Merge: re-read what is on disk and change this one item, so rows another server or a
                # hand edit wrote since are kept. An editor does not take the lock: when the file changed
                # between the read and the write, read again rather than write over its save.
                seen = _stamp(path)
                decisions, problems = read()
                if problems:
                    # Writing the file back would drop the rows it cannot read: refuse until they are fixed.
                    return _json_error(f"{path} has rows that cannot be read ({problems[0]}"
                                       f"{f'; and {len(problems) - 1} more' if len(problems) > 1 else ''}): fix "
                                       "them (or delete those rows), then decide again", 409)
                if action == "clear":
                    decisions.pop(k, None)
                else:
                    decisions[k] = Decision(k, action, label if action == "relabel" else "", now())
                if _stamp(path) == seen:
                    write_decisions(path, decisions, items)
                    break
            else:
                return _json_error(f"{path} kept changing while this decision was saved: nothing was saved; "
                                   "decide again", 409)
            total = len(decisions)
        return JSONResponse({"ok": True, "item": k, "action": action, "label": label, "decided": total})

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)  # none: spares the browser's console a 404

    routes = [Route("/", page), Route("/favicon.ico", favicon), Route("/api/state", state), Route("/image/{item}", image),
              Route("/api/decision", decide, methods=["POST"])]
    return Starlette(routes=routes, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)])


def serve_review(directory: str | Path, *, port: int = 0, open_browser: bool = False,
                 host: str = "127.0.0.1") -> None:
    """Serve the review page for ``directory`` until Ctrl-C; port 0 picks a free one. The address is printed."""
    import uvicorn  # noqa: PLC0415

    app = review_app(directory, hosts=allowed_hosts(host))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        raise DataError(f"cannot listen on {host}:{port} ({err.strerror}): pass another --port, or 0 for a free one.") from None
    url = f"http://{host}:{sock.getsockname()[1]}/"
    print(f"review: {url}  (decisions go to {Path(directory) / 'decisions.csv'}; Ctrl-C to stop)", flush=True)
    if open_browser:
        webbrowser.open(url)
    config = uvicorn.Config(app, log_config=None, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
