"""Every refusal of the server is one JSON object, ``{"error": reason}``, with a 4xx status that says whose fault."""
from __future__ import annotations

from starlette.responses import JSONResponse

__all__ = ["RequestError", "error_response"]


class RequestError(Exception):
    """A request the server will not answer: ``status`` (4xx) and a reason that says what to send instead.

    Example: ``raise RequestError(415, "expected an image or multipart/form-data. Received: text/plain.")``.
    """

    def __init__(self, status: int, reason: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


def error_response(status: int, reason: str, *, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON body every error has: ``{"error": reason}`` (the form Triton and KServe clients read).

    Example: ``error_response(404, "no model named 'cats'; served: pets.")``.
    """
    return JSONResponse({"error": reason}, status_code=status, headers=headers)
