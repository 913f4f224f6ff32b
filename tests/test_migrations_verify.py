"""Migrations, drift and the deploy prediction through the user's entry points: `verify` (text and
JSON, exit codes) and the metrics, on databases built from the project's fixture."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import psycopg
import pytest

from exporter.config import load_config
import support
from support import exposition, poll_once
from venzory_fixture import (
    MIGRATIONS, SCHEMA_PRISMA, SHIPPED_CONFIG, STEP_7, STEP_10, build_database,
)


def env_for(pg_server, dsn: str, **extra: str) -> dict[str, str]:
    defaults = dict(DATABASE_URL=dsn, PRISMA_MIGRATIONS_DIR=str(MIGRATIONS), PRISMA_SCHEMA=str(SCHEMA_PRISMA),
                    SHADOW_DATABASE_URL=pg_server.admin_dsn)
    return dict(os.environ, **(defaults | extra))


def verify(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "verify", "--config", str(SHIPPED_CONFIG), *args],
                          env=env, capture_output=True, text=True, timeout=180)


def poll(env: dict):
    config = load_config(SHIPPED_CONFIG, env=env)
    return poll_once(config, full_scan=True)


@pytest.fixture
def problems_env(pg_server, problems_dsn):
    return env_for(pg_server, problems_dsn)


@pytest.fixture
def clean_env(pg_server, clean_dsn):
    return env_for(pg_server, clean_dsn)


def test_before_hardening_json(problems_env):
    result = verify(problems_env, "--json")
    assert result.returncode == 1, result.stderr
    (db,) = json.loads(result.stdout)["databases"]
    assert db["migrations"]["states"] == {"applied": 6, "pending": 5, "failed": 0, "rolled_back": 0,
                                          "modified": 0, "missing_from_folder": 0}
    assert [i["state"] for i in db["migrations"]["items"]] == ["pending"] * 5
    # The seed dropped 8 foreign keys "by hand": step 7's first statement drops one of them
    # again, so the real deploy fails right there, before any row is looked at.
    deploy = db["deploy"]
    assert deploy["outcome"] == "fails" and deploy["prisma_status"] == "pending"
    failure = deploy["failure"]
    assert (failure["migration"], failure["number"], failure["line"], failure["sqlstate"]) == (STEP_7, 1, 9, "42704")
    assert failure["reason"] == 'constraint "GoodsReceipt_createdById_fkey" of relation "GoodsReceipt" does not exist'
    assert [m["outcome"] for m in deploy["migrations"]] == ["fails"] + ["not_reached"] * 4
    # Against the applied migrations, the only drift is the 8 foreign keys the seed dropped.
    from_migrations = {(d["kind"], d["object"]) for d in db["drift"] if d["source"] == "migrations"}
    assert from_migrations == {("missing_constraint", f"{t}.{t}_createdById_fkey") for t in
                               ("Order", "GoodsReceipt", "StockAdjustment", "InventoryTransfer", "StockCountSession",
                                "OrderTemplate")} | {("missing_constraint", "Order.Order_supplierId_fkey"),
                                                     ("missing_constraint", "Item.Item_defaultSupplierId_fkey")}
    assert db["migration_errors"] == []


def test_before_hardening_text_names_the_failing_statement(problems_env):
    result = verify(problems_env, "--allow-pending")
    assert result.returncode == 1
    assert (f"deploy will fail at {STEP_7} statement 1 (line 9): constraint \"GoodsReceipt_createdById_fkey\" "
            'of relation "GoodsReceipt" does not exist') in result.stdout
    assert "6 applied, 5 pending" in result.stdout


def test_sanitizing_migration_passes_and_says_what_it_changes(pg_server, tmp_path):
    """The issue's first complaint: UPDATE/DELETE before a constraint in the same migration."""
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, folder)
    dsn = build_database(pg_server, "migv_sanitize", seed="clean")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('UPDATE "LocationInventory" SET "reorderPoint" = 5000 WHERE "reorderPoint" IS NOT NULL')
        conn.execute('UPDATE "StockAdjustment" SET "reason" = \'gone\'')
        n = conn.execute('SELECT count(*) FROM "LocationInventory" WHERE "reorderPoint" > 1000').fetchone()[0]
    (folder / "20251201000000_cap_reorder_point").mkdir()
    (folder / "20251201000000_cap_reorder_point" / "migration.sql").write_text(
        'UPDATE "LocationInventory" SET "reorderPoint" = 1000 WHERE "reorderPoint" > 1000;\n'
        'DELETE FROM "StockAdjustment" WHERE "reason" = \'gone\' AND "quantity" < 0;\n'
        'ALTER TABLE "LocationInventory" ADD CONSTRAINT "check_reorder_cap" CHECK ("reorderPoint" <= 1000);\n')
    result = verify(env_for(pg_server, dsn, PRISMA_MIGRATIONS_DIR=str(folder)), "--allow-pending", "--json")
    (db,) = json.loads(result.stdout)["databases"]
    deploy = db["deploy"]
    assert deploy["outcome"] == "passes", deploy
    (m,) = deploy["migrations"]
    assert m["rows_updated"] == n > 0
    with psycopg.connect(dsn) as conn:
        deleted = conn.execute('SELECT count(*) FROM "StockAdjustment" WHERE "quantity" < 0').fetchone()[0]
    assert m["rows_deleted"] == deleted
    check = m["statements"][2]
    assert (check["lock"], check["rows_scanned"]) == ("ACCESS EXCLUSIVE", 20)
    assert result.returncode == 0, result.stdout


