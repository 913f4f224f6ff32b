"""End to end (issue 5): database -> exporter -> Prometheus -> Alertmanager -> webhook,
and every Grafana panel query against that Prometheus. Real processes, no mocks, all
traffic on 127.0.0.1.

What runs (one stack for the whole module, torn down by the fixture's finalizer):

- PostgreSQL: the session's test server; a database built for this module from the
  fixture's migrations 1-6 and the problems seed (tests/venzory_fixture.py). Built here, not
  the shared `problems_dsn`, so that its last migration finished seconds ago - which makes
  VenzoryDbErrorsAfterMigration's 15-minute window deterministic.
- The exporter daemon as a subprocess (`python -m exporter run`) with the shipped
  config/venzory.yaml; only `poll_interval` is changed (60s -> POLL_INTERVAL) in a copy
  written to tmp. The migrations features are on (PRISMA_MIGRATIONS_DIR, PRISMA_SCHEMA,
  SHADOW_DATABASE_URL), so migration, drift and deploy-prediction series exist.
- Prometheus with a config generated from deploy/prometheus/prometheus.yml: scrape and
  evaluation every second, the exporter and Alertmanager on their local ports, and the
  shipped alerts/*.rules.yml - copied to tmp with every `for:` shortened (time runs 60x
  faster: the shipped rules are tested at a 1m evaluation interval, this Prometheus
  evaluates every 1s, so `for: 5m` becomes 5s; capped at FOR_CAP so the 1h of
  VenzoryDbMigrationsPending does not make the test wait a minute). Expressions, labels,
  thresholds and `keep_firing_for` are untouched.
- Alertmanager with a config generated from alerts/alertmanager.yml: the shipped route,
  grouping and inhibit rules; group_wait/group_interval shortened; every receiver (pager,
  chat) replaced by a webhook to an http.server in this test, which records what arrives.
- Prisma error events: a few P2002 lines POSTed to the exporter's /events.

Then: the critical VenzoryDbNegativeInventory page must reach the webhook (receiver pager,
labels alertname, severity=critical, database=venzory), exactly the alerts this data must
raise must arrive (EXPECTED_ALERTS, each routed to its severity's receiver), the ones it
must not raise must be absent (NEVER_ALERTS), and every dashboard query must return data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
import yaml

from exporter.migrations.replay import apply_migrations
from support import REPO, need
from test_backups import tool
from test_grafana import dashboard_queries, iter_targets, load_dashboard
from venzory_fixture import MIGRATIONS, SCHEMA_PRISMA, SHIPPED_CONFIG, STEP_6, build_database

pytestmark = [pytest.mark.slow, pytest.mark.db]

PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
RULES = sorted((REPO / "alerts").glob("*.rules.yml"))
ALERTMANAGER_CONFIG = REPO / "alerts" / "alertmanager.yml"

JOB = "venzory-db-exporter"  # the job name the rules select on
DATABASE = "venzory"  # the database's name in config/venzory.yaml
POLL_INTERVAL = "2s"  # shipped: 60s; a first poll (shadow replay) takes ~1 s here
SCRAPE_INTERVAL = "1s"
EVALUATION_INTERVAL = "1s"
FOR_SCALE = 60  # `for:` divided by this (1m of the shipped tests -> 1s here)
FOR_CAP = 15.0  # seconds; the longest `for:` after scaling
EVENTS_TOKEN = "e2e-test-token"  # sent always; used when the config reads ${EVENTS_TOKEN}

STARTUP_TIMEOUT = 60.0
ALERTS_TIMEOUT = 90.0  # from the first scrape; the longest scaled `for:` is FOR_CAP
GRACE = 6.0  # once every expected alert arrived: this long for an unexpected one to show up
QUERY_TIMEOUT = 20.0

SEVERITY_RECEIVER = {"critical": "pager", "warning": "chat"}

# -- what this data must and must not raise ---------------------------------------------------
# The database: migrations 1-6 applied, 7-11 pending, seed_problems.sql (PROBLEM_VIOLATIONS,
# PROBLEM_DUPLICATES, 8 foreign keys dropped). Nothing is down, no check fails.
DATA_ALERTS = {
    "VenzoryDbNegativeInventory",  # 3 LocationInventory rows with quantity < 0 (the page under test)
    "VenzoryDbDataViolations",  # warning checks with violations (invalid_quantity, orphans, ...)
    "VenzoryDbDuplicateRows",  # 5 duplicate checks with groups
    "VenzoryDbConstraintMissing",  # the 8 foreign keys the seed dropped (declared by the applied migrations)
    "VenzoryDbSchemaDrift",  # the 8 foreign keys the seed dropped (vs migrations); vs schema.prisma
    "VenzoryDbMigrationsPending",  # steps 7-11
    "VenzoryDbPendingMigrationWillFail",  # deploy fails at step 7 statement 1 (a dropped foreign key)
    "VenzoryDbRoleCanWrite",  # the exporter connects as the test cluster's superuser
    "VenzoryDbMigrationWithoutBackup",  # the only dump (BACKUP_GLOB) was taken after the migrations
}
# Raised by the Prisma error events this test posts (P2002 on Item_practiceId_name_key).
EVENT_ALERTS = {
    "VenzoryDbPrismaErrors",  # warning: any Prisma error in 15m
    "VenzoryDbErrorsAfterMigration",  # critical: errors < 15m after the last migration (built just now)
}
NEVER_ALERTS = {
    # the monitoring itself works: the exporter is scraped, reaches the database, polls
    # complete in time and are not skipped, every check runs, no event is rejected
    "VenzoryDbExporterDown", "VenzoryDbExporterAbsent", "VenzoryDbDatabaseDown", "VenzoryDbPollsStale",
    "VenzoryDbPollsSkipped", "VenzoryDbCheckFailing", "VenzoryDbEventsRejected",
    # 3 unique violations (threshold: more than 10 per hour), none on check_quantity_non_negative
    "VenzoryDbConstraintViolationRateHigh", "VenzoryDbCriticalConstraintViolated",
    # negative inventory is the only critical check, and this alert leaves it out
    "VenzoryDbCriticalDataViolations",
    # check_quantity_non_negative (step 9) and the unique keys (step 10) are not missing but
    # pending: their migrations have not run (PendingMigrationWillFail says what blocks them)
    "VenzoryDbCriticalConstraintMissing",
    # nothing in the config names a table or column the app no longer has
    "VenzoryDbStaleConfig",
    # the missing constraints are missing, not NOT VALID
    "VenzoryDbCriticalConstraintNotValid", "VenzoryDbConstraintNotValid",
    # the history is clean: applied or pending, nothing failed, edited or unknown
    "VenzoryDbMigrationFailed", "VenzoryDbMigrationModified", "VenzoryDbMigrationMissingFromFolder",
    # every input of the migrations assessment is readable: folder, schema.prisma, shadow server
    "VenzoryDbMigrationInputUnavailable",
    # a complete dump of this database was taken just now; the test cluster does not archive
    "VenzoryDbNoRecentBackup", "VenzoryDbWalArchivingFailing",
    # nothing dangerous happens until the emergency tests at the end of this module
    "VenzoryDbMigrationHistoryRewritten", "VenzoryDbMassDelete", "VenzoryDbSchemaChangedWithoutMigration",
    # no error rate before the deploy (it is older than Prometheus), no writes after it
    "VenzoryDbErrorRateUpAfterDeploy", "VenzoryDbWriteLatencyUpAfterDeploy",
}

# Pino lines as the Venzory app logs them: three unique violations and one ordinary line.
P2002_EVENT = {"level": 50, "time": 0, "msg": "Unique constraint failed",
               "err": {"type": "PrismaClientKnownRequestError", "code": "P2002",
                       "meta": {"modelName": "Item", "driverAdapterError": {"cause": {
                           "originalCode": "23505", "kind": "UniqueConstraintViolation",
                           "constraint": {"index": "Item_practiceId_name_key"}}}},
                       "message": "Unique constraint failed"}}
INFO_EVENT = {"level": 30, "time": 0, "msg": "GET /api/items 200"}
POSTED_ERRORS = 3


# -- small helpers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def parse_duration(text: str) -> float:
    """A Prometheus duration ("1h", "15m", "1m30s") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(int(n) * units[u] for n, u in parts)


