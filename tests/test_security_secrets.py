"""Secrets from files (`${file:...}`, `VAR_FILE`), and a planted password that no output
ever shows: check-config, verify (text and JSON, database up or down, bad config), daemon
logs (plain and JSON, with a connection failure), /metrics, /events answers, Sentry."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
import sentry_sdk
from psycopg.conninfo import conninfo_to_dict

from exporter import logs, service
from exporter.config import ConfigError, load_config
from exporter.pgcluster import free_port
from exporter.poll import Poller
from test_logs import CapturingTransport
from venzory_fixture import SHIPPED_CONFIG

# Characters a URL must encode: the secret shows up decoded and encoded, both must go.
PLANTED = "Pl@nted#Pw:9xQ"
TOKEN = "ev-token-0f3c9a77"


def forms(secret: str) -> list[str]:
    return [secret, quote(secret, safe="")]


def assert_clean(text: str, where: str) -> None:
    for form in forms(PLANTED) + [TOKEN]:
        assert form not in text, f"{where} shows a secret ({form!r}):\n{text[-3000:]}"


def url_with_password(dsn: str, port: int | None = None) -> str:
    params = conninfo_to_dict(dsn)
    return (f"postgresql://{params['user']}:{quote(PLANTED, safe='')}@{params.get('host', '127.0.0.1')}:"
            f"{port or params['port']}/{params['dbname']}")


def secret_file(folder: Path, name: str, content: str) -> Path:
    path = folder / name
    path.write_text(content + "\n", encoding="utf-8")  # as `echo secret > file` writes it
    path.chmod(0o600)
    return path


def minimal_config(folder: Path, body: str) -> Path:
    path = folder / "config.yaml"
    path.write_text(body, encoding="utf-8")
    return path


# -- loading ----------------------------------------------------------------------------------


def test_file_reference_reads_the_secret_without_its_newline(tmp_path):
    dsn = secret_file(tmp_path, "db_url", "postgresql://u:p4ss@db/venzory")
    config = load_config(minimal_config(tmp_path, f"databases:\n  - name: v\n    dsn: ${{file:{dsn}}}\n"), env={})
    assert config.databases[0].dsn == "postgresql://u:p4ss@db/venzory"


def test_var_file_stands_for_an_unset_variable(tmp_path):
    dsn = secret_file(tmp_path, "db_url", "postgresql://u:p4ss@db/venzory")
    path = minimal_config(tmp_path, "databases:\n  - name: v\n    dsn: ${DATABASE_URL}\n"
                                    "events:\n  http:\n    token: ${EVENTS_TOKEN:-}\n")
    config = load_config(path, env={"DATABASE_URL_FILE": str(dsn)})
    assert config.databases[0].dsn == "postgresql://u:p4ss@db/venzory"
    assert config.events.http.token is None  # optional and no _FILE either: the default
    token = secret_file(tmp_path, "token", TOKEN)
    config = load_config(path, env={"DATABASE_URL_FILE": str(dsn), "EVENTS_TOKEN_FILE": str(token)})
    assert config.events.http.token == TOKEN
    with pytest.raises(ConfigError, match="config.yaml:3: databases\\[0\\].dsn: both DATABASE_URL and "
                                          "DATABASE_URL_FILE are set"):
        load_config(path, env={"DATABASE_URL": "x", "DATABASE_URL_FILE": str(dsn)})


def test_an_unreadable_secret_file_is_named_never_its_content(tmp_path):
    locked = secret_file(tmp_path, "locked", PLANTED)
    locked.chmod(0)
    path = minimal_config(tmp_path, f"databases:\n  - name: v\n    dsn: ${{file:{tmp_path}/missing}}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, env={})
    assert str(error.value) == (f"{path}:3: databases[0].dsn: cannot read secret file {tmp_path}/missing: "
                                "No such file or directory")
    path = minimal_config(tmp_path, "databases:\n  - name: v\n    dsn: ${DATABASE_URL}\n")
    with pytest.raises(ConfigError, match=r"config.yaml:3: databases\[0\].dsn: cannot read secret file .*/missing "
                                          r"\(from DATABASE_URL_FILE\)"):
        load_config(path, env={"DATABASE_URL_FILE": str(tmp_path / "missing")})
    if os.geteuid() != 0:  # root reads any file
        with pytest.raises(ConfigError, match="Permission denied") as error:
            load_config(path, env={"DATABASE_URL_FILE": str(locked)})
        assert PLANTED not in str(error.value)


def test_a_secret_in_a_value_that_fails_validation_is_not_quoted(tmp_path):
    bad = secret_file(tmp_path, "listen", f"not-an-address-{PLANTED}")
    path = minimal_config(tmp_path, f"exporter:\n  listen: ${{file:{bad}}}\n"
                                    "databases:\n  - name: v\n    dsn: postgresql://db/x\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, env={})
    assert "exporter.listen: expected HOST:PORT, got '***'" in str(error.value)
    assert_clean(str(error.value), "the config error")


def test_every_secret_of_a_config_is_registered(tmp_path):
    config = load_config(minimal_config(tmp_path, f"""