def test_required_column_on_a_table_with_rows_fails_verify(pg_server, tmp_path):
    """The issue's second complaint: a NOT NULL column without default on a non-empty table."""
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, folder)
    dsn = build_database(pg_server, "migv_required", seed="clean")
    (folder / "20251201000000_global_supplier").mkdir()
    (folder / "20251201000000_global_supplier" / "migration.sql").write_text(
        '-- AlterTable\nALTER TABLE "PracticeSupplier" ADD COLUMN "globalRef" TEXT NOT NULL;\n')
    result = verify(env_for(pg_server, dsn, PRISMA_MIGRATIONS_DIR=str(folder)), "--allow-pending")
    assert result.returncode == 1
    assert ('deploy will fail at 20251201000000_global_supplier statement 1 (line 2): column "globalRef" of relation '
            '"PracticeSupplier" contains null values (added NOT NULL without a default to a table of 4 rows), 4 rows'
            in result.stdout), result.stdout


def test_fully_migrated_clean_database_passes(clean_env):
    result = verify(clean_env, "--json")
    assert result.returncode == 0, result.stdout
    (db,) = json.loads(result.stdout)["databases"]
    assert db["migrations"]["states"]["applied"] == 11 and db["migrations"]["items"] == []
    assert db["drift"] == [] and db["deploy"]["migrations"] == [] and db["deploy"]["prisma_status"] == "up_to_date"
    # The expected schema adds its own constraints to the configured ones.
    names = {(c["table"], c["name"]) for c in db["constraints"]}
    assert ("Order", "Order_createdById_fkey") in names and ("Item", "Item_pkey") in names
    assert all(c["present"] and c["valid"] for c in db["constraints"])


def test_pending_is_a_failure_unless_allowed(pg_server):
    dsn = build_database(pg_server, "migv_pending", upto=STEP_10, seed=None)
    env = env_for(pg_server, dsn)
    assert verify(env).returncode == 1
    result = verify(env, "--allow-pending", "--json")
    (db,) = json.loads(result.stdout)["databases"]
    assert db["migrations"]["states"]["pending"] == 1
    # Step 11 formalizes the runbook's known drift: what schema.prisma has and the database
    # lacks is what the pending migration adds - reported as pending, not as drift.
    assert [d for d in db["drift"] if d["source"] == "schema_prisma"] == []
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("tamper, state", [
    ("UPDATE _prisma_migrations SET checksum = repeat('0', 64) WHERE migration_name = '20251105171437_init'", "modified"),
    ("UPDATE _prisma_migrations SET finished_at = NULL, logs = 'boom' WHERE migration_name = '20251116000000_formalize_remaining_drift'", "failed"),
    ("INSERT INTO _prisma_migrations (id, checksum, migration_name, finished_at) VALUES ('x', 'abc', '20251201000000_hotfix', now())", "missing_from_folder"),
])
def test_tampered_history_fails_verify(pg_server, tamper, state):
    dsn = build_database(pg_server, f"migv_{state}", seed=None)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(tamper)
    result = verify(env_for(pg_server, dsn), "--json", "--allow-pending")
    assert result.returncode == 1
    (db,) = json.loads(result.stdout)["databases"]
    assert db["migrations"]["states"][state] == 1
    assert state in {i["state"] for i in db["migrations"]["items"]}