def shortened_for(text: str) -> str:
    seconds = max(min(parse_duration(text) / FOR_SCALE, FOR_CAP), 1)
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{int(seconds * 1000)}ms"


class Process:
    """A subprocess whose output goes to a file (a pipe nobody reads would block it)."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict | None = None, cwd: Path | None = None):
        self.name, self.log = name, log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT, env=env, cwd=cwd)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return f"--- {self.name} ({self.log}), exit {self.proc.poll()} ---\n" + "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()


def wait_until(what: str, predicate, timeout: float, processes: list[Process] = (), interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for p in processes:
            if not p.alive():
                pytest.fail(f"{p.name} exited while waiting for {what}\n{p.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n"
                        + "\n".join(p.tail() for p in processes))
        time.sleep(interval)


# -- the webhook Alertmanager notifies ---------------------------------------------------------


class Webhook:
    """Alertmanager's webhook receiver: records every notification (its receiver comes from
    the URL path, /pager or /chat, and from the payload)."""

    def __init__(self):
        self.notifications: list[dict] = []
        self.lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                payload = json.loads(body)
                payload["_path"] = self.path
                payload["_received_at"] = time.monotonic()
                with webhook.lock:
                    webhook.notifications.append(payload)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def alerts(self) -> list[tuple[str, str, dict]]:
        """(receiver, status, labels) of every alert in every notification so far."""
        with self.lock:
            notifications = list(self.notifications)
        return [(n["receiver"], a["status"], a["labels"]) for n in notifications for a in n["alerts"]]

    def firing_names(self) -> set[str]:
        return {labels["alertname"] for _, status, labels in self.alerts() if status == "firing"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# -- generated configs -------------------------------------------------------------------------


def write_exporter_config(path: Path) -> Path:
    """The shipped config with poll_interval shortened; everything else as shipped."""
    config = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    (database,) = config["databases"]
    assert database["name"] == DATABASE
    database["poll_interval"] = POLL_INTERVAL
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def write_rules(folder: Path) -> list[Path]:
    """The shipped rule files with every `for:` shortened (see the module docstring)."""
    folder.mkdir()
    out = []
    for path in RULES:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = shortened_for(rule["for"])
        target = folder / path.name
        target.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        out.append(target)
    return out


def write_prometheus_config(path: Path, rules: list[Path], ports: dict[str, int]) -> Path:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    config["global"].update(scrape_interval=SCRAPE_INTERVAL, scrape_timeout=SCRAPE_INTERVAL,
                            evaluation_interval=EVALUATION_INTERVAL)
    config["rule_files"] = [str(r) for r in rules]
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    alertmanagers["static_configs"] = [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {JOB, "prometheus", "alertmanager"}, set(jobs)
    for name, port in ((JOB, ports["exporter"]), ("prometheus", ports["prometheus"]),
                       ("alertmanager", ports["alertmanager"])):
        jobs[name]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def write_alertmanager_config(path: Path, webhook_url: str) -> Path:
    """The shipped route and inhibit rules; receivers become webhooks to this test; the
    group timers shortened so a notification follows an alert within seconds."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    config["route"].update(group_wait="1s", group_interval="1s")
    config["receivers"] = [{"name": r["name"], "webhook_configs": [{"url": f"{webhook_url}/{r['name']}",
                                                                    "send_resolved": True}]}
                           for r in config["receivers"]]
    assert {r["name"] for r in config["receivers"]} == set(SEVERITY_RECEIVER.values())
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