exporter:
  sentry_dsn: https://sentrykey0123@o1.ingest.sentry.io/42
databases:
  - name: v
    dsn: postgresql://u:{quote(PLANTED, safe='')}@db/x
    migrations:
      shadow_dsn: host=db user=s password=shadow-pw-77
events:
  http:
    token: {TOKEN}
"""), env={})
    secrets = service.secrets_of(config)
    assert {PLANTED, quote(PLANTED, safe=""), "shadow-pw-77", TOKEN, "sentrykey0123"} <= set(secrets)


# -- the planted password, grepped for in every output -----------------------------------------


def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in {**os.environ, **env}.items() if k != "DATABASE_URL"})


@pytest.mark.parametrize("database", ["up", "down"])
def test_check_config_and_verify_never_show_the_password(clean_dsn, tmp_path, database):
    url = url_with_password(clean_dsn, None if database == "up" else free_port())
    env = {"DATABASE_URL_FILE": str(secret_file(tmp_path, "db_url", url)),
           "EVENTS_TOKEN_FILE": str(secret_file(tmp_path, "token", TOKEN))}
    result = run_cli("check-config", "--config", str(SHIPPED_CONFIG), env=env)
    assert result.returncode == 0, result.stderr
    assert_clean(result.stdout + result.stderr, "check-config")
    for extra in ([], ["--json"]):
        result = run_cli("verify", "--config", str(SHIPPED_CONFIG), *extra, env=env)
        assert result.returncode == (0 if database == "up" else 2), result.stdout + result.stderr
        assert_clean(result.stdout + result.stderr, f"verify {extra}")
        if extra and database == "down":
            assert json.loads(result.stdout)["databases"][0]["error"]  # the error is there, redacted


def test_a_bad_config_never_shows_the_password(clean_dsn, tmp_path):
    dsn = secret_file(tmp_path, "db_url", url_with_password(clean_dsn))
    broken = secret_file(tmp_path, "shadow_url", f"host=db password={PLANTED} 'unterminated")
    path = minimal_config(tmp_path, f"databases:\n  - name: v\n    dsn: ${{file:{dsn}}}\n    poll_interval: soon\n"
                                    f"    migrations:\n      shadow_dsn: ${{file:{broken}}}\n")
    for command in ("check-config", "verify"):
        result = run_cli(command, "--config", str(path), env={})
        assert result.returncode == 2
        assert "databases[0].poll_interval: expected a duration" in result.stderr
        assert_clean(result.stdout + result.stderr, f"{command} with a bad config")


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_daemon_logs_metrics_and_events_never_show_the_secrets(clean_dsn, tmp_path, log_format):
    port = free_port()
    up = secret_file(tmp_path, "up_url", url_with_password(clean_dsn))
    down = secret_file(tmp_path, "down_url", url_with_password(clean_dsn, free_port()))
    token = secret_file(tmp_path, "token", TOKEN)
    path = minimal_config(tmp_path, f"""
