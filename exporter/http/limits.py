"""What an app may change about the bounds of its request, when served by
exporter.http.server (under another WSGI server these do nothing)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsgiref.types import WSGIEnvironment

    from cheroot.server import HTTPRequest

LIMITS = "exporter.limits"  # the environ key of a request's `Limits`
# After an answer sent before the body was read, the connection is half-closed and what
# the client still sends is read and dropped (by one background thread, not the worker)
# for at most this long: it gets the answer instead of a reset.
LINGER_SECONDS = 5.0


class Limits:
    """What a WSGI app may change about its request's bounds (environ[LIMITS])."""

    def __init__(self, request: HTTPRequest):
        self._request = request

    def body_within(self, seconds: float) -> None:
        """The rest of the body must arrive within `seconds` from now."""
        reader = self._request.conn.rfile
        reader.deadline = min(reader.deadline or float("inf"), time.monotonic() + seconds)

    def close_after_response(self) -> None:
        """Do not parse what is left of the body: answer, then close the connection
        (lingering at most LINGER_SECONDS, so the client reads the answer)."""
        self._request.close_connection = True
        self._request.conn.linger_until = time.monotonic() + LINGER_SECONDS


def limits(environ: WSGIEnvironment) -> Limits | None:
    """The request's Limits when served by HttpServer (None under another WSGI server)."""
    found: Limits | None = environ.get(LIMITS)
    return found


def refuse_body(environ: WSGIEnvironment) -> None:
    """For an app answering a request without reading all its body (a refusal): the
    answer is sent and the connection closed; what the client still sends is read and
    dropped in the background for at most LINGER_SECONDS, so it gets the answer. No
    worker waits for a body that is refused anyway (cheroot would read it before
    answering, for as long as the client trickles it)."""
    bounds = limits(environ)
    no_body = environ.get("CONTENT_LENGTH", "0") in ("", "0") and not environ.get("HTTP_TRANSFER_ENCODING")
    if bounds is not None and not no_body:  # without a body, the connection may stay open
        bounds.close_after_response()
