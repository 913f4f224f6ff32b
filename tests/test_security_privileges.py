"""Least privilege: deploy/sql/monitoring-role.sql creates a role that can run every
check and nothing more, and a role that could write is reported (log, metric, verify)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from exporter.config import Config
from exporter.pgcluster import NoPostgresBinaries, find_bindir
from exporter.poll import Poller
from support import exposition
from venzory_fixture import SHIPPED_CONFIG

pytestmark = pytest.mark.db  # starts PostgreSQL clusters of its own

ROLE_SQL = Path(__file__).resolve().parent.parent / "deploy" / "sql" / "monitoring-role.sql"
MONITOR_PASSWORD = "monitor-pw-for-tests"


def psql() -> str:
    found = shutil.which("psql")  # Debian's wrapper, or the server's own next to initdb
    if not found:
        try:
            found = str((find_bindir() / "initdb").resolve().parent / "psql")
        except NoPostgresBinaries:
            pytest.skip("psql not installed")
    return found


def apply_role_sql(dsn: str, **variables: str) -> None:
    args = [psql(), dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"monitor_password={MONITOR_PASSWORD}"]
    for name, value in variables.items():
        args += ["-v", f"{name}={value}"]
    result = subprocess.run([*args, "-f", str(ROLE_SQL)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def as_monitor(dsn: str) -> str:
    return make_conninfo(dsn, user="venzory_monitor", password=MONITOR_PASSWORD)


@pytest.fixture(scope="module")
def monitor_dsn(clean_dsn) -> str:
    apply_role_sql(clean_dsn)
    apply_role_sql(clean_dsn)  # idempotent: a second run changes nothing and fails on nothing
    return as_monitor(clean_dsn)


@pytest.fixture
def scratch(pg_server, request) -> str:
    """A database of its own: these tests change grants and tables."""
    return pg_server.create_database(f"priv_{request.node.name}")


def verify(dsn: str, *args: str, config: Path = SHIPPED_CONFIG) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "verify", "--config", str(config), *args],
                          env={**os.environ, "DATABASE_URL": dsn}, capture_output=True, text=True, timeout=120)


def test_the_monitoring_role_is_enough_for_every_check(monitor_dsn):
    result = verify(monitor_dsn, "--json", "--full-scan")
    assert result.returncode == 0, result.stdout + result.stderr
    (database,) = json.loads(result.stdout)["databases"]
    assert database["up"] and all(c["status"] == "ok" for c in database["checks"])
    assert all(c["present"] and c["valid"] for c in database["constraints"])
    assert database["privileges"] == {"role": "venzory_monitor", "can_write": False, "superuser": False,
                                      "create_on_schema": False, "writable_tables": []}
    text = verify(monitor_dsn)
    assert text.returncode == 0
    assert "Privileges: ✔ role venzory_monitor can only read" in text.stdout


def test_the_monitoring_role_can_do_nothing_else(monitor_dsn):
    with psycopg.connect(monitor_dsn, autocommit=True) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
        conn.execute("SET default_transaction_read_only = off")  # a session may switch it off...
        for statement in ('INSERT INTO "Practice" (id, name) VALUES (\'x\', \'x\')', 'DELETE FROM "Item"',
                          'TRUNCATE "Item"', 'CREATE TABLE public.mine (id int)'):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):  # ...the grants still refuse it
                conn.execute(statement)
        memberships = conn.execute(
            "SELECT array_agg(b.rolname::text) FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid "
            "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = current_user").fetchone()[0]
        assert memberships is None  # no pg_monitor, pg_read_all_stats, pg_read_all_settings


def test_tables_created_later_by_the_app_owner_are_readable(scratch):
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS venzory_app_owner")
        conn.execute("CREATE ROLE venzory_app_owner")
        conn.execute("GRANT CREATE, USAGE ON SCHEMA public TO venzory_app_owner")
    apply_role_sql(scratch, app_owner="venzory_app_owner")
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute("SET ROLE venzory_app_owner")  # a later migration, as the app's role
        conn.execute('CREATE TABLE "NewTable" (id int)')
        conn.execute('INSERT INTO "NewTable" VALUES (1)')
    with psycopg.connect(as_monitor(scratch), autocommit=True) as conn:
        assert conn.execute('SELECT count(*) FROM "NewTable"').fetchone()[0] == 1


def poll_once(dsn: str) -> tuple:
    config = Config.model_validate({"databases": [{"name": "scratch", "dsn": dsn}]})
    with Poller(config, config.databases[0]) as poller:
        return poller, poller.poll()


def can_write_metric(result) -> str:
    return next(line for line in exposition(result).splitlines()
                if line.startswith("venzory_db_role_can_write{"))


def test_a_role_that_can_write_is_reported_not_failed(scratch, caplog, tmp_path):
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute('CREATE TABLE "Item" (id int)')
        conn.execute('CREATE TABLE "Order" (id int)')
        conn.execute("DROP ROLE IF EXISTS venzory_sloppy")
        conn.execute("CREATE ROLE venzory_sloppy LOGIN")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO venzory_sloppy")
        conn.execute('GRANT UPDATE ("id") ON "Order" TO venzory_sloppy')  # a column grant writes too
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    sloppy = make_conninfo(scratch, user="venzory_sloppy")

    caplog.set_level(logging.INFO, logger="exporter.privileges")
    poller, result = poll_once(sloppy)
    assert result.privileges.as_dict() == {"role": "venzory_sloppy", "can_write": True, "superuser": False,
                                           "create_on_schema": False, "writable_tables": ["Order"]}
    assert can_write_metric(result) == 'venzory_db_role_can_write{database="scratch"} 1.0'
    assert "role venzory_sloppy may write to 1 tables (Order)" in caplog.text
    caplog.clear()
    poller.poll()  # the same privileges: not logged again every poll
    assert "may write" not in caplog.text

    config = tmp_path / "config.yaml"
    config.write_text("databases:\n  - name: scratch\n    dsn: ${DATABASE_URL}\n")
    text = verify(sloppy, config=config)
    assert text.returncode == 0, text.stdout + text.stderr  # a warning, not a failure
    assert "Privileges: ⚠ role venzory_sloppy may write to 1 tables (Order)" in text.stdout
    report = json.loads(verify(sloppy, "--json", config=config).stdout)
    assert report["ok"] is True and report["databases"][0]["privileges"]["writable_tables"] == ["Order"]

    # a superuser, and a role with CREATE on the schema
    _, result = poll_once(scratch)
    assert result.privileges.superuser and result.privileges.can_write
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute('REVOKE UPDATE ("id") ON "Order" FROM venzory_sloppy')
        conn.execute("GRANT CREATE ON SCHEMA public TO venzory_sloppy")
    _, result = poll_once(sloppy)
    assert (result.privileges.create_on_schema, result.privileges.writable_tables) == (True, ())
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM venzory_sloppy")
    _, result = poll_once(sloppy)
    assert not result.privileges.can_write
    assert can_write_metric(result) == 'venzory_db_role_can_write{database="scratch"} 0.0'


def test_the_lock_watch_works_without_pg_read_all_stats(scratch):
    """pg_stat_activity shows other roles' sessions with their pid (query and state are
    hidden), and pg_blocking_pids() needs no privilege: the monitoring role still sees a
    superuser's migration waiting on its scan, and gives way."""
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute("CREATE TABLE stock (id int, quantity int)")
        conn.execute("INSERT INTO stock SELECT g, g FROM generate_series(1, 2000) g")
    apply_role_sql(scratch)
    config = Config.model_validate({
        "databases": [{"name": "main", "dsn": as_monitor(scratch), "yield_to_locks_after": 1.0,
                       "statement_timeout": "60s"}],
        "checks": [{"name": "slow_scan", "kind": "row", "table": "stock", "category": "test", "severity": "warning",
                    "rule": "pg_sleep(0.005) IS NOT NULL AND quantity >= 0"}],
    })
    poller = Poller(config, config.databases[0])
    results = {}
    poll = threading.Thread(target=lambda: results.setdefault("poll", poller.poll(full_scan=True)))
    poll.start()
    time.sleep(1.0)
    started = time.monotonic()
    with psycopg.connect(scratch, autocommit=True) as conn:  # the superuser's migration
        conn.execute("ALTER TABLE stock ADD CONSTRAINT check_quantity CHECK (quantity >= 0)")
    waited = time.monotonic() - started
    poll.join(timeout=30)
    poller.close()
    check = results["poll"].checks[0]
    assert waited < 2.5, f"the migration waited {waited:.1f}s behind the monitoring role's scan"
    assert (check.status, check.reason) == ("failed", "yielded_to_lock")


