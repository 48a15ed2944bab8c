"""Which Host header names a server answers: on loopback, only loopback names (protection from DNS rebinding).

A page on any web site can make the visitor's browser send requests to a name that the site's DNS
later points at 127.0.0.1 (DNS rebinding); the browser then treats the answers as the site's own. The
one thing such a request cannot fake is its Host header, which still names the attacker's domain: a
server meant for this machine only refuses every Host that is not a loopback name or address.
"""
from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

from petclf.core.safe_text import printable
from petclf.serve.errors import error_response

__all__ = ["LOOPBACK_HOSTS", "HostGuard", "host_allowed", "host_name", "is_loopback_address"]

#: The names a browser uses for this machine; with ``--host 127.0.0.1`` (the default) only these are answered.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def is_loopback_address(address: str) -> bool:
    """Whether ``address`` (an IP address as a socket reports it) is loopback: 127.0.0.0/8 or ::1."""
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str | None:
    """The name in a Host header value, lower case, without its port, brackets or final dot (None when malformed).

    Example: ``host_name("[::1]:8000")`` → ``'::1'``; ``host_name("LocalHost.:80")`` → ``'localhost'``.
    """
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket:
            return None
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if rest and not (rest[0] == ":" and rest[1:].isascii() and rest[1:].isdigit()):
        return None
    name = name.rstrip(".")
    return name or None


def host_allowed(name: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether the Host ``name`` (from ``host_name``) is one of ``allowed``: names, ``*.domain`` or ``*``."""
    if "*" in allowed:
        return True
    if name is None:
        return False
    for entry in allowed:
        entry = entry.strip().lower().strip("[]").rstrip(".")
        if name == entry or (entry.startswith("*.") and name.endswith(entry[1:])):
            return True
    return False


class HostGuard:
    """ASGI middleware: HTTP requests whose Host header is not in ``allowed`` get a 400 JSON reason.

    Example: ``Starlette(routes, middleware=[Middleware(HostGuard, allowed=LOOPBACK_HOSTS)])``.
    """

    def __init__(self, app: ASGIApp, *, allowed: tuple[str, ...]) -> None:
        self.app, self.allowed = app, tuple(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan; the app has no websockets
            await self.app(scope, receive, send)
            return
        # HTTP/1.1 requires one Host; HTTP/1.0 clients may send none, and no browser does that.
        values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
        if len(values) == 1 and host_allowed(host_name(values[0]), self.allowed):
            await self.app(scope, receive, send)
            return
        received = printable(values[0])[:100] if len(values) == 1 else f"{len(values)} Host headers"
        names = ", ".join(f"[{h}]" if ":" in h else h for h in self.allowed)
        response = error_response(400, f"this server answers requests for the host names {names} only. Received: "
                                       f"{received!r}. Use one of those names in the URL; to allow another "
                                       "(a proxy's public name), start the server with --allowed-host NAME.")
        await response(scope, receive, send)
