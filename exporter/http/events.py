"""WSGI app for POST /events: where a log shipper sends the app's log lines.

Every request is counted: accepted records by outcome, a refused request (401, 429,
400, 411, 413, 415, 408, 503) under its reason in venzory_db_events_rejected_total.
One body is read and counted at a time; it must arrive within events.http.body_timeout
(every read of it is bounded by that deadline, whatever the client trickles), and a
request finds the turn taken for at most as long: a sender cannot keep it.

The body is one JSON object, a JSON array (of objects or of log-line strings),
newline-delimited JSON (`Content-Type: application/x-ndjson`, or any body that is not
one JSON document), or a raw log (`text/plain`: read like a followed file), optionally
gzip-encoded. Each record is counted on its own: a bad line is rejected with a reason
and the good lines of the same body still count. Error messages never contain the
input (docs/events.md, "HTTP API").
"""

from __future__ import annotations

import gzip
import hmac
import io
import json
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIEnvironment

from exporter.config.events import HttpEventsConfig
from exporter.events.counters import Tally
from exporter.events.parse import (
    BAD_ENCODING, BAD_REQUEST, BODY_TOO_LARGE, BUSY, INVALID_JSON, LINE_TOO_LONG, RATE_LIMITED, TIMEOUT,
    UNAUTHORIZED, LineParser, Outcome, Rejected, load_json, outcome_of_value,
)
from exporter.http.limits import limits, refuse_body
from exporter.http.ratelimit import TokenBucket, retry_after

if TYPE_CHECKING:
    from exporter.events.pipeline import Sink

SOURCE = "http"
_NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines", "application/jsonlines")
_TEXT = "text/plain"
_MAX_ERRORS_SHOWN = 20
# Bodies read and counted at once: with the GIL more would not be faster, and each one
# holds up to max_body_bytes (and its decoded text for a large array): this bounds memory.
_CONCURRENT_BODIES = 1
# Arrays up to this size are parsed at once (fast); larger ones element by element.
_WHOLE_ARRAY_BYTES = 1 << 20
_DECODER = json.JSONDecoder()
_INVALID_JSON = Rejected(INVALID_JSON)
# Requests waiting for the turn, each holding an HTTP worker: more get 503 at once, so
# posters can never take the workers scrapes need.
_MAX_WAITING = 2