def test_drift_items_and_their_metrics(pg_server):
    dsn = build_database(pg_server, "migv_drift", seed=None)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('DROP INDEX "Order_practiceId_status_createdAt_idx"')  # acknowledged
        conn.execute('ALTER TABLE "Item" ADD COLUMN "legacyCode" text')
    text = exposition(poll(env_for(pg_server, dsn)))

    def value(name, **labels):
        return support.value(text, name, database="venzory", **labels)

    assert value("venzory_db_schema_drift_item", source="migrations", kind="extra_column",
                 object="Item.legacyCode", acknowledged="false") == 1
    assert value("venzory_db_schema_drift_item", source="migrations", kind="missing_index",
                 object="Order_practiceId_status_createdAt_idx", acknowledged="true") == 1
    assert value("venzory_db_schema_drift_items", source="migrations", kind="extra_column", acknowledged="false") == 1
    assert value("venzory_db_schema_drift_items", source="migrations", kind="enum_values", acknowledged="false") == 0
    assert value("venzory_db_migrations", state="applied") == 11
    assert value("venzory_db_migrations", state="failed") == 0
    assert value("venzory_db_migrations_part_success", part="expected_schema") == 1
    assert value("venzory_db_last_migration_finished_timestamp_seconds") > 1.7e9
    served = {name for name, *_ in support.samples(text) if name.startswith("venzory_db_")}
    assert served - support.CONTRACT_METRICS == set(), "every metric served is declared (and so documented)"


def test_unreadable_inputs_are_reported_and_the_rest_still_answers(pg_server, tmp_path):
    dsn = build_database(pg_server, "migv_unreadable", seed="clean")
    half_written = tmp_path / "schema.prisma"
    half_written.write_text("model Item {\n  id String @id\n  name Str")
    # A folder the shadow cache has never seen (same migrations, one comment more), and a
    # shadow server that does not answer.
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, folder)
    init = folder / "20251105171437_init" / "migration.sql"
    init.write_text(init.read_text() + "\n-- copied by a deploy\n")
    env = env_for(pg_server, dsn, PRISMA_SCHEMA=str(half_written), PRISMA_MIGRATIONS_DIR=str(folder),
                  SHADOW_DATABASE_URL="postgresql://nobody@127.0.0.1:1/postgres?connect_timeout=1")
    result = poll(env)
    assert result.up
    errors = dict(result.migrations.errors)
    assert set(errors) == {"expected_schema", "schema_prisma"}
    assert "line 3" in errors["schema_prisma"]
    history = result.migrations.history  # still answered: the edited file is reported
    assert (history.counts["applied"], history.counts["modified"]) == (10, 1)
    assert all(c.status == "ok" for c in result.checks)


def test_snapshot_round_trip_replaces_the_shadow(pg_server, clean_env, tmp_path):
    out = tmp_path / "expected.json"
    made = subprocess.run([sys.executable, "-m", "exporter", "snapshot", "--config", str(SHIPPED_CONFIG), "--out", str(out)],
                          env=clean_env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert "20 tables" in made.stdout or "21 tables" in made.stdout
    env = dict(clean_env, SHADOW_DATABASE_URL="", SCHEMA_SNAPSHOT=str(out))
    result = verify(env, "--json")
    assert result.returncode == 0, result.stdout
    assert json.loads(result.stdout)["databases"][0]["drift"] == []
