"""WSGI app for POST /events: where a log shipper sends the app's log lines.

The body is one JSON object, a JSON array (of objects or of log-line strings), or
newline-delimited lines (`Content-Type: application/x-ndjson`, or any body that is not
one JSON document), optionally gzip-encoded. Each record is counted on its own: a bad
line is rejected with a reason and the good lines of the same body still count. Error
messages never contain the input (docs/events.md, "HTTP API").
"""

from __future__ import annotations

import gzip
import hmac
import io
import json
import zlib
from typing import Callable, Iterable
from urllib.parse import parse_qs

from exporter.config.events import HttpEventsConfig
from exporter.events.counters import Tally
from exporter.events.parse import (
    BAD_ENCODING, BAD_REQUEST, BODY_TOO_LARGE, LINE_TOO_LONG, UNAUTHORIZED, LineParser, Rejected,
    outcome_of_value,
)

SOURCE = "http"
_NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines",
                 "application/jsonlines", "text/plain")
_MAX_ERRORS_SHOWN = 20
_MAX_DISCARD = 64 << 20


class _Refused(Exception):
    def __init__(self, status: str, reason: str, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status, self.reason, self.message, self.headers = status, reason, message, headers or []


class EventsApp:
    """`sink` has `.merge(source, database, tally)` and `.reject(source, reason)`."""

    def __init__(self, config: HttpEventsConfig, databases: list[str], default_database: str | None, sink,
                 max_line_bytes: int):
        self.config = config
        self.max_line_bytes = max_line_bytes
        self.databases = frozenset(databases)
        self.default_database = default_database
        self.sink = sink
        self._expected_auth = f"Bearer {config.token}".encode() if config.token else None

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return _respond(start_response, "405 Method Not Allowed",
                            {"error": "use POST to send events"}, [("Allow", "POST")])
        try:
            self._authorize(environ)
            database = self._database(environ)
            body = self._body(environ)
        except _Refused as refused:
            self.sink.reject(SOURCE, refused.reason)
            return _respond(start_response, refused.status, {"error": refused.message}, refused.headers)
        tally, errors = self._count(body, environ.get("CONTENT_TYPE", ""))
        self.sink.merge(SOURCE, database, tally)
        return self._answer(start_response, tally, errors)

    # -- refusals before the body is looked at -------------------------------------------------
    def _authorize(self, environ: dict) -> None:
        if self._expected_auth is None:
            return
        given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
        if not hmac.compare_digest(given, self._expected_auth):  # constant time
            raise _Refused("401 Unauthorized", UNAUTHORIZED, "missing or wrong bearer token",
                           [("WWW-Authenticate", 'Bearer realm="events"')])

    def _database(self, environ: dict) -> str:
        asked = parse_qs(environ.get("QUERY_STRING", "")).get("database")
        if asked:
            if asked[0] not in self.databases:
                raise _Refused("400 Bad Request", BAD_REQUEST, "unknown database: use one of the configured names")
            return asked[0]
        if self.default_database is None:
            raise _Refused("400 Bad Request", BAD_REQUEST,
                           "several databases are configured: name one with ?database=NAME")
        return self.default_database

    def _body(self, environ: dict) -> bytes:
        limit = self.config.max_body_bytes
        too_large = _Refused("413 Content Too Large", BODY_TOO_LARGE,
                             f"request body exceeds the limit of {limit} bytes (events.http.max_body_bytes)")
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            raise _Refused("411 Length Required", BAD_REQUEST, "a Content-Length header is required") from None
        if length > limit:
            _discard(environ["wsgi.input"], length)
            raise too_large
        body = _read_exactly(environ["wsgi.input"], length)
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
    def _count(self, body: bytes, content_type: str) -> tuple[Tally, list[dict]]:
        tally = Tally()
        errors: list[dict] = []
        position = 0

        def emit(outcome) -> None:
            tally.add(outcome)
            if type(outcome) is Rejected and len(errors) < _MAX_ERRORS_SHOWN:
                errors.append({"record": position, "reason": outcome.reason})

        if not content_type.split(";")[0].strip().lower() in _NDJSON_TYPES:
            document = _json_document(body)
            if document is not None:
                for position, value in enumerate(document, 1):
                    emit(outcome_of_value(value))
                return tally, errors
        parser = LineParser(emit, json_only=True)
        max_line = self.max_line_bytes
        for position, line in enumerate(body.split(b"\n"), 1):
            if len(line) > max_line:
                parser.flush()
                emit(Rejected(LINE_TOO_LONG))
            else:
                parser.feed(line)
        parser.flush()
        return tally, errors

    def _answer(self, start_response: Callable, tally: Tally, errors: list[dict]) -> Iterable[bytes]:
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


def _json_document(body: bytes) -> list | None:
    """The body as one JSON document -> its records; None when it is not one (NDJSON)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, list) else [value]


def _read_exactly(stream, length: int) -> bytes:
    chunks, remaining = [], length
    while remaining > 0:
        chunk = stream.read(min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _discard(stream, length: int) -> None:
    """Read and drop a refused body (up to a bound), so the client gets our answer rather
    than a connection reset for unread data."""
    remaining = min(length, _MAX_DISCARD)
    while remaining > 0:
        chunk = stream.read(min(remaining, 1 << 20))
        if not chunk:
            return
        remaining -= len(chunk)


def _respond(start_response: Callable, status: str, answer: dict,
             headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    payload = json.dumps(answer).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
                            *(headers or [])])
    return [payload]