# -- the stack -----------------------------------------------------------------------------------


@dataclass
class Stack:
    exporter: str
    prometheus: str
    alertmanager: str
    webhook: Webhook
    processes: list[Process]
    exporter_instance: str
    dsn: str = ""  # the monitored database
    events_answer: dict = field(default_factory=dict)
    first_scrape_at: float = 0.0
    timeline: dict[str, float] = field(default_factory=dict)

    def query(self, expr: str) -> list[dict]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = http(url, timeout=10)
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", (expr, status, answer)
        return answer["data"]["result"]


@pytest.fixture(scope="module")
def stack(pg_server, tmp_path_factory):
    prometheus_bin = need("prometheus")
    alertmanager_bin = shutil.which("alertmanager") or need("prometheus-alertmanager")
    need("promtool")
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("e2e")
    dsn = build_database(pg_server, "e2e_problems", upto=STEP_6, seed="problems")
    with psycopg.connect(dsn, autocommit=True) as conn:
        # the deploy watch's before-phase: the seed's INSERTs into the tables the migrations created
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    backups = tmp / "backups"
    backups.mkdir()
    subprocess.run([tool("pg_dump"), dsn, "-Fc", "-f", str(backups / "backup_before_migration.dump")],
                   check=True, capture_output=True, timeout=120)
    ports = {"exporter": free_port(), "prometheus": free_port(), "alertmanager": free_port()}
    webhook = Webhook()
    processes: list[Process] = []
    try:
        # the exporter
        env = dict(os.environ, DATABASE_URL=dsn, PRISMA_MIGRATIONS_DIR=str(MIGRATIONS),
                   PRISMA_SCHEMA=str(SCHEMA_PRISMA), SHADOW_DATABASE_URL=pg_server.admin_dsn,
                   EVENTS_TOKEN=EVENTS_TOKEN, LOG_FORMAT="plain", LOG_LEVEL="info",
                   BACKUP_GLOB=str(backups / "*.dump"), WAL_ARCHIVER="true")
        config = write_exporter_config(tmp / "venzory.yaml")
        exporter = Process("exporter", [sys.executable, "-m", "exporter", "run", "--config", str(config),
                                        "--listen", f"127.0.0.1:{ports['exporter']}"],
                           tmp / "exporter.log", env=env, cwd=REPO)
        processes.append(exporter)
        exporter_url = f"http://127.0.0.1:{ports['exporter']}"

        # Alertmanager
        am_config = write_alertmanager_config(tmp / "alertmanager.yml", webhook.url)
        alertmanager = Process("alertmanager", [
            alertmanager_bin, f"--config.file={am_config}", f"--storage.path={tmp / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{ports['alertmanager']}", "--cluster.listen-address=",
            "--log.level=info"], tmp / "alertmanager.log")
        processes.append(alertmanager)
        alertmanager_url = f"http://127.0.0.1:{ports['alertmanager']}"

        # Prometheus, once the exporter has completed its first poll
        wait_until("the exporter's first poll (/readyz)",
                   lambda: _status(f"{exporter_url}/readyz") == 200, STARTUP_TIMEOUT, processes)
        rules = write_rules(tmp / "rules")
        prom_config = write_prometheus_config(tmp / "prometheus.yml", rules, ports)
        check = subprocess.run(["promtool", "check", "config", str(prom_config)], capture_output=True,
                               text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        prometheus = Process("prometheus", [
            prometheus_bin, f"--config.file={prom_config}", f"--storage.tsdb.path={tmp / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{ports['prometheus']}", "--log.level=info"],
            tmp / "prometheus.log")
        processes.append(prometheus)
        prometheus_url = f"http://127.0.0.1:{ports['prometheus']}"
        wait_until("Alertmanager ready", lambda: _status(f"{alertmanager_url}/-/ready") == 200,
                   STARTUP_TIMEOUT, processes)
        wait_until("Prometheus ready", lambda: _status(f"{prometheus_url}/-/ready") == 200,
                   STARTUP_TIMEOUT, processes)

        s = Stack(exporter_url, prometheus_url, alertmanager_url, webhook, processes,
                  exporter_instance=f"127.0.0.1:{ports['exporter']}", dsn=dsn)
        s.timeline["ready"] = time.monotonic() - started
        wait_until("Prometheus' first scrape of the exporter",
                   lambda: s.query(f'up{{job="{JOB}"}} == 1') and s.query(f'venzory_db_up{{job="{JOB}"}}'),
                   STARTUP_TIMEOUT, processes)
        s.first_scrape_at = time.monotonic()
        s.timeline["first scrape"] = s.first_scrape_at - started

        # Prisma error events. The event series must have been scraped before (at 0) for
        # increase() to see the errors, as in production where the exporter runs for long.
        status, body = _post_events(exporter_url)
        assert status == 200, (status, body)
        s.events_answer = json.loads(body)
        s.timeline["events posted"] = time.monotonic() - started
        yield s
    finally:
        for p in reversed(processes):
            p.stop()
        webhook.close()


def _status(url: str) -> int | None:
    try:
        return http(url, timeout=2)[0]
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


def _post_events(exporter_url: str) -> tuple[int, bytes]:
    lines = [P2002_EVENT] * POSTED_ERRORS + [INFO_EVENT]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return http(f"{exporter_url}/events", data=body, timeout=10,
                headers={"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {EVENTS_TOKEN}"})


# -- the alerts --------------------------------------------------------------------------------


def _rule_alert_names() -> set[str]:
    names = set()
    for path in RULES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            names |= {r["alert"] for r in group["rules"] if "alert" in r}
    return names


def test_every_alert_has_a_verdict():
    """Each alert of the rules is either expected on this data or never expected."""
    expected = DATA_ALERTS | EVENT_ALERTS
    assert not expected & NEVER_ALERTS
    assert expected | NEVER_ALERTS == _rule_alert_names(), (
        sorted(_rule_alert_names() - expected - NEVER_ALERTS), sorted((expected | NEVER_ALERTS) - _rule_alert_names()))


def test_shortened_for():
    assert [shortened_for(d) for d in ("2m", "5m", "10m", "15m", "1h")] == ["2s", "5s", "10s", "15s", "15s"]


def test_problem_data_pages_negative_inventory_and_nothing_unexpected_fires(stack: Stack):
    expected = DATA_ALERTS | EVENT_ALERTS
    # the exporter counted the posted events ...
    assert stack.events_answer == {"accepted": POSTED_ERRORS, "ignored": 1, "rejected": 0,
                                   "rejected_by_reason": {}}, stack.events_answer
    # ... and Prometheus has them, classified (the errors land in a series created at 0)
    errors = (f'venzory_db_prisma_errors_total{{job="{JOB}", database="{DATABASE}", code="P2002", '
              f'kind="unique", constraint="Item_practiceId_name_key", model="Item"}}')
    wait_until("the posted errors in Prometheus",
               lambda: [r["value"][1] for r in stack.query(errors)] == [str(POSTED_ERRORS)],
               QUERY_TIMEOUT, stack.processes)
    assert [r["value"][1] for r in stack.query('venzory_db_events_received_total{source="http"}')] == ["4"]
    assert [r["value"][1] for r in stack.query('venzory_db_events_ignored_total{source="http"}')] == ["1"]

    def done():
        firing = stack.webhook.firing_names()
        unexpected = firing & NEVER_ALERTS
        return unexpected or (expected <= firing)

    wait_until(f"the alerts {sorted(expected)} at the webhook "
               f"(so far: {sorted(stack.webhook.firing_names())})",
               done, ALERTS_TIMEOUT, stack.processes, interval=0.5)
    stack.timeline["expected alerts received"] = time.monotonic() - stack.first_scrape_at
    time.sleep(GRACE)  # room for an alert that should not fire to show up too

    received = stack.webhook.alerts()
    firing = [(receiver, labels) for receiver, status, labels in received if status == "firing"]
    names = {labels["alertname"] for _, labels in firing}
    prometheus_firing = {a["labels"]["alertname"] for a in _prometheus_alerts(stack) if a["state"] == "firing"}
    context = (f"received: {sorted(names)}\nPrometheus firing: {sorted(prometheus_firing)}\n"
               + "\n".join(p.tail(15) for p in stack.processes))

    # the page under test
    negative = [(receiver, labels) for receiver, labels in firing
                if labels["alertname"] == "VenzoryDbNegativeInventory"]
    assert negative, context
    for receiver, labels in negative:
        assert labels["severity"] == "critical" and labels["database"] == DATABASE, labels
        assert labels["job"] == JOB and labels["instance"] == stack.exporter_instance, labels
        assert labels["category"] == "negative_inventory", labels
        assert labels["check"] == "location_inventory_negative_quantity" and labels["table"] == "LocationInventory"
        assert receiver == "pager", (receiver, labels)

    # exactly what this data raises, each to its severity's receiver, nothing else
    assert not names & NEVER_ALERTS, context
    assert names <= expected, f"unexpected: {sorted(names - expected)}\n{context}"
    assert names == expected, f"missing: {sorted(expected - names)}\n{context}"
    assert not prometheus_firing & NEVER_ALERTS, context
    for receiver, labels in firing:
        assert receiver == SEVERITY_RECEIVER[labels["severity"]], (receiver, labels)
        assert labels.get("database") == DATABASE, labels
    resolved = [labels["alertname"] for _, status, labels in received if status == "resolved"]
    assert not resolved, f"alerts resolved during the run (flapping): {resolved}"

    # nothing is down: no inhibit rule may suppress anything
    status, body = http(f"{stack.alertmanager}/api/v2/alerts")
    assert status == 200
    states = {(a["labels"]["alertname"], a["status"]["state"]) for a in json.loads(body)}
    assert {state for _, state in states} == {"active"}, states
    print(f"timeline (s): {stack.timeline}; fired: {sorted(names)}")  # shown with -rP / -s


def _prometheus_alerts(stack: Stack) -> list[dict]:
    status, body = http(f"{stack.prometheus}/api/v1/alerts")
    assert status == 200
    return json.loads(body)["data"]["alerts"]


# -- the dashboard -------------------------------------------------------------------------------


def _panel_titles() -> dict[str, str]:
    """Query (as dashboard_queries() returns it) -> the title of the panel it is from."""
    titles = {}
    queries = dashboard_queries()
    dashboard = load_dashboard()
    variables = [v for v in dashboard["templating"]["list"] if v["type"] == "query"]
    for v, q in zip(variables, queries):
        titles[q] = f"variable ${v['name']}"
    for p, t in iter_targets(dashboard):
        # the same substitution as dashboard_queries(), one target at a time
        expr = t["expr"]
        for v in variables:
            expr = expr.replace("${" + v["name"] + "}", ".*").replace("$" + v["name"], ".*")
        expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$__range", "1h")
        titles.setdefault(expr, f"{p['title']} / {t['refId']}")
    return titles


QUERIES = dashboard_queries()
TITLES = _panel_titles()


@pytest.mark.parametrize("query", QUERIES, ids=[re.sub(r"\W+", "_", TITLES.get(q, q))[:60] for q in QUERIES])
def test_dashboard_query_returns_data(stack: Stack, query: str):
    """Every panel has data (the error panels thanks to the posted events); a typo in a
    metric or label name would leave its panel empty."""
    result = []
    deadline = time.monotonic() + QUERY_TIMEOUT
    while time.monotonic() < deadline:
        result = stack.query(query)
        if result:
            break
        time.sleep(0.5)
    assert result, f"panel {TITLES.get(query)!r} is empty: {query}"


# -- emergencies in a real Prometheus (last: they change the database under the stack) -----------

# From a change to a firing alert: the change's statistics reach pg_stat_user_tables, the
# exporter polls (the first poll may have started just before the change: two polls),
# Prometheus scrapes and evaluates (the emergency alerts have no `for`).
WITHIN_TWO_POLLS = 2 * parse_duration(POLL_INTERVAL) + parse_duration(SCRAPE_INTERVAL) \
    + parse_duration(EVALUATION_INTERVAL) + 4.0  # slack: statistics flush, a loaded machine


def _firing(stack: Stack, alertname: str, **labels: str) -> list[dict]:
    return [a for a in _prometheus_alerts(stack) if a["state"] == "firing" and a["labels"]["alertname"] == alertname
            and all(a["labels"].get(k) == v for k, v in labels.items())]


def test_a_mass_delete_fires_within_two_polls(stack: Stack):
    with psycopg.connect(stack.dsn, autocommit=True) as conn:
        # No autoanalyze racing the DELETE with a stale count (see tests/test_emergencies.py fill).
        conn.execute('ALTER TABLE "Practice" SET (autovacuum_enabled = false)')
        conn.execute('INSERT INTO "Practice" (id, name, slug, "updatedAt") '
                     "SELECT 'e2e-' || g, 'E2E ' || g, 'e2e-' || g, now() FROM generate_series(1, 500) g")
    time.sleep(2 * parse_duration(POLL_INTERVAL) + 1)  # polls that count the rows: the baseline
    started = time.monotonic()
    with psycopg.connect(stack.dsn, autocommit=True) as conn:
        conn.execute("""DELETE FROM "Practice" WHERE id LIKE 'e2e-%'""")
    (alert,) = wait_until("VenzoryDbMassDelete on Practice", lambda: _firing(stack, "VenzoryDbMassDelete", table="Practice"),
                          ALERTS_TIMEOUT, stack.processes)
    elapsed = time.monotonic() - started
    print(f"mass delete -> firing in {elapsed:.1f}s (bound {WITHIN_TWO_POLLS:.0f}s)")
    assert elapsed <= WITHIN_TWO_POLLS, elapsed
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["database"] == DATABASE
    assert float(alert["value"]) >= 500


def test_hand_written_ddl_fires_with_the_time_it_appeared(stack: Stack):
    """Drift must be seen on two polls in a row (one poll's drift may be a deploy caught
    half-way): one poll more than the other emergencies."""
    started, wall = time.monotonic(), time.time()
    with psycopg.connect(stack.dsn, autocommit=True) as conn:
        conn.execute('ALTER TABLE "Item" ADD COLUMN "hotfix" integer')
    alerts = wait_until("VenzoryDbSchemaChangedWithoutMigration on Item.hotfix",
                        lambda: _firing(stack, "VenzoryDbSchemaChangedWithoutMigration", object="Item.hotfix"),
                        ALERTS_TIMEOUT, stack.processes)
    elapsed = time.monotonic() - started
    bound = WITHIN_TWO_POLLS + parse_duration(POLL_INTERVAL)
    print(f"ALTER TABLE -> firing in {elapsed:.1f}s (bound {bound:.0f}s)")
    assert elapsed <= bound, elapsed
    for alert in alerts:  # against the migrations' expected schema and against schema.prisma
        assert alert["labels"]["severity"] == "warning" and alert["labels"]["kind"]
        assert wall - 1 <= float(alert["value"]) <= wall + bound  # when the exporter first saw it


def test_a_migrate_reset_fires_within_two_polls(stack: Stack):
    started = time.monotonic()
    with psycopg.connect(stack.dsn, autocommit=True) as conn:  # what `prisma migrate reset` does
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
        apply_migrations(conn, MIGRATIONS, upto=STEP_6)
    (alert,) = wait_until("VenzoryDbMigrationHistoryRewritten",
                          lambda: _firing(stack, "VenzoryDbMigrationHistoryRewritten"), ALERTS_TIMEOUT, stack.processes)
    elapsed = time.monotonic() - started
    print(f"migrate reset -> firing in {elapsed:.1f}s (bound {WITHIN_TWO_POLLS:.0f}s)")
    assert elapsed <= WITHIN_TWO_POLLS, elapsed
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["database"] == DATABASE
