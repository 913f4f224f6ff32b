"""Log lines and records -> Prisma error facts, ignored, or rejected with a reason.

A record is one JSON object. It holds a Prisma error when it is one (a code `P` + 4
digits, a `PrismaClient...` name, a `clientVersion`: the error object itself, the
runbook's `{"error": "PrismaClientKnownRequestError", ...}`, or a pino line where
`logger.error({code, meta})` merged the fields), when one sits under `err` (pino's
serializer), `error`, `e` or `exception` (or their `cause`), when it is a Prisma `log`
event (`message`, `target`, `timestamp`), or when a text field holds `prisma:error`.
A shipper's envelope (`{"log": "<line>"}`, `{"message": "<line>"}`) is opened once.

A text line containing `prisma:error` is an event too. Prisma's `log: ['error']`
prints the message over several lines ("prisma:error " alone, then the invocation, a
code frame and the database text), so `LineParser` keeps such an event open and reads
the following text lines until it finds the database text.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple
from collections.abc import Callable

from exporter.events.classify import ErrorFacts, _PRISMA_CODE, _TEXT_KINDS, facts_from_error, facts_from_text

_fast_loads: Callable[[bytes | str], Any] | None
try:  # orjson parses a pino line with a stack 3-5x faster than the standard library
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - the standard parser gives the same answers
    _fast_loads = None

_ERROR_KEYS = ("err", "error", "e", "exception")
_TEXT_KEYS = ("msg", "message", "log")
_ENVELOPE_KEYS = ("log", "message")
_MARKER = "prisma:error"
_MARKER_BYTES = _MARKER.encode()
_CAUSE_DEPTH = 3
_KEPT_CHARS = 1000  # of each line of an open multi-line message

# Reasons a line or request is rejected: the `reason` label's values.
INVALID_JSON = "invalid_json"
INVALID_UTF8 = "invalid_utf8"
NOT_OBJECT = "not_object"
LINE_TOO_LONG = "line_too_long"
PARTIAL_LINE = "partial_line"
BODY_TOO_LARGE = "body_too_large"
BAD_ENCODING = "bad_encoding"
BAD_REQUEST = "bad_request"
UNAUTHORIZED = "unauthorized"
BUSY = "busy"
RATE_LIMITED = "rate_limited"
TIMEOUT = "timeout"
REASONS = (INVALID_JSON, INVALID_UTF8, NOT_OBJECT, LINE_TOO_LONG, PARTIAL_LINE, BODY_TOO_LARGE,
           BAD_ENCODING, BAD_REQUEST, UNAUTHORIZED, BUSY, RATE_LIMITED, TIMEOUT)


class Rejected(NamedTuple):
    reason: str


_REJECTED = {reason: Rejected(reason) for reason in REASONS}


IGNORED = None  # a record that is not a Prisma error (an ordinary app log line)
Outcome = ErrorFacts | Rejected | None


def facts_from_record(record: dict[str, Any]) -> ErrorFacts | None:
    """One JSON object -> the facts of the Prisma error it carries, or None."""
    for key in _ERROR_KEYS:  # pino's `err` first: the most common shape
        value = record.get(key)
        if type(value) is dict and (error := _prisma_in(value)) is not None:
            return facts_from_error(error)
    if _is_prisma_error(record):
        return facts_from_error(record)
    message, target = record.get("message"), record.get("target")
    if type(message) is str and type(target) is str and _looks_like_error(message):
        return facts_from_text(message, target)  # a Prisma `log` event
    for key in _TEXT_KEYS:
        text = record.get(key)
        if type(text) is str and _MARKER in text:
            return facts_from_text(text.partition(_MARKER)[2])
    for key in _ENVELOPE_KEYS:
        inner = record.get(key)
        if type(inner) is str and inner.startswith("{"):
            try:
                parsed = load_json(inner)
            except (ValueError, RecursionError):
                return None
            return facts_from_record(parsed) if type(parsed) is dict else None
    return None


def outcome_of_value(value: Any) -> Outcome:
    """An element of a JSON body: an object is a record, a string is a log line."""
    if type(value) is dict:
        return facts_from_record(value)
    if type(value) is str:
        return facts_from_text(value.partition(_MARKER)[2]) if _MARKER in value else IGNORED
    return _REJECTED[NOT_OBJECT]


def _is_prisma_code(value: Any) -> bool:
    return type(value) is str and _PRISMA_CODE.fullmatch(value) is not None


def _is_prisma_error(value: dict[str, Any]) -> bool:
    if _is_prisma_code(value.get("code")) or "clientVersion" in value:
        return True
    for key in ("name", "type", "error"):
        name = value.get(key)
        if type(name) is str and name.startswith("PrismaClient"):
            return True
    return _is_prisma_code(value.get("errorCode"))  # PrismaClientInitializationError


def _prisma_in(error: dict[str, Any]) -> dict[str, Any] | None:
    """The error or, for an app error wrapping one, its `cause` chain (pino serializes it)."""
    for _ in range(_CAUSE_DEPTH):
        if _is_prisma_error(error):
            return error
        cause = error.get("cause")
        if type(cause) is not dict:
            return None
        error = cause
    return None


def _looks_like_error(message: str) -> bool:
    # Prisma's info/warn log events have the same shape as error ones: tell them by text.
    if "Invalid `" in message or _MARKER in message:
        return True
    return any(pattern.search(message) for _, pattern in _TEXT_KINDS)


# -- lines -------------------------------------------------------------------------------------

class LineParser:
    """Lines (bytes, no newline) -> outcomes, handed to `emit`.

    `json_only` (the HTTP endpoint): a line that is neither JSON nor `prisma:error` text is
    rejected as invalid JSON. Otherwise (log files) it is an ordinary text line: ignored.
    """

    _MAX_CONTINUATION = 40  # lines a multi-line `prisma:error` message may span

    def __init__(self, emit: Callable[[Outcome], None], json_only: bool = False):
        self.emit = emit
        self.json_only = json_only
        self._open: list[str] | None = None  # lines of a multi-line prisma:error message

    def feed(self, line: bytes) -> None:
        """One line -> one outcome (a `prisma:error` line that opens a multi-line message
        gets its outcome when the message ends; its other lines are ignored). Blank
        lines are no record: no outcome."""
        if line[:1] == b"{":  # the common case first, without copying the line
            if self._open is not None:
                self.flush()
            self.emit(_parse_json_line(line))
            return
        stripped = line.strip()
        if not stripped:
            return
        if stripped[:1] == b"{" or stripped[:1] == b"[":
            self.flush()
            self.emit(_parse_json_line(stripped))
            return
        marker = stripped.find(_MARKER_BYTES)
        if marker >= 0:
            self.flush()
            self._prisma_error(stripped[marker + len(_MARKER_BYTES):])
        elif self._open is not None:
            self._continue(self._open, stripped)
        else:
            self._plain(stripped)

    def _prisma_error(self, rest: bytes) -> None:
        """A `prisma:error` line: the message, or the first line of a multi-line one."""
        text = _decode(rest)
        if text is None:
            self.emit(_REJECTED[INVALID_UTF8])
        elif text.strip():
            self.emit(facts_from_text(text))
        else:
            self._open = []

    def _plain(self, line: bytes) -> None:
        """Neither JSON nor part of a Prisma message: an ordinary log line."""
        if self.json_only:  # a JSON scalar is not_object; anything else invalid_json or invalid_utf8
            self.emit(_parse_json_line(line))
        elif _decode(line) is None:
            self.emit(_REJECTED[INVALID_UTF8])
        else:
            self.emit(IGNORED)

    def flush(self) -> None:
        """Close a multi-line message still open (at the end of a body, when a file idles)."""
        if self._open is not None:
            lines, self._open = self._open, None
            self.emit(facts_from_text("\n".join(lines)))

    def _continue(self, message: list[str], line: bytes) -> None:
        text = _decode(line)
        if text is None:
            self.flush()
            self.emit(_REJECTED[INVALID_UTF8])
            return
        message.append(text[:_KEPT_CHARS])  # bounded: 40 lines of up to max_line_bytes
        self.emit(IGNORED)
        # The database text ends the message; a code-frame line ("  52 ...") is the
        # app's own source, so it is not taken for it.
        is_code_frame = text[:1] in ("→", "") or text.lstrip()[:1].isdigit()
        if (not is_code_frame and any(p.search(text) for _, p in _TEXT_KINDS)) \
                or len(message) >= self._MAX_CONTINUATION:
            self.flush()


def load_json(raw: bytes | str) -> Any:
    """Parse JSON; raises ValueError (UnicodeDecodeError for bad UTF-8) or RecursionError."""
    if _fast_loads is not None:
        try:
            return _fast_loads(raw)
        except ValueError:
            pass  # orjson refuses a few valid documents (integers past 64 bits): ask json
    return json.loads(raw)


def _parse_json_line(line: bytes) -> Outcome:
    try:
        value = load_json(line)
    except UnicodeDecodeError:
        return _REJECTED[INVALID_UTF8]
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the limit
        return _REJECTED[INVALID_JSON]
    return facts_from_record(value) if type(value) is dict else _REJECTED[NOT_OBJECT]


def _decode(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
