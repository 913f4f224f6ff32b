"""The `events:` section of the config file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config
from exporter.config.events import EventsConfig, default_database, validate_events


def write(tmp_path, text: str):
    path = tmp_path / "venzory.yaml"
    path.write_text(text)
    return path


BASE = """\
databases:
  - name: venzory
    dsn: postgresql://localhost/venzory
"""


def test_defaults_mean_http_on_without_token_and_no_files():
    events = EventsConfig()
    assert events.http.enabled and events.http.token is None and events.files == []
    assert events.http.max_body_bytes == 8 * 1024 * 1024 and events.max_line_bytes == 1024 * 1024
    assert events.start_at == "end" and events.state_file is None


def test_full_section_with_token_from_the_environment(tmp_path):
    path = write(tmp_path, BASE + """\
events:
  http:
    token: ${EVENTS_TOKEN:-}
    max_body_bytes: 4MiB
  max_line_bytes: 256KiB
  files:
    - path: /var/log/venzory/*.log
  state_file: /var/lib/venzory-db-exporter/events.json
  rotate_wait: 10s
  known_constraints: [legacy_check]
""")
    config = load_config(path, env={"EVENTS_TOKEN": "t0ken"})
    assert config.events.http.token == "t0ken"
    assert config.events.http.max_body_bytes == 4 * 1024 * 1024 and config.events.max_line_bytes == 256 * 1024
    assert config.events.rotate_wait == 10.0
    validate_events(config)
    assert load_config(path, env={}).events.http.token is None  # unset: auth off


def test_shipped_config_loads_with_events_off_by_default_variables():
    config = load_config(Path(__file__).parent.parent / "config" / "venzory.yaml",
                         env={"DATABASE_URL": "postgresql://localhost/venzory"})
    assert config.events.http.enabled and config.events.http.token is None
    assert config.events.state_file is None  # ${EVENTS_STATE_FILE:-} unset


@pytest.mark.parametrize("section, message", [
    ("events:\n  http:\n    max_body_bytes: lots\n", "events.http.max_body_bytes: expected a size"),
    ("events:\n  files:\n    - database: venzory\n", "events.files[0].path: Field required"),
    ("events:\n  tail: true\n", "events.tail: unknown key"),
    ("events:\n  start_at: middle\n", "events.start_at:"),
])
def test_errors_name_the_key(tmp_path, section, message):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, BASE + section), env={})
    assert message in str(error.value)
    assert "venzory.yaml:" in str(error.value)


TWO = BASE + "  - name: staging\n    dsn: postgresql://localhost/staging\n"


@pytest.mark.parametrize("section, message", [
    ("events:\n  files:\n    - path: /x/*.log\n",
     "events.files[0].database: required when several databases are configured"),
    ("events:\n  files:\n    - path: /x\n      database: prod\n", "events.files[0].database: no database named 'prod'"),
    ("events:\n  database: nope\n", "events.database: no database named 'nope'"),
])
def test_cross_checks_with_databases(tmp_path, section, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, TWO + section), env={})


def test_event_database_defaults(tmp_path):
    config = load_config(write(tmp_path, TWO + "events:\n  database: staging\n  files:\n    - path: /x\n"), env={})
    validate_events(config)
    assert default_database(config.events, ["venzory", "staging"]) == "staging"
    assert default_database(EventsConfig(), ["venzory"]) == "venzory"
    assert default_database(EventsConfig(), ["a", "b"]) is None
