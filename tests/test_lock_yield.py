"""The exporter never holds up a migration: a scan that a DDL statement waits on gives
way within `yield_to_locks_after` and is retried on the next poll."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from exporter.config import Config
from exporter.poll import Poller

PATIENCE = 1.0


@pytest.fixture
def slow_table_dsn(pg_server, request):
    dsn = pg_server.create_database(f"lock_{request.node.name}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE stock (id int, quantity int)")
        conn.execute("INSERT INTO stock SELECT g, g FROM generate_series(1, 2000) g")
    return dsn


def slow_poller(dsn: str) -> Poller:
    # 2,000 rows x 5 ms: a 10 s scan, long enough to be in the way of any migration.
    config = Config.model_validate({
        "databases": [{"name": "main", "dsn": dsn, "yield_to_locks_after": PATIENCE, "statement_timeout": "60s"}],
        "checks": [{"name": "slow_scan", "kind": "row", "table": "stock", "category": "test", "severity": "warning",
                    "rule": "pg_sleep(0.005) IS NOT NULL AND quantity >= 0"}],
    })
    return Poller(config, config.databases[0])


def migrate_while_polling(dsn: str, migration: str):
    poller = slow_poller(dsn)
    results = {}
    poll = threading.Thread(target=lambda: results.setdefault("poll", poller.poll(full_scan=True)))
    poll.start()
    time.sleep(1.0)  # the scan is running and holds its ACCESS SHARE lock
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(migration)
    migration_seconds = time.monotonic() - started
    poll.join(timeout=30)
    poller.close()
    return migration_seconds, results["poll"].checks[0]


@pytest.mark.parametrize("migration", [
    "ALTER TABLE stock ADD CONSTRAINT check_quantity_non_negative CHECK (quantity >= 0)",
    # prisma migrate deploy sends a migration.sql as one multi-statement script
    "ALTER TABLE stock ADD COLUMN note text; ALTER TABLE stock ADD CONSTRAINT stock_id_key UNIQUE (id);",
], ids=["add_constraint", "multi_statement"])
def test_a_blocking_scan_gives_way_to_the_migration(slow_table_dsn, migration):
    seconds, check = migrate_while_polling(slow_table_dsn, migration)
    assert seconds < PATIENCE + 1.5, f"the migration waited {seconds:.1f}s behind the exporter"
    assert (check.status, check.reason) == ("failed", "yielded_to_lock")
    assert "retried on the next poll" in check.error


def test_create_index_is_not_blocked_and_the_scan_is_not_cancelled(slow_table_dsn):
    # CREATE INDEX takes a SHARE lock, which does not conflict with a scan: nobody waits,
    # so nothing is cancelled.
    seconds, check = migrate_while_polling(slow_table_dsn, "CREATE INDEX stock_quantity_idx ON stock (quantity)")
    assert seconds < 2
    assert (check.status, check.violations) == ("ok", 0)


def test_next_poll_after_the_migration_succeeds(slow_table_dsn):
    migrate_while_polling(slow_table_dsn, "ALTER TABLE stock ADD CONSTRAINT c CHECK (quantity >= 0)")
    with psycopg.connect(slow_table_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM stock WHERE id > 10")
    with slow_poller(slow_table_dsn) as poller:
        check = poller.poll(full_scan=True).checks[0]
    assert (check.status, check.violations) == ("ok", 0)


# -- a migration holding its lock while we poll (issue 14, item 1) -----------------------------


@pytest.fixture(scope="module")
def migrating_dsn(pg_server):
    from venzory_fixture import build_database

    return build_database(pg_server, "lock_migrating", seed="problems")


@pytest.mark.parametrize("statement", [
    'ALTER TABLE "Order" ADD COLUMN note2 text',  # the reproduction: ACCESS EXCLUSIVE, held
    'LOCK TABLE "Order" IN ACCESS EXCLUSIVE MODE',
])
def test_a_poll_during_a_migration_reports_up_and_only_the_locked_tables_checks(migrating_dsn, statement):
    from exporter.config import load_config
    from venzory_fixture import SHIPPED_CONFIG

    config = load_config(SHIPPED_CONFIG, env={"DATABASE_URL": migrating_dsn})
    before = Poller(config, config.databases[0])
    try:
        unlocked = before.poll(full_scan=True)
    finally:
        before.close()
    migration = psycopg.connect(migrating_dsn)  # BEGIN; ALTER ...; (held open, as by a slow migration)
    try:
        migration.execute(statement)
        poller = Poller(config, config.databases[0])
        started = time.monotonic()
        try:
            result = poller.poll(full_scan=True)
        finally:
            poller.close()
        seconds = time.monotonic() - started
    finally:
        migration.rollback()
        migration.close()
    assert result.up and result.down_reason is None, result.error
    assert result.schema.locked == {"Order"}
    reads_order = {c.check.name for c in result.checks
                   if "Order" in (c.check.table, getattr(getattr(c.check, "references", None), "table", None))}
    assert reads_order, "the shipped config has checks on Order"
    for check in result.checks:
        if check.check.name in reads_order:
            assert (check.status, check.reason) == ("failed", "lock_timeout"), check
            assert "locked by another session" in check.error
    others = {c.check.name: (c.status, c.violations) for c in result.checks if c.check.name not in reads_order}
    expected = {c.check.name: (c.status, c.violations) for c in unlocked.checks if c.check.name not in reads_order}
    assert others == expected  # every other check counted as without the migration
    # No false drift or missing constraint from what the lock kept us from reading.
    assert [c for c in result.constraints if c.is_problem] == [c for c in unlocked.constraints if c.is_problem]
    if result.migrations is not None:
        assert result.migrations.drift == unlocked.migrations.drift
    # The locked table was never waited on: no lock_timeout (1 s) spent on it.
    assert seconds < 1.0 + unlocked.duration, f"the poll took {seconds:.1f}s during the migration"
