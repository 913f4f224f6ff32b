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