class _Refused(Exception):
    unread_body = False  # refused part-way through the body: what is left is not read

    def __init__(self, status: str, reason: str, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status, self.reason, self.message, self.headers = status, reason, message, headers or []


class EventsApp:
    """`sink` has `.merge(source, database, tally)` and `.reject(source, reason)`."""

    def __init__(self, config: HttpEventsConfig, databases: list[str], default_database: str | None, sink: Sink,
                 max_line_bytes: int):
        self.config = config
        self.max_line_bytes = max_line_bytes
        self.databases = frozenset(databases)
        self.default_database = default_database
        self.sink = sink
        self._expected_auth = f"Bearer {config.token}".encode() if config.token else None
        self._turns = threading.BoundedSemaphore(_CONCURRENT_BODIES)
        self._waiting = threading.BoundedSemaphore(_MAX_WAITING)
        # Checked after authentication: a client without the token cannot use up the
        # shipper's share.
        self._rate = TokenBucket(config.rate_limit, config.rate_burst) if config.rate_limit else None

    @property
    def authenticates(self) -> bool:
        """True when requests must carry the bearer token (events.http.token)."""
        return self._expected_auth is not None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return _respond(start_response, "405 Method Not Allowed",
                            {"error": "use POST to send events"}, [("Allow", "POST")])
        body_read = False
        try:
            self._authorize(environ)
            self._limit_rate()
            database = self._database(environ)
            self._take_turn()
            try:
                body_read = True
                body = self._body(environ)
                tally, errors = self._count(body, environ.get("CONTENT_TYPE", ""))
                del body
            finally:
                self._turns.release()
        except _Refused as refused:
            if not body_read or refused.unread_body:
                refuse_body(environ)
            self.sink.reject(SOURCE, refused.reason)
            return _respond(start_response, refused.status, {"error": refused.message}, refused.headers)
        self.sink.merge(SOURCE, database, tally)
        return self._answer(start_response, tally, errors)

    # -- refusals before the body is looked at -------------------------------------------------
    def _take_turn(self) -> None:
        busy = _Refused("503 Service Unavailable", BUSY, "too many bodies at once: retry later", [("Retry-After", "5")])
        if not self._waiting.acquire(blocking=False):
            raise busy
        try:
            # A body holds the turn for at most body_timeout (and counting it): wait as long.
            if not self._turns.acquire(timeout=self.config.body_timeout):
                raise busy
        finally:
            self._waiting.release()

    def _authorize(self, environ: WSGIEnvironment) -> None:
        if self._expected_auth is None:
            return
        given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
        if not hmac.compare_digest(given, self._expected_auth):  # constant time
            raise _Refused("401 Unauthorized", UNAUTHORIZED, "missing or wrong bearer token",
                           [("WWW-Authenticate", 'Bearer realm="events"')])

    def _limit_rate(self) -> None:
        if self._rate is not None and (wait := self._rate.take()):
            raise _Refused("429 Too Many Requests", RATE_LIMITED,
                           "too many requests (events.http.rate_limit): retry later",
                           [("Retry-After", retry_after(wait))])

    def _database(self, environ: WSGIEnvironment) -> str:
        asked = parse_qs(environ.get("QUERY_STRING", "")).get("database")
        if asked:
            if asked[0] not in self.databases:
                raise _Refused("400 Bad Request", BAD_REQUEST, "unknown database: use one of the configured names")
            return str(asked[0])
        if self.default_database is None:
            raise _Refused("400 Bad Request", BAD_REQUEST,
                           "several databases are configured: name one with ?database=NAME")
        return self.default_database

    def _body(self, environ: WSGIEnvironment) -> bytes:
        limit = self.config.max_body_bytes
        too_large = _Refused("413 Content Too Large", BODY_TOO_LARGE,
                             f"request body exceeds the limit of {limit} bytes (events.http.max_body_bytes)")
        length = _length(environ)
        if length < 0:
            raise _Refused("411 Length Required", BAD_REQUEST, "a Content-Length header is required")
        if length > limit:
            too_large.unread_body = True
            raise too_large
        bounds = limits(environ)
        if bounds is not None:  # every read of the body ends by the deadline
            bounds.body_within(self.config.body_timeout)
        body = _read_exactly(environ["wsgi.input"], length, time.monotonic() + self.config.body_timeout)
        if body is None:
            late = _Refused("408 Request Timeout", TIMEOUT,
                            f"the body did not arrive within {self.config.body_timeout:g}s (events.http.body_timeout)")
            late.unread_body = True
            raise late
        encoding = environ.get("HTTP_CONTENT_ENCODING", "identity").strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding not in ("gzip", "x-gzip"):
            raise _Refused("415 Unsupported Media Type", BAD_ENCODING, "Content-Encoding must be gzip or identity")
        try:
            # read(limit + 1) decompresses incrementally: a gzip bomb stops at the limit.
            with gzip.GzipFile(fileobj=io.BytesIO(body)) as unzipped:
                body = unzipped.read(limit + 1)
        except (OSError, EOFError, zlib.error):
            raise _Refused("400 Bad Request", BAD_ENCODING, "the body is not valid gzip") from None
        if len(body) > limit:
            raise too_large
        return body

    # -- counting --------------------------------------------------------------------------------
    def _count(self, body: bytes, content_type: str) -> tuple[Tally, list[dict[str, object]]]:
        tally = Tally()
        errors: list[dict[str, object]] = []
        position = 0

        def emit(outcome: Outcome) -> None:
            tally.add(outcome)
            if type(outcome) is Rejected and len(errors) < _MAX_ERRORS_SHOWN:
                errors.append({"record": position, "reason": outcome.reason})

        media_type = content_type.split(";")[0].strip().lower()
        if media_type not in _NDJSON_TYPES:
            records = _json_records(body)
            if records is not None:
                try:
                    for position, value in enumerate(records, 1):  # noqa: B007 - emit() reads it
                        emit(outcome_of_value(value))
                except (ValueError, RecursionError):  # a large array broken part-way: the rest is lost
                    position += 1
                    emit(_INVALID_JSON)
                return tally, errors
        # text/plain (also what a request without Content-Type gets) may be a raw log, as
        # in a followed file: plain text lines are ignored there, not rejected.
        parser = LineParser(emit, json_only=media_type != _TEXT)
        limit = self.max_line_bytes
        for position, line in enumerate(io.BytesIO(body), 1):  # noqa: B007 - emit() reads it; lazily
            if len(line) > limit and len(line.rstrip(b"\r\n")) > limit:
                parser.flush()
                emit(Rejected(LINE_TOO_LONG))
            else:
                parser.feed(line)
        parser.flush()
        return tally, errors

    def _answer(self, start_response: StartResponse, tally: Tally, errors: list[dict[str, object]]) -> Iterable[bytes]:
        answer = {"accepted": tally.accepted, "ignored": tally.ignored,
                  "rejected": sum(tally.rejected.values()), "rejected_by_reason": dict(tally.rejected)}
        if errors:
            answer["errors"] = errors
        if tally.rejected.get(LINE_TOO_LONG):
            # The other records were counted; 413 tells the shipper not to retry the batch.
            answer["error"] = (f"a line exceeds the limit of {self.max_line_bytes} bytes "
                               "(events.max_line_bytes); the other records were counted")
            return _respond(start_response, "413 Content Too Large", answer)
        if tally.rejected and not tally.accepted and not tally.ignored:
            answer["error"] = "no record in the body could be read"
            return _respond(start_response, "400 Bad Request", answer)
        return _respond(start_response, "200 OK", answer)


def _json_records(body: bytes) -> Iterable[Any] | None:
    """The body as one JSON document -> its records (an array's elements, or the one
    object); None when it is not one document (NDJSON)."""
    start = body[:64].lstrip()[:1]
    if start == b"[" and len(body) > _WHOLE_ARRAY_BYTES:
        try:
            return _array_elements(body.decode("utf-8"))
        except UnicodeDecodeError:
            return None
    if start not in (b"[", b"{"):
        return None
    try:
        value = load_json(body)
    except (ValueError, RecursionError):
        if start != b"[":
            return None  # NDJSON, or a broken object: read line by line
        try:
            return _array_elements(body.decode("utf-8"))  # counts the elements before the break
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, list) else [value]


