"""Fuzzing with hypothesis: no input escapes the error path.

- the event parser and classifier: any bytes, any JSON value -> an error's labels,
  ignored, or a rejection with a known reason; never an exception;
- the HTTP app's body handling: any body, type, encoding and query -> a JSON answer with
  a documented status, and every request counted (received = errors + ignored + rejected);
- the config loaders: any YAML document or text -> a Config (or WebSettings), or a
  ConfigError; never another exception.
"""

from __future__ import annotations

import gzip
import io
import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from exporter.config import Config, ConfigError, load_config
from exporter.config.events import EventsConfig
from exporter.events import EventPipeline, KnownNames
from exporter.events.classify import ErrorFacts, Resolver
from exporter.events.known import ErrorKind
from exporter.events.parse import REASONS, LineParser, Rejected, outcome_of_value
from exporter.config.web import WebSettings, load_web_config
from test_events_support import scrape

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN = KnownNames(constraints=frozenset({"Item_practiceId_name_key", "check_quantity_non_negative"}),
                   tables=frozenset({"Item", "LocationInventory"}))

# Pieces that steer generated text toward what the parser and the loader look for.
FRAGMENTS = ["prisma:error", "P2002", "P2039", "23505", "23514", "violates check constraint", "Unique constraint",
             '"code"', '"err"', '"meta"', '{"log": "', "\n", "\r\n", "\\", "\x00", "${DATABASE_URL}", "${X:-d}",
             "${file:/nonexistent/secret}", "${file:/dev/null}", "$$", "${", "}", ": ", "- ", "&a", "*a", "!!python/object"]
texty = st.one_of(st.text(max_size=60), st.sampled_from(FRAGMENTS),
                  st.lists(st.one_of(st.text(max_size=10), st.sampled_from(FRAGMENTS)), max_size=6).map("".join))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), texty),
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(st.one_of(texty, st.sampled_from(
                                   ["err", "error", "code", "meta", "message", "target", "log", "cause", "modelName",
                                    "constraint", "clientVersion", "name", "msg", "driverAdapterError",
                                    "originalCode"])), children, max_size=6)),
    max_leaves=25)


def check_outcome(outcome, resolver: Resolver) -> None:
    if outcome is None:
        return
    if type(outcome) is Rejected:
        assert outcome.reason in REASONS
        return
    assert isinstance(outcome, ErrorFacts)
    labels = resolver.classify(outcome)
    assert labels.kind in ErrorKind
    assert labels.code == "unknown" or (labels.code[0] == "P" and labels.code[1:].isdigit())
    assert labels.constraint in KNOWN.constraints | {"none", "other"}
    assert labels.model in KNOWN.tables | {"none", "other"}


@FAST
@given(lines=st.lists(st.one_of(st.binary(max_size=200), texty.map(str.encode),
                                json_values.map(lambda v: json.dumps(v).encode())), max_size=20),
       json_only=st.booleans())
def test_the_line_parser_never_raises(lines, json_only):
    resolver = Resolver(KNOWN)
    outcomes = []
    parser = LineParser(outcomes.append, json_only=json_only)
    for line in lines:
        parser.feed(line + b"\n")
    parser.flush()
    for outcome in outcomes:
        check_outcome(outcome, resolver)


@FAST
@given(value=json_values)
def test_any_json_value_is_an_outcome(value):
    check_outcome(outcome_of_value(value), Resolver(KNOWN))


STATUSES = {200, 400, 411, 413, 415}
bodies = st.one_of(
    st.binary(max_size=400),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.lists(json_values, max_size=8).map(lambda vs: "\n".join(json.dumps(v) for v in vs).encode()),
    st.lists(json_values, max_size=8).map(lambda vs: json.dumps(vs)[:-1].encode()),  # an array cut short
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, gzipped=st.booleans(), content_type=st.sampled_from(
           ["", "application/json", "application/x-ndjson", "text/plain", "text/plain; charset=latin-1",
            "application/octet-stream", "multipart/form-data; boundary=x"]),
       encoding=st.sampled_from(["", "identity", "gzip", "GZIP", "br", "deflate"]),
       length=st.sampled_from([None, "exact", "short", "-5", "abc"]),
       query=st.sampled_from(["", "database=venzory", "database=nope", "database=", "x=%ff%fe"]))