def test_a_check_failure_and_each_change_of_status_is_logged_once_with_its_reason(scratch, caplog):
    # issue 14, item 8: SELECT revoked on a table -> its check fails with "permission denied"
    # in verify; the daemon's log must say so too, once, and say when it recovers.
    from exporter.poll import Poller

    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute('CREATE TABLE stock (id int, quantity int); INSERT INTO stock VALUES (1, -1)')
        conn.execute("DROP ROLE IF EXISTS venzory_reader; CREATE ROLE venzory_reader LOGIN PASSWORD 'reader-pw-1'")
        conn.execute("GRANT SELECT ON stock TO venzory_reader")
    config = Config.model_validate({
        "databases": [{"name": "main", "dsn": make_conninfo(scratch, user="venzory_reader", password="reader-pw-1")}],
        "checks": [{"name": "negative_stock", "kind": "row", "table": "stock", "category": "test",
                    "severity": "warning", "rule": "quantity >= 0"}],
    })
    poller = Poller(config, config.databases[0])

    def poll_and_log() -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="exporter.poll"):
            poller.poll(full_scan=True)
        return [f"{r.levelname} {r.getMessage()}" for r in caplog.records if r.levelno >= logging.INFO]

    try:
        assert poll_and_log() == ["INFO check negative_stock on main: unknown -> violated (1 rows)"]
        assert poll_and_log() == []  # unchanged: not logged again
        with psycopg.connect(scratch, autocommit=True) as conn:
            conn.execute("REVOKE SELECT ON stock FROM venzory_reader")
        [failed] = poll_and_log()
        assert failed.startswith("WARNING check negative_stock on main failed (sql_error): permission denied")
        assert poll_and_log() == []  # still failing for the same reason: logged once
        with psycopg.connect(scratch, autocommit=True) as conn:
            conn.execute("GRANT SELECT ON stock TO venzory_reader; UPDATE stock SET quantity = 1")
        assert poll_and_log() == ["INFO check negative_stock on main: failed -> ok (0 rows)"]
    finally:
        poller.close()