def _array_elements(text: str) -> Iterator[Any]:
    """A JSON array's elements one at a time: memory for one element, not for all of
    them (a large array of small objects is several times its size as Python objects).
    Raises ValueError where the array stops being JSON, after the good elements."""
    decode = _DECODER.raw_decode
    at = _skip_space(text, text.index("[") + 1)
    if text.startswith("]", at):
        return
    while True:
        value, at = decode(text, at)
        yield value
        at = _skip_space(text, at)
        if text.startswith(",", at):
            at = _skip_space(text, at + 1)
        elif text.startswith("]", at):
            return
        else:
            raise ValueError("expected , or ] in the array")


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _read_exactly(stream: IO[bytes], length: int, deadline: float) -> bytes | None:
    """The body, or None when it has not all arrived by `deadline` (or the client went
    silent): it is read while the one body turn is held, so a slow sender must not keep it."""
    # read1: one read of the socket at a time, so the deadline is looked at between reads
    # (read() would wait for the whole chunk).
    read = getattr(stream, "read1", stream.read)
    chunks, remaining = [], length
    while remaining > 0:
        if time.monotonic() > deadline:
            return None
        try:
            chunk = read(min(remaining, 1 << 20))
        except (TimeoutError, OSError):  # the server's deadline or per-read timeout, a reset
            return None
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _length(environ: WSGIEnvironment) -> int:
    """Content-Length, or -1 when there is none (or it is not a number)."""
    try:
        return max(-1, int(environ.get("CONTENT_LENGTH") or ""))
    except ValueError:
        return -1


def _respond(start_response: StartResponse, status: str, answer: dict[str, object],
             headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    payload = json.dumps(answer).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
                            *(headers or [])])
    return [payload]
