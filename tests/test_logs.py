"""Logs and Sentry never carry a registered secret; JSON logs are one object per line."""

from __future__ import annotations

import json
import logging

import pytest
import sentry_sdk
from sentry_sdk.transport import Transport

from exporter import logs

SECRET = "pl4nted-Passw0rd"


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_json_lines_with_secrets_redacted(capsys):
    logs.register_secrets([SECRET])
    logs.setup_logging("json", "info")
    log = logging.getLogger("exporter.test")
    log.info("connecting with password=%s", SECRET)
    try:
        raise RuntimeError(f"boom {SECRET}")
    except RuntimeError:
        log.exception("failed")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "connecting with password=***"
    assert (first["level"], first["logger"]) == ("info", "exporter.test")
    assert "RuntimeError: boom ***" in second["exception"]
    assert SECRET not in "".join(lines)


class CapturingTransport(Transport):
    def __init__(self, options=None):
        super().__init__(options)
        self.envelopes = []

    def capture_envelope(self, envelope):
        self.envelopes.append(envelope)


def test_sentry_events_are_scrubbed():
    logs.register_secrets([SECRET])
    assert logs.setup_sentry("https://public@sentry.invalid/1")
    transport = CapturingTransport()
    sentry_sdk.get_client().transport = transport
    try:
        raise ValueError(f"could not connect: postgresql://app:{SECRET}@db/venzory")
    except ValueError as e:
        sentry_sdk.capture_exception(e)
    sentry_sdk.flush()
    payload = b"".join(item.get_bytes() for env in transport.envelopes for item in env.items)
    assert b"could not connect" in payload
    assert SECRET.encode() not in payload
    sentry_sdk.get_client().close()