def test_the_events_app_answers_any_request_with_json(body, gzipped, content_type, encoding, length, query):
    pipeline = EventPipeline(EventsConfig.model_validate({"http": {"max_body_bytes": 4096}, "max_line_bytes": 512}),
                             ["venzory"], KNOWN)
    data = gzip.compress(body) if gzipped else body
    declared = {None: None, "exact": str(len(data)), "short": str(max(0, len(data) - 3)), "-5": "-5",
                "abc": "abc"}[length]
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/events", "QUERY_STRING": query,
               "CONTENT_TYPE": content_type, "HTTP_CONTENT_ENCODING": encoding, "wsgi.input": io.BytesIO(data)}
    if declared is not None:
        environ["CONTENT_LENGTH"] = declared
    answered = {}

    def start_response(status, headers, exc_info=None):
        answered["status"], answered["headers"] = int(status.split()[0]), dict(headers)

    payload = b"".join(pipeline.wsgi_app(environ, start_response))
    assert answered["status"] in STATUSES
    assert isinstance(json.loads(payload), dict)
    metrics = scrape(pipeline.collector)
    received = sum(metrics["venzory_db_events_received_total"].values())
    counted = (sum(metrics["venzory_db_prisma_errors_total"].values())
               + sum(metrics["venzory_db_events_ignored_total"].values())
               + sum(metrics["venzory_db_events_rejected_total"].values()))
    assert received == counted and (received >= 1 or answered["status"] == 200)


# -- config loaders ---------------------------------------------------------------------------

FOLDER = Path(tempfile.mkdtemp(prefix="fuzz-config-"))
VALID_DATABASE = {"name": "venzory", "dsn": "postgresql://monitor@db/venzory"}
VALID_CHECK = {"name": "c", "kind": "row", "table": "Item", "category": "x", "severity": "warning",
               "rule": "quantity >= 0"}
keys = st.one_of(texty, st.integers(), st.booleans(), st.sampled_from(
    ["exporter", "databases", "checks", "constraints", "events", "name", "dsn", "kind", "table", "rule", "http",
     "token", "files", "listen", "poll_interval", "migrations", "drift", "acknowledge", "severity", "columns",
     "references", "schema", "web_config", "max_series", "tls_server_config", "basic_auth_users", "cert_file",
     "http_server_config", "headers", "rate_limit", "client_auth_type", "cipher_suites"]))
documents = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texty,
              st.just(VALID_DATABASE), st.just(VALID_CHECK)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=20)
config_shaped = st.fixed_dictionaries({}, optional={
    "exporter": documents, "databases": st.one_of(st.lists(st.one_of(documents, st.just(VALID_DATABASE)), max_size=3),
                                                  documents),
    "checks": st.one_of(st.lists(st.one_of(documents, st.just(VALID_CHECK)), max_size=3), documents),
    "constraints": documents, "events": documents})


def write(text: str) -> Path:
    path = FOLDER / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def dump(document) -> str:
    try:
        return yaml.safe_dump(document, allow_unicode=True)
    except yaml.YAMLError:
        return yaml.safe_dump(document, allow_unicode=False)


@FAST
@given(document=st.one_of(documents, config_shaped))
def test_load_config_raises_only_config_errors(document):
    try:
        assert isinstance(load_config(write(dump(document)), env={}), Config)
    except ConfigError as e:
        assert str(e)


@FAST
@given(text=st.one_of(st.text(max_size=300), st.lists(st.sampled_from(FRAGMENTS + [":", "\n  ", "[", "{", "'", '"']),
                                                      max_size=30).map("".join)))
def test_load_config_of_any_text_raises_only_config_errors(text):
    try:
        load_config(write(text), env={})
    except ConfigError as e:
        assert str(e)


web_shaped = st.fixed_dictionaries({}, optional={
    "tls_server_config": documents, "http_server_config": documents, "basic_auth_users": documents,
    "rate_limit": documents})


@FAST
@given(document=st.one_of(documents, web_shaped))
def test_load_web_config_raises_only_config_errors(document):
    try:
        assert isinstance(load_web_config(write(dump(document))), WebSettings)
    except ConfigError as e:
        assert str(e)


@pytest.fixture(scope="module", autouse=True)
def _clean_folder():
    yield
    for path in FOLDER.iterdir():
        path.unlink()
    FOLDER.rmdir()
