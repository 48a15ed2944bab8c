"""``petclf review DIR``: a local page to decide, image by image, what to do with what the audit flagged.

Starlette on 127.0.0.1. Images are served by item number from audit.json's list (never by a path
the browser names) and only when they lie inside the audited data folder. Every decision is written
at once to ``DIR/decisions.csv`` (rewritten whole), so a reload, a closed tab or a crash loses nothing.
"""
from __future__ import annotations

import os
import secrets
import socket
import threading
import webbrowser
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from petclf.audit.decisions import ACTIONS, Decision, now, read_decisions, write_decisions
from petclf.audit.report import read_audit
from petclf.core import log
from petclf.core.errors import DataError

__all__ = ["inside", "review_app", "serve_review"]


def inside(root: Path, relative: str) -> Path | None:
    """``root/relative`` when it resolves inside ``root`` (symlinks followed), else None."""
    base = os.path.realpath(root)
    target = os.path.realpath(os.path.join(base, relative))
    return Path(target) if os.path.commonpath([target, base]) == base else None


def _json_error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def review_app(directory: str | Path) -> Starlette:
    """The review app for the audit in ``directory`` (audit.json there; decisions.csv written there).

    Example: ``uvicorn.run(review_app("audit"), host="127.0.0.1", port=8765)``.
    """
    directory = Path(directory)
    record = read_audit(directory)
    items, settings = record["items"], record["settings"]
    classes, root = list(settings["classes"]), Path(settings["root"])
    path = directory / "decisions.csv"
    decisions, problems = read_decisions(path, items, classes)
    for problem in problems:
        log.warn(f"{path}: {problem} (left out)")
    lock = threading.Lock()

    from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: PLC0415

    template = Environment(loader=PackageLoader("petclf.audit", "templates"),
                           autoescape=select_autoescape(["html"])).get_template("review.html")

    async def page(request: Request) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        html = template.render(nonce=nonce, root=str(root), directory=str(directory), count=len(items))
        csp = (f"default-src 'none'; img-src 'self'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'")
        return HTMLResponse(html, headers={"Content-Security-Policy": csp, "Cache-Control": "no-store"})

    async def state(request: Request) -> JSONResponse:
        with lock:
            chosen = {str(k): {"action": d.action, "label": d.label} for k, d in decisions.items()}
        public = [{k: item[k] for k in ("item", "path", "split", "given", "suggested", "issues", "score", "group")}
                  for item in items]
        return JSONResponse({"classes": classes, "items": public, "decisions": chosen,
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

    async def decide(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            k, action = int(body["item"]), str(body["action"])
        except (ValueError, KeyError, TypeError):
            return _json_error('expected JSON {"item": number, "action": "keep|relabel|remove|clear", "label": class}')
        if not 0 <= k < len(items):
            return _json_error(f"item {k} is not in the audit ({len(items)} items)", 404)
        if action not in (*ACTIONS, "clear"):
            return _json_error(f"action {action!r} is not one of {', '.join(ACTIONS)} or clear")
        label = str(body.get("label") or "")
        if action == "relabel" and label not in classes:
            return _json_error(f"{label!r} is not a class of the audit")
        if action == "relabel" and label == items[k]["given"]:
            action, label = "keep", ""
        with lock:
            if action == "clear":
                decisions.pop(k, None)
            else:
                decisions[k] = Decision(k, action, label if action == "relabel" else "", now())
            write_decisions(path, decisions, items)
            total = len(decisions)
        return JSONResponse({"ok": True, "item": k, "action": action, "label": label, "decided": total})

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)  # none: spares the browser's console a 404

    routes = [Route("/", page), Route("/favicon.ico", favicon), Route("/api/state", state), Route("/image/{item}", image),
              Route("/api/decision", decide, methods=["POST"])]
    return Starlette(routes=routes)


def serve_review(directory: str | Path, *, port: int = 0, open_browser: bool = False,
                 host: str = "127.0.0.1") -> None:
    """Serve the review page for ``directory`` until Ctrl-C; port 0 picks a free one. The address is printed."""
    import uvicorn  # noqa: PLC0415

    app = review_app(directory)
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
