"""The watch after a deploy (issue 13, part 3) on a real PostgreSQL under pgbench load: a
deploy adds a constraint to a table that is being written, and the mean execution time of
the statements writing to it, before versus after (pg_stat_statements), moves. Without
the extension, or without the right to read other roles' statements: an `unavailable`
reason, never an error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest
import yaml

from exporter.config import load_config
from exporter.metrics.render import families_for
from exporter.migrations.replay import apply_migrations
from exporter.poll import Poller
from exporter.watch.deploy import Unavailable, tables_of
from test_backups import tool
from test_security_privileges import apply_role_sql, as_monitor

CREATE = """CREATE TABLE "Stock" ("id" INTEGER NOT NULL, "quantity" INTEGER NOT NULL, CONSTRAINT "Stock_pkey" PRIMARY KEY ("id"));
CREATE TABLE "Audit" ("id" SERIAL PRIMARY KEY, "note" TEXT);
INSERT INTO "Stock" SELECT g, 100 FROM generate_series(1, 1000) g;
"""
# The deploy: a CHECK constraint whose function is slow, on the table pgbench writes.
ADD_CONSTRAINT = """CREATE FUNCTION stock_quantity_ok(q integer) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM pg_sleep(0.002); RETURN q >= 0; END $$;
ALTER TABLE "Stock" ADD CONSTRAINT "check_quantity_ok" CHECK (stock_quantity_ok("quantity"));
"""
WORKLOAD = """\\set id random(1, 1000)
UPDATE "Stock" SET "quantity" = "quantity" + 1 WHERE "id" = :id;
"""
LOAD_SECONDS = "3"


def migrations(folder: Path) -> Path:
    for name, sql in (("20260101000000_create", CREATE), ("20260102000000_add_check", ADD_CONSTRAINT)):
        (folder / name).mkdir(parents=True)
        (folder / name / "migration.sql").write_text(sql, encoding="utf-8")
    return folder


def load(dsn: str, script: Path) -> None:
    done = subprocess.run([tool("pgbench"), "-n", "-c", "2", "-T", LOAD_SECONDS, "-f", str(script), dsn],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def poller_for(tmp_path: Path, dsn: str, folder: Path) -> Poller:
    # Migrations finished more than a second apart are separate deploys here (shipped: 15m).
    config = {"databases": [{"name": "venzory", "dsn": dsn, "migrations": {"dir": str(folder)},
                             "watch": {"deploy": {"batch_window": "1s"}}}],
              "checks": [], "constraints": []}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    loaded = load_config(tmp_path / "c.yaml")
    return Poller(loaded, loaded.databases[0])


def test_tables_of_writes_and_of_ddl():
    assert tables_of('WITH x AS (UPDATE "public"."Stock" SET q = $1 RETURNING 1) SELECT * FROM x', "public",
                     ddl=False) == {"Stock"}
    assert tables_of('INSERT INTO "other"."Stock" VALUES ($1)', "public", ddl=False) == set()
    assert tables_of(ADD_CONSTRAINT, "public", ddl=True) == {"Stock"}
    assert tables_of('CREATE INDEX "i" ON "Audit"("note"); SELECT 1', "public", ddl=True) == {"Audit"}


def test_write_latency_before_and_after_a_deploy_that_adds_a_constraint(pg_server, tmp_path):
    dsn = pg_server.create_database("deploy_watch")
    folder = migrations(tmp_path / "migrations")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        apply_migrations(conn, folder, upto="20260101000000_create")
    script = tmp_path / "workload.sql"
    script.write_text(WORKLOAD)
    poller = poller_for(tmp_path, dsn, folder)
    try:
        load(dsn, script)
        before = poller.poll().deploy  # the last deploy is the first migration; its baseline
        assert before.unavailable is None and before.deploy.name == "20260101000000_create", before
        with psycopg.connect(dsn, autocommit=True) as conn:
            apply_migrations(conn, folder)  # the deploy, while the app keeps writing
        load(dsn, script)
        result = poller.poll()
    finally:
        poller.close()
    d = result.deploy
    assert d.deploy.migrations == ("20260102000000_add_check",) and d.tables == ("Stock",), d
    (stock,) = d.latency
    print(f"Stock writes: before {stock.before.calls} calls, {stock.before.mean_seconds * 1000:.3f} ms; "
          f"after {stock.after.calls} calls, {stock.after.mean_seconds * 1000:.3f} ms")
    assert stock.before.calls > 100 and stock.after.calls > 100
    assert stock.after.mean_seconds >= 2 * stock.before.mean_seconds  # the constraint's cost shows
    assert stock.after.mean_seconds >= 0.002
    s = {(f.name, tuple(sorted(x.labels.items()))): x.value for f in families_for(result) for x in f.samples}
    key = lambda phase: (("database", "venzory"), ("phase", phase), ("table", "Stock"))  # noqa: E731
    assert s[("venzory_db_deploy_write_mean_seconds", key("after"))] == stock.after.mean_seconds
    assert s[("venzory_db_deploy_write_calls", key("before"))] == stock.before.calls
    assert s[("venzory_db_last_deploy_info", (("database", "venzory"), ("migration", "20260102000000_add_check")))] == 1
    assert s[("venzory_db_deploy_baseline_timestamp_seconds", (("database", "venzory"),))] == d.baseline_at


@pytest.mark.parametrize("case", ["extension_missing", "insufficient_privilege"])
def test_unavailable_is_a_reason_not_an_error(pg_server, tmp_path, case):
    dsn = pg_server.create_database(f"deploy_watch_{case}")
    folder = migrations(tmp_path / "migrations")
    with psycopg.connect(dsn, autocommit=True) as conn:
        apply_migrations(conn, folder)
        if case == "insufficient_privilege":
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    if case == "insufficient_privilege":
        apply_role_sql(dsn)
        dsn = as_monitor(dsn)
    poller = poller_for(tmp_path, dsn, folder)
    try:
        result = poller.poll()
    finally:
        poller.close()
    assert result.up and result.deploy.unavailable == Unavailable(case), result.deploy
    assert "Stock" in result.deploy.tables
    s = {(f.name, tuple(sorted(x.labels.items()))): x.value for f in families_for(result) for x in f.samples}
    assert s[("venzory_db_deploy_latency_unavailable", (("database", "venzory"), ("reason", case)))] == 1
    assert not any(name == "venzory_db_deploy_write_mean_seconds" for name, _ in s)
