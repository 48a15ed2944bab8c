"""Request bodies read under a size limit: whole bodies, compressed ones, and multipart uploads, all in memory.

The body is read once, up to the limit (a larger Content-Length is refused before a byte is
read; a chunked body is cut off the moment it passes the limit), so what is parsed afterwards
is bounded; multipart parts are split from those bytes directly, with no temporary files.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from petclf.core.safe_text import one_line, printable
from petclf.serve.errors import RequestError

__all__ = ["Part", "ascii_count", "content_type", "parse_multipart", "read_body"]


@dataclass(frozen=True)
class Part:
    """One part of a multipart/form-data body."""

    name: str  # the form field's name
    filename: str | None  # None for a plain form field (not a file)
    data: bytes


def content_type(request: Request) -> str:
    """The request's media type, lower case, without parameters ('' when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def ascii_count(text: str, *, digits: int = 18) -> int | None:
    """``text`` as a count when it is 1 to ``digits`` ASCII digits, else None.

    ``str.isdigit`` alone also accepts '²' and other digits ``int`` refuses, and ``int`` refuses numbers of more
    than 4,300 digits: either would be a 500 where the sender deserves a 400.

    Example: ``ascii_count("120")`` → ``120``; ``ascii_count("²")`` → ``None``.
    """
    if 0 < len(text) <= digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def _too_large(limit: int) -> RequestError:
    return RequestError(413, f"the request body is larger than the server's limit of {limit / 2**20:g} MiB: send "
                             "fewer or smaller images per request (or start the server with a larger --max-body-mb).")


async def read_body(request: Request, *, limit: int) -> bytes:
    """The whole body (decompressed when Content-Encoding is gzip or deflate), refused with 413 above ``limit``.

    Example: ``body = await read_body(request, limit=32 * 2**20)``.
    """
    declared = request.headers.get("content-length")
    # h11 refuses a Content-Length that is not digits; one of more than 18 digits is over any limit too.
    length = None if declared is None else ascii_count(declared)
    if declared is not None and (length is None or length > limit):
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise RequestError(415, f"Content-Encoding {printable(encoding)!r} is not supported: expected gzip, deflate "
                                "or none.")
    return _decompress(body, wbits=31 if encoding == "gzip" else 15, limit=limit)


def _decompress(body: bytes, *, wbits: int, limit: int) -> bytes:
    # Bounded output: a few kB of gzip can expand to gigabytes (a compression bomb).
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as err:
        raise RequestError(400, f"the body is not valid compressed data for its Content-Encoding ({one_line(err)}).") \
            from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _too_large(limit)
    return out


def parse_multipart(body: bytes, header: str, *, max_parts: int) -> list[Part]:
    """The parts of a multipart/form-data ``body`` (``header`` is its Content-Type), in order; 400 when malformed.

    Example: ``[p.filename for p in parse_multipart(body, request.headers["content-type"], max_parts=64)]``.
    """
    _, params = parse_options_header(header)
    boundary = params.get(b"boundary")
    if not boundary:
        raise RequestError(400, "multipart/form-data without a boundary: let the HTTP client build the body "
                                "(curl -F image=@cat.jpg, or files= in requests/httpx).")
    parts: list[Part] = []
    state: dict = {}

    def on_part_begin() -> None:
        if len(parts) >= max_parts:
            raise RequestError(413, f"more than {max_parts} parts in one request: send at most {max_parts} images "
                                    "per request (or start the server with a larger --max-images).")
        state.update(headers={}, field=b"", value=b"", data=[])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["data"].append(data[start:end])

    def on_part_end() -> None:
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        parts.append(Part(name=name, filename=None if filename is None else filename.decode("utf-8", "replace"),
                          data=b"".join(state["data"])))

    callbacks = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end,
                 "on_part_data": on_part_data, "on_part_end": on_part_end}
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except RequestError:
        raise
    except Exception as err:  # noqa: BLE001 - the parser's errors on malformed bodies; all the sender's
        raise RequestError(400, f"malformed multipart/form-data body ({type(err).__name__}: "
                                f"{one_line(err, limit=160)})."
                                " Let the HTTP client build it (curl -F image=@cat.jpg).") from None
    return parts
