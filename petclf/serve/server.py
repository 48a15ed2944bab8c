"""``app``: model directories as one ASGI app (page, simple API, Open Inference Protocol, metrics);
``serve``: that app run by uvicorn until SIGTERM or Ctrl-C, finishing the requests in flight."""
from __future__ import annotations

import contextlib
import dataclasses
import signal
import socket
import sys
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from PIL import Image
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse

from petclf.core.errors import UsageError
from petclf.core.log import logger
from petclf.core.safe_text import one_line
from petclf.serve import explain, page, simple, v2
from petclf.serve.errors import RequestError, error_response
from petclf.serve.hosts import LOOPBACK_HOSTS, HostGuard, is_loopback_address
from petclf.serve.metrics import Metrics, ObserveRequests
from petclf.serve.models import load_models
from petclf.serve.options import ServeOptions
from petclf.serve.state import ServerState

if TYPE_CHECKING:
    import uvicorn

__all__ = ["app", "prepare", "serve"]

# Images over PIL's limit are refused with a 422 before decoding; its warning would only repeat that on stderr.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


async def _request_error(request: Request, err: RequestError) -> JSONResponse:
    return error_response(err.status, err.reason, headers=err.headers)


async def _http_error(request: Request, err: HTTPException) -> JSONResponse:
    path = one_line(request.url.path, limit=200)
    allowed = (err.headers or {}).get("Allow", "")
    reasons = {404: f"nothing at {path}: the page is at /, the API at /predict, /explain, /health, /metadata, "
                    "/metrics and /v2/… (the Open Inference Protocol).",
               405: f"{one_line(request.method, limit=20)} is not accepted at {path}: "
                    f"use {allowed or 'another method'}."}
    return error_response(err.status_code, reasons.get(err.status_code, one_line(err.detail)), headers=err.headers)


async def _server_error(request: Request, err: Exception) -> JSONResponse:
    # Reached only by a fault of the server itself (bad input is a RequestError); uvicorn logs the traceback.
    return error_response(500, f"internal error ({type(err).__name__}); the server log has the details.")


def app(model_dirs: Sequence[str | Path] | Mapping[str, str | Path], *,
        options: ServeOptions | None = None) -> Starlette:
    """An ASGI app serving ``model_dirs`` (each named after its folder, or ``DIR=NAME``, or a name → dir mapping).

    The models are loaded (and checked) now; batching starts with the app's lifespan (uvicorn,
    hypercorn), or with the first request where the app is mounted in another one that does not run
    the lifespan of its mounts (Starlette's and FastAPI's ``Mount``).

    Example::

        import uvicorn
        from petclf.serve import app
        uvicorn.run(app(["runs/pets/model"]), host="127.0.0.1", port=8000)
    """
    options = (options or ServeOptions()).validate()
    metrics = Metrics(max_batch=options.max_batch)
    state = ServerState(models=load_models(model_dirs, options=options), options=options, metrics=metrics)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):
        state.start()
        try:
            yield
        finally:
            await state.stop()

    middleware = [Middleware(ObserveRequests, metrics=metrics, log=options.access_log)]
    if options.allowed_hosts and "*" not in options.allowed_hosts:  # inside ObserveRequests: refusals are logged
        middleware.append(Middleware(HostGuard, allowed=options.allowed_hosts))
    if options.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(options.cors_origins),
                                     allow_methods=["GET", "POST"], allow_headers=["*"],
                                     expose_headers=["Inference-Header-Content-Length", "Petclf-Class",
                                                     "Petclf-Probability"]))
    application = Starlette(routes=page.routes() + simple.routes() + explain.routes() + v2.routes(),
                            middleware=middleware,
                            exception_handlers={RequestError: _request_error, HTTPException: _http_error,
                                                Exception: _server_error},
                            lifespan=lifespan)
    application.state.petclf = state
    return application


def serve(model_dirs: Sequence[str | Path] | Mapping[str, str | Path], *, host: str = "127.0.0.1", port: int = 8000,
          options: ServeOptions | None = None) -> None:
    """Serve ``model_dirs`` over HTTP until SIGTERM or Ctrl-C; requests in flight then finish before it returns.

    Prints the URL once the models answer. ``port=0`` picks a free port (the printed URL names it). On a
    loopback address (the default) only requests for loopback host names are answered (see
    ``ServeOptions.allowed_hosts``).

    Example: ``serve(["runs/pets/model"], port=8000)`` → ``petclf: serving model at http://127.0.0.1:8000/``.
    """
    server, sock = prepare(model_dirs, host=host, port=port, options=options)
    with _signals_end_quietly():
        server.run(sockets=[sock])
    logger.info("stopped: every request in flight was answered")


def prepare(model_dirs: Sequence[str | Path] | Mapping[str, str | Path], *, host: str = "127.0.0.1",
            port: int = 8000, options: ServeOptions | None = None) -> tuple[uvicorn.Server, socket.socket]:
    """The uvicorn server ``serve`` runs and its listening socket, the models loaded: ``server.run(sockets=[sock])``.

    Example: ``server, sock = prepare(["runs/pets/model"], port=0)``; ``server.should_exit = True`` stops it.
    """
    import uvicorn  # noqa: PLC0415 - only serving needs the server

    from petclf.serve.protocol import protocol_class  # noqa: PLC0415 - imports uvicorn

    options = (options or ServeOptions()).validate()
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise UsageError(f"port must be an integer from 0 to 65535. Received: port={port!r}.")
    address = _resolve(host, port)
    if not options.allowed_hosts and is_loopback_address(address[4][0]):
        options = dataclasses.replace(options, allowed_hosts=LOOPBACK_HOSTS)
    application = app(model_dirs, options=options)  # models load (and fail) before the port is taken
    sock = _bind(address, host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    names = ", ".join(application.state.petclf.models)
    announce = f"serving {names} at http://{url_host}:{bound_port}/ (page at /, API at /predict and /v2; Ctrl-C stops)"
    # timeout_graceful_shutdown: on SIGTERM the requests in flight finish, but none can hold the process longer
    # than its own time limit. log_config=None leaves uvicorn's start-up lines out; its errors still print.
    # http: h11 with a header size limit and timeout, whatever HTTP parser is installed (petclf.serve.protocol);
    # ws="none": no route takes a WebSocket, and an upgrade would leave that protocol's limits.
    config = uvicorn.Config(application, log_config=None, access_log=False, lifespan="on", ws="none",
                            timeout_graceful_shutdown=int(options.timeout_s) + 5, server_header=False,
                            http=protocol_class(max_header_bytes=options.max_header_bytes,
                                                header_timeout_s=options.header_timeout_s))

    class _Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:  # after the lifespan started the batchers and the socket listens
                logger.info(announce)
                sys.stderr.flush()

    return _Server(config), sock


@contextlib.contextmanager
def _signals_end_quietly():
    """After its graceful shutdown uvicorn re-raises SIGTERM/SIGINT to whatever handled them before: a no-op here,
    so ``serve`` returns (and the command exits 0) instead of the process dying by the signal it already obeyed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _resolve(host: str, port: int) -> tuple:
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise UsageError(f"cannot resolve host {host!r} ({err.strerror}): pass an address such as 127.0.0.1 "
                         "(this machine only) or 0.0.0.0 (every network interface).") from None


def _bind(address: tuple, host: str, port: int) -> socket.socket:
    family, kind, proto, _, sockaddr = address
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(sockaddr)
    except OSError as err:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({err.strerror}): another program may use the port; pass "
                         "another --port (0 picks a free one).") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
