"""uvicorn's h11 protocol with the limits a server facing clients it does not know needs, and JSON refusals.

uvicorn picks httptools when it is installed, which takes request headers of any size (a 300 MB
header line was held whole in memory), and neither of its HTTP protocols times out a client that
sends its headers a byte at a time. Here h11 reads requests, with the request line and headers capped
(431: while they are incomplete by h11's buffer limit, once whole by their size), and a connection
whose headers are not whole within the header timeout gets 408 and is closed. What uvicorn answers as
text ("Invalid HTTP request received.") is the server's usual ``{"error": reason}`` JSON, wherever a
response can still be written.
"""
from __future__ import annotations

import asyncio
import http

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from petclf.core.safe_text import one_line
from petclf.serve.errors import error_response

__all__ = ["protocol_class"]


class _Connection(h11.Connection):
    """h11's connection, keeping the protocol error that uvicorn catches and answers with its generic text, and
    refusing request headers over ``max_header_bytes`` however they arrive."""

    error: h11.RemoteProtocolError | None = None

    def __init__(self, *, max_header_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self.max_header_bytes = max_header_bytes

    def next_event(self):  # noqa: ANN201 - h11's own return type
        try:
            event = super().next_event()
            # h11 caps only what is still incomplete: headers that came in one read (up to 256 KiB) would pass.
            if isinstance(event, h11.Request) and _header_bytes(event) > self.max_header_bytes:
                raise h11.RemoteProtocolError("request headers over the limit", error_status_hint=431)
            return event
        except h11.RemoteProtocolError as err:
            self.error = err
            raise


def _header_bytes(request: h11.Request) -> int:
    """The size of a request line and headers as sent (give or take the spaces h11 strips)."""
    return (len(request.method) + len(request.target) + 12
            + sum(len(name) + len(value) + 4 for name, value in request.headers.raw_items()))


class _GuardedH11Protocol(H11Protocol):
    """``H11Protocol`` with a header timeout and JSON answers to malformed requests (see the module's docstring)."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 32 * 1024

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _Connection(max_header_bytes=self.max_header_bytes)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()  # a connection that sends nothing at all is closed too

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._header_timer is None:
            self._arm_header_timer()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are whole (or the request failed)
            self._disarm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        # The timer runs from the first byte, not from the last: a byte a second does not keep it alive.
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            if self.cycle is None or self.cycle.response_complete:
                self._refuse(408, f"the request's headers did not arrive within the server's "
                                  f"{self.header_timeout_s:g} s limit: send the request line and headers at once.")
            else:
                self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """Answer a request h11 could not parse with its reason as JSON (431 for headers over the limit)."""
        err = self.conn.error
        status = err.error_status_hint if err is not None and 400 <= err.error_status_hint < 500 else 400
        if status == 431:
            reason = (f"the request line and headers are larger than the server's limit of "
                      f"{self.max_header_bytes / 1024:g} KiB: send fewer or shorter headers (or start the server "
                      "with a larger --max-header-kb).")
        else:
            detail = one_line(err, limit=160) if err is not None else "unreadable"
            reason = f"not a valid HTTP/1.1 request ({detail})."
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True  # a body that broke off mid-way: the app's own answer goes nowhere
                self.cycle.message_event.set()
            self._refuse(status, reason)
        else:  # an answer to this request is being written already: nothing more can be said
            self.transport.close()

    def _refuse(self, status: int, reason: str) -> None:
        # Written as bytes, not through h11: its state machine is in ERROR (or IDLE) here, and the connection ends.
        body = error_response(status, reason).body
        head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
        self.transport.write(head + body)
        self.transport.close()


def protocol_class(*, max_header_bytes: int, header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with these limits, for ``uvicorn.Config(http=...)``.

    Example: ``uvicorn.Config(app, http=protocol_class(max_header_bytes=32768, header_timeout_s=10))``.
    """
    return type("PetclfH11Protocol", (_GuardedH11Protocol,),
                {"max_header_bytes": int(max_header_bytes), "header_timeout_s": float(header_timeout_s)})
