"""What an app may change about the bounds of its request, when served by
exporter.http.server (under another WSGI server these do nothing)."""

from __future__ import annotations

import time

LIMITS = "exporter.limits"  # the environ key of a request's `Limits`
# A refused request's body is read (so the client sees the answer, not a reset) only when
# it is this small and arrives this fast; otherwise the connection is closed after the answer.
REFUSED_BODY_BYTES = 64 * 1024
REFUSED_BODY_SECONDS = 2.0
# After an answer sent before the body was read, the connection is half-closed and what
# the client still sends is read and dropped for at most this long: it gets the answer
# instead of a reset, and the worker is free again in bounded time.
LINGER_SECONDS = 5.0


class Limits:
    """What a WSGI app may change about its request's bounds (environ[LIMITS])."""

    def __init__(self, request):
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


def limits(environ: dict) -> Limits | None:
    """The request's Limits when served by HttpServer (None under another WSGI server)."""
    return environ.get(LIMITS)


def refuse_body(environ: dict, *, partly_read: bool = False) -> None:
    """For an app refusing a request without reading all its body: a small unread body
    that arrives at once is read after the answer (so the client sees the answer and the
    connection stays open); anything else (large, chunked, or partly read already) closes
    the connection after the answer. Either way the worker is free in bounded time."""
    bounds = limits(environ)
    if bounds is None:
        return
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = REFUSED_BODY_BYTES + 1
    if partly_read or length > REFUSED_BODY_BYTES or environ.get("HTTP_TRANSFER_ENCODING"):
        bounds.close_after_response()
    bounds.body_within(REFUSED_BODY_SECONDS)
