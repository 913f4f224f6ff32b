"""Logging (plain or JSON lines), secret redaction, and optional Sentry.

Secrets (DSN passwords, tokens) are registered once at start; every log record and every
Sentry event passes through `redact`, whatever code produced the text.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any
from collections.abc import Iterable

from exporter import __version__

_secrets: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    _secrets.update(v for v in values if v and len(v) >= 4)


def redact(text: str) -> str:
    # Longest first: a whole DSN is replaced before the password inside it.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = redact(message), None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(fmt: str = "plain", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactingFilter())
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # APScheduler logs every job start at INFO; ours are already logged when they matter.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def scrub(value: Any) -> Any:
    """`redact` on every string of a JSON-like structure (Sentry events, verify --json)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def setup_sentry(dsn: str | None) -> bool:
    """Report the daemon's own failures (errors logged with exc_info) to Sentry."""
    if not dsn:
        return False
    import sentry_sdk

    sentry_sdk.init(
        dsn=dsn,
        release=f"venzory-db-exporter@{__version__}",
        before_send=lambda event, hint: scrub(event),
        before_breadcrumb=lambda crumb, hint: scrub(crumb),
    )
    return True
