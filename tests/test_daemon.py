"""The daemon end to end: real HTTP, real PostgreSQL, real process signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psycopg
import pytest

from exporter.config import load_config
from exporter.daemon import Daemon
from exporter.db import APPLICATION_NAME, Database
from exporter.pgcluster import start_cluster
from exporter.poll import Poller
from support import CONTRACT_METRICS, get, samples, wait_for
from venzory_fixture import PROBLEM_DUPLICATES, PROBLEM_VIOLATIONS, SHIPPED_CONFIG

pytestmark = pytest.mark.db  # starts PostgreSQL clusters of its own


def test_metrics_readiness_and_health(problems_dsn):
    config = load_config(SHIPPED_CONFIG, env={"DATABASE_URL": problems_dsn})
    daemon = Daemon(config, "127.0.0.1:0")
    daemon.server.start()
    base = f"http://127.0.0.1:{daemon.server.port}"
    try:
        assert get(base + "/readyz")[0] == 503  # no poll has completed yet
        assert get(base + "/healthz") == (200, "ok\n")
        daemon.scheduler.start()
        wait_for(lambda: get(base + "/readyz")[0] == 200)
        status, text = get(base + "/metrics")
        assert status == 200
        found = samples(text)
        assert found[("venzory_db_up", ("database", "venzory"))] == 1
        assert found[("venzory_db_exporter_build_info", ("version", "0.1.0"))] == 1
        key = ("venzory_db_check_violations", ("category", "negative_inventory"),
               ("check", "location_inventory_negative_quantity"), ("database", "venzory"),
               ("severity", "critical"), ("table", "LocationInventory"))
        assert found[key] == PROBLEM_VIOLATIONS["location_inventory_negative_quantity"]
        violations = {
            dict(k[1:])["check"]: v for k, v in found.items() if k[0] == "venzory_db_check_violations"
        }
        assert violations == PROBLEM_VIOLATIONS | {n: rows for n, (groups, rows) in PROBLEM_DUPLICATES.items()}
        groups = {dict(k[1:])["check"]: v for k, v in found.items() if k[0] == "venzory_db_duplicate_groups"}
        assert groups == {n: g for n, (g, rows) in PROBLEM_DUPLICATES.items()}
        assert all(v == 1 for k, v in found.items() if k[0] == "venzory_db_check_success")
        present = {dict(k[1:])["constraint"]: v for k, v in found.items() if k[0] == "venzory_db_constraint_present"}
        assert present["check_quantity_non_negative"] == 0 and present["PracticeUser_practiceId_userId_key"] == 1
        assert ("venzory_db_polls_skipped_total", ("database", "venzory")) in found
        assert not any(name.endswith("_created") for name, *_ in found)
        served = {name for name, *_ in found if name.startswith("venzory_db_")}
        assert served - CONTRACT_METRICS == set(), "every metric served is declared (and so documented)"
        assert get(base + "/nope")[0] == 404

        # Prisma error events: a CHECK violation as Prisma 7 really reports it (P2039).
        event = (b'{"level":50,"err":{"type":"PrismaClientKnownRequestError","code":"P2039","message":"\\nInvalid '
                 b'`prisma.locationInventory.update()` invocation:\\n\\nnew row for relation \\"LocationInventory\\" '
                 b'violates check constraint \\"check_quantity_non_negative\\"","meta":{"modelName":"LocationInventory"}}}\n'
                 b'{"level":30,"msg":"GET /api/items 200"}\n')
        request = urllib.request.Request(base + "/events", data=event, method="POST",
                                         headers={"Content-Type": "application/x-ndjson"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        found = samples(get(base + "/metrics")[1])
        key = ("venzory_db_prisma_errors_total", ("code", "P2039"), ("constraint", "check_quantity_non_negative"),
               ("database", "venzory"), ("kind", "check"), ("model", "LocationInventory"))
        assert found[key] == 1
        assert found[("venzory_db_events_ignored_total", ("source", "http"))] == 1
    finally:
        daemon.stop()


def test_sessions_are_read_only_named_and_bounded(problems_dsn):
    config = load_config(SHIPPED_CONFIG, env={"DATABASE_URL": problems_dsn}).databases[0]
    database = Database(config)
    try:
        with database.connection() as conn:
            settings = dict(conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('default_transaction_read_only', 'statement_timeout', 'lock_timeout', 'application_name')"
            ).fetchall())
            assert settings == {
                "application_name": APPLICATION_NAME, "default_transaction_read_only": "on",
                "statement_timeout": "30000", "lock_timeout": "1000",
            }
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute('DELETE FROM "LocationInventory"')
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute('CREATE TABLE exporter_was_here (id int)')
    finally:
        database.close()


def test_database_going_away_and_coming_back(pg_server):
    cluster = start_cluster()
    try:
        dsn = cluster.create_database("flaky")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute('CREATE TABLE "LocationInventory" ("locationId" text, "itemId" text, quantity int NOT NULL)')
            conn.execute("""INSERT INTO "LocationInventory" VALUES ('l', 'i', -1)""")
            conn.execute("CHECKPOINT")  # the test cluster runs with fsync off
        config = load_config(SHIPPED_CONFIG, env={"DATABASE_URL": dsn})
        poller = Poller(config, config.databases[0])
        first = poller.poll(full_scan=True)
        assert first.up
        assert {c.check.name: c.violations for c in first.checks}["location_inventory_negative_quantity"] == 1
        cluster.stop("immediate")
        down = poller.poll(full_scan=True)
        assert (down.up, down.checks) == (False, ())
        assert down.error
        cluster.start()
        back = poller.poll(full_scan=True)  # same poller, same pool: no restart
        assert back.up, back.error
        assert {c.check.name: c.violations for c in back.checks}["location_inventory_negative_quantity"] == 1
        poller.close()
    finally:
        cluster.destroy()


def test_sigterm_stops_the_daemon_quickly(problems_dsn, tmp_path):
    env = dict(os.environ, DATABASE_URL=problems_dsn)
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "run", "--config", str(SHIPPED_CONFIG), "--listen", "127.0.0.1:0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: "listening on port" in (proc.stderr.readline() or ""), timeout=30)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 5
    finally:
        proc.kill()


def test_run_on_a_port_in_use_says_so_and_exits_2(problems_dsn):
    # issue 14, item 9: it died with a traceback
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "exporter", "run", "--config", str(SHIPPED_CONFIG), "--listen", f"127.0.0.1:{port}"],
            env=dict(os.environ, DATABASE_URL=problems_dsn), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_head_keep_alive_and_no_version_banner(problems_dsn):
    # issue 14, item 2: HEAD /metrics was 405, the server spoke HTTP/1.0 and named its version
    import http.client

    config = load_config(SHIPPED_CONFIG, env={"DATABASE_URL": problems_dsn})
    daemon = Daemon(config, "127.0.0.1:0")
    daemon.server.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", daemon.server.port, timeout=10)
        connection.request("GET", "/metrics")
        got = connection.getresponse()
        body = got.read()
        assert got.status == 200 and got.version == 11 and not got.will_close  # HTTP/1.1, kept alive
        server_header = got.getheader("Server")
        connection.request("HEAD", "/metrics")  # the same connection
        head = connection.getresponse()
        assert head.status == 200 and head.read() == b""
        assert int(head.getheader("Content-Length")) > 0 and body
        assert server_header == "venzory-db-exporter" and "/" not in server_header  # no version
        connection.close()
    finally:
        daemon.server.stop()