exporter:
  listen: 127.0.0.1:{port}
  log_format: {log_format}
  log_level: debug
databases:
  - name: main
    dsn: ${{DATABASE_URL}}
    poll_interval: 1s
  - name: down
    dsn: ${{file:{down}}}
    poll_interval: 1s
    connect_timeout: 1s
events:
  database: main
  http:
    token: ${{file:{token}}}
""")
    env = {**os.environ, "DATABASE_URL_FILE": str(up)}
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(path)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        metrics = ""
        while time.monotonic() < deadline:
            try:
                metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
                if 'venzory_db_up{database="down"} 0.0' in metrics and 'venzory_db_up{database="main"} 1.0' in metrics:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert 'venzory_db_up{database="down"} 0.0' in metrics, metrics[-2000:]
        assert_clean(metrics, "/metrics")
        answers = []
        for auth in (None, f"Bearer {TOKEN[:-1]}", f"Bearer {PLANTED}"):
            request = urllib.request.Request(base + "/events", data=b'{"msg": "x"}', method="POST",
                                             headers={"Authorization": auth} if auth else {})
            try:
                urllib.request.urlopen(request, timeout=5)
            except urllib.error.HTTPError as e:
                answers.append(f"{e.code} {dict(e.headers)} {e.read().decode()}")
        assert len(answers) == 3 and all(a.startswith("401") for a in answers)
        assert_clean("\n".join(answers), "/events answers")
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    assert "database down is down (connect_failed)" in stderr  # the connection failure was logged
    if log_format == "json":
        assert all(json.loads(line)["message"] for line in stderr.splitlines() if line.strip())
    assert_clean(stdout + stderr, f"the daemon's {log_format} log")


def test_sentry_events_and_breadcrumbs_never_show_the_password(clean_dsn, tmp_path):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    url = url_with_password(clean_dsn, free_port())
    path = minimal_config(tmp_path, f"databases:\n  - name: down\n    dsn: ${{file:{secret_file(tmp_path, 'u', url)}}}\n"
                                    "    connect_timeout: 1s\n")
    config = service.load(str(path))  # what `run` does: load, register the secrets
    assert logs.setup_sentry("https://public@sentry.invalid/1")
    transport = CapturingTransport()
    sentry_sdk.get_client().transport = transport
    try:
        logs.setup_logging("plain", "debug")
        with Poller(config, config.databases[0]) as poller:
            assert not poller.poll().up  # logs the connection failure: a breadcrumb
        logging.getLogger("exporter.test").error("could not use %s", url)  # an error event
        try:
            raise RuntimeError(f"connect to {config.databases[0].dsn} failed")
        except RuntimeError as e:
            sentry_sdk.capture_exception(e)
        sentry_sdk.flush()
        payload = b"".join(item.get_bytes() for env in transport.envelopes for item in env.items).decode()
        assert "could not use" in payload and "RuntimeError" in payload
        assert_clean(payload, "Sentry")
    finally:
        sentry_sdk.get_client().close()
        root.handlers[:], root.level = handlers, level


# -- every DSN shape that fails to parse or to connect (issue 14, item 5) -----------------------

SECRET = "Zq9Secr3t"  # what libpq echoed of the password: no part of it may be shown


def _malformed(port: int) -> list[str]:
    """DSNs libpq cannot parse (and echoes), or would read differently from how they are written."""
    return [
        f"postgresql://venzory_monitor:{SECRET}%zzPw@127.0.0.1:{port}/venzory",  # bad percent-escape
        f"postgresql://venzory_monitor:{SECRET}Pw@[127.0.0.1/venzory",  # unclosed [: the whole URI echoed
        f"host=127.0.0.1 port={port} password='{SECRET}Pw",  # unterminated quote
        f"host=127.0.0.1 port={port} password={SECRET}Pw bogus=1",  # unknown keyword
        f"postgresql://127.0.0.1:{port}/venzory?password={SECRET}Pw&bogus=1",  # unknown URI parameter
        f"postgresql://venzory_monitor:{SECRET}/Pw@127.0.0.1:{port}/venzory",  # unencoded /: the host would be echoed
        f"postgresql://venzory_monitor:{SECRET}@Pw@127.0.0.1:{port}/venzory",  # unencoded @
    ]


def _not_connecting(server_port: int) -> list[str]:
    """DSNs that parse, and fail to connect, each differently."""
    closed = free_port()
    return [
        f"postgresql://venzory_monitor:{SECRET}Pw@127.0.0.1:{closed}/venzory",  # refused
        f"host=127.0.0.1 port={closed} user=venzory_monitor password={SECRET}Pw dbname=venzory",
        f"postgresql://venzory_monitor:{SECRET}Pw@127.0.0.1:{server_port}/venzory",  # no such role
        f"postgresql://venzory_monitor:{SECRET}Pw@127.0.0.1:{server_port}/venzory?sslmode=bogus",
        f"postgresql://venzory_monitor:{SECRET}Pw@127.0.0.1:notaport/venzory",
        f"postgresql://venzory_monitor:{quote(SECRET + '/@?#', safe='')}@127.0.0.1:{closed}/venzory",
    ]


def _config_of(tmp_path: Path, dsns: list[str], listen: str = "127.0.0.1:0") -> Path:
    databases = "".join(f"  - name: db{i}\n    dsn: ${{file:{secret_file(tmp_path, f'dsn{i}', dsn)}}}\n"
                        f"    poll_interval: 1s\n    connect_timeout: 1s\n" for i, dsn in enumerate(dsns))
    return minimal_config(tmp_path, f"exporter:\n  listen: {listen}\n  log_level: debug\ndatabases:\n{databases}")


def _assert_no_secret(text: str, where: str) -> None:
    assert SECRET not in text and quote(SECRET, safe="") not in text, f"{where} shows the password:\n{text[-3000:]}"


def test_check_config_rejects_a_dsn_that_does_not_parse_without_quoting_it(tmp_path):
    dsns = _malformed(free_port())
    path = _config_of(tmp_path, dsns)
    for command in ("check-config", "verify", "run"):
        result = run_cli(command, "--config", str(path), env={})
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        for i in range(len(dsns)):
            assert f"databases[{i}].dsn:" in result.stderr, (i, result.stderr)
        assert "a % in the password is written %25" in result.stderr
        assert "must be percent-encoded" in result.stderr
        _assert_no_secret(result.stdout + result.stderr, command)


def test_dsns_that_fail_to_connect_never_show_the_password(clean_dsn, tmp_path):
    dsns = _not_connecting(int(conninfo_to_dict(clean_dsn)["port"]))
    path = _config_of(tmp_path, dsns, f"127.0.0.1:{free_port()}")
    result = run_cli("check-config", "--config", str(path), env={})
    assert result.returncode == 0, result.stderr
    _assert_no_secret(result.stdout + result.stderr, "check-config")
    for extra in ([], ["--json"]):
        result = run_cli("verify", "--config", str(path), *extra, env={})
        assert result.returncode == 2, result.stdout + result.stderr
        _assert_no_secret(result.stdout + result.stderr, f"verify {extra}")
        if extra:
            errors = [d["error"] for d in json.loads(result.stdout)["databases"]]
            assert len(errors) == len(dsns) and all(errors), errors  # each failure is there, redacted
    process = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)  # a few polls of each
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert stderr.count("is down (connect_failed)") >= len(dsns), stderr[-3000:]
    _assert_no_secret(stdout + stderr, "the daemon's log")
