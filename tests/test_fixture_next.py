"""The later Venzory fixture (tests/fixtures/venzory_next) itself, proven on real PostgreSQL:
every migration applies over clean data like `prisma migrate deploy`, the final catalog holds
what the helper module says, schema.prisma matches the migrations (Prisma's own parser), the
data-cleaning and failing migrations behave as described, and the problems' ground truth is
recounted by plain SQL written here.
"""

from __future__ import annotations

import psycopg
import pytest

from exporter.migrations.replay import MigrationError, apply_migrations, migration_names
from exporter.schema.catalog import introspect
from exporter.schema.model import ConstraintKind, normalize_expression
from test_fixture import assert_schema_prisma_matches
from venzory_next_fixture import (
    CHECK_CONSTRAINTS,
    DROPPED_CHECKS,
    MIGRATIONS,
    PROBLEMS,
    SCHEMA_PRISMA,
    STEP_1,
    STEP_3,
    STEP_4,
    STEP_5,
    STEP_6,
    STEP_4_CHECKS,
    STEPS,
    build_database,
)


@pytest.fixture(scope="module")
def next_final(pg_server):
    dsn = build_database(pg_server, "next_fixture_final", seed="clean")
    with psycopg.connect(dsn) as conn:
        return dsn, introspect(conn)


def _checks(schema) -> dict:
    return {k: c for k, c in schema.constraints.items() if c.kind == ConstraintKind.CHECK}


def test_folder_is_a_consolidated_baseline_and_five_later_migrations():
    assert migration_names(MIGRATIONS) == list(STEPS)
    assert STEP_1.endswith("_init") and STEP_4 == "20251120100000_add_inventory_invariants"
    assert 'provider = "postgresql"' in (MIGRATIONS / "migration_lock.toml").read_text()


@pytest.mark.parametrize("upto", STEPS)
def test_every_step_applies_over_clean_data(pg_server, upto):
    dsn = build_database(pg_server, f"next_fixture_{STEPS.index(upto) + 1}", upto=upto, seed="clean")
    with psycopg.connect(dsn) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL ORDER BY migration_name")]
        schema = introspect(conn)
    assert names == list(STEPS[: STEPS.index(upto) + 1])
    expected = dict(CHECK_CONSTRAINTS)
    if STEPS.index(upto) < STEPS.index(STEP_4):
        expected = {k: v for k, v in expected.items() if k not in STEP_4_CHECKS}
    if upto == STEP_1:
        expected.update(DROPPED_CHECKS)
    checks = _checks(schema)
    assert set(checks) == set(expected)
    for key, rule in expected.items():
        assert normalize_expression(checks[key].definition) == normalize_expression(rule), key
        assert checks[key].validated
    assert schema.has_table("SupplierCatalog") == (upto == STEP_1)
    assert schema.has_column("Order", "supplierId") == (STEPS.index(upto) < STEPS.index(STEP_3))


def test_final_schema(next_final):
    _, schema = next_final
    assert not schema.has_table("SupplierCatalog") and "IntegrationType" not in schema.enums
    assert schema.enums["StockCountStatus"] == ("IN_PROGRESS", "COMPLETED", "ABANDONED")
    fk = schema.constraint("Order", "Order_practiceSupplierId_fkey")
    assert (fk.columns, fk.ref_table, fk.on_delete) == (("practiceSupplierId",), "PracticeSupplier", "SET NULL")
    assert not schema.tables["OrderTemplate"].columns["globalSupplierId"].nullable
    assert schema.indexes["Item_practiceId_sku_key"].predicate is not None
    # the old CHECK names exist nowhere any more
    assert not any(c.name.startswith("check_") for c in schema.constraints.values())


def test_schema_prisma_matches_the_migrated_catalog(next_final):
    assert_schema_prisma_matches(SCHEMA_PRISMA, next_final[1])


def test_rename_maps_legacy_suppliers_to_practice_suppliers(next_final):
    with psycopg.connect(next_final[0]) as conn:
        rows = dict(conn.execute('SELECT "id", "practiceSupplierId" FROM "Order"').fetchall())
    assert rows["ord_n_1"] == "ps_n_schein" and rows["ord_r_1"] == "ps_r_cove"
    assert rows["ord_n_4"] is None and rows["ord_n_5"] is None  # a deleted / no supplier


def test_invariants_migration_cleans_data_before_adding_its_constraints(pg_server):
    dsn = build_database(pg_server, "next_fixture_dirty", upto=STEP_3, seed="clean")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""UPDATE "LocationInventory" SET "quantity" = -2 WHERE "quantity" > 0""")
        conn.execute("""UPDATE "StockAdjustment" SET "quantity" = 0 WHERE "id" IN
                        (SELECT "id" FROM "StockAdjustment" ORDER BY "id" LIMIT 2)""")
        assert apply_migrations(conn, MIGRATIONS, upto=STEP_4) == [STEP_4]
        assert conn.execute("""SELECT count(*) FROM "LocationInventory" WHERE "quantity" < 0""").fetchone() == (0,)
        assert conn.execute('SELECT count(*) FROM "StockAdjustment"').fetchone() == (4,)


@pytest.mark.parametrize("step, dirty", [
    (STEP_5, """INSERT INTO "OrderTemplate" ("id", "practiceId", "name", "updatedAt")
                VALUES ('tpl_1', 'prac_north', 'Weekly', now())"""),
    (STEP_6, """UPDATE "StockCountSession" SET "status" = 'CANCELLED' WHERE "id" = 'scs_n_3'"""),
])
def test_required_column_and_enum_rewrite_fail_on_rows_they_cannot_keep(pg_server, step, dirty):
    before = STEPS[STEPS.index(step) - 1]
    dsn = build_database(pg_server, "next_fixture_blocked", upto=before, seed="clean")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(dirty)
        with pytest.raises(MigrationError):
            apply_migrations(conn, MIGRATIONS, upto=step)
        row = conn.execute("SELECT finished_at, logs FROM _prisma_migrations WHERE migration_name = %s",
                           (step,)).fetchone()
    assert row[0] is None and row[1]


# -- Ground truth of the problems database, recounted by plain SQL --------------------------------

RECOUNT = {
    "dropped_check": 'SELECT count(*) FROM "LocationInventory" WHERE "quantity" < 0',
    "not_valid_check": 'SELECT count(*) FROM "OrderItem" WHERE "quantity" <= 0',
    "not_valid_new_check": 'SELECT count(*) FROM "StockAdjustment" WHERE "quantity" = 0',
    "dropped_fk_renamed_column": """SELECT count(*) FROM "Order" o WHERE o."practiceSupplierId" IS NOT NULL
                                    AND NOT EXISTS (SELECT 1 FROM "PracticeSupplier" p WHERE p."id" = o."practiceSupplierId")""",
    "dropped_new_check": 'SELECT count(*) FROM "LocationInventory" WHERE "maxStock" <= 0',
    "dropped_not_null": 'SELECT count(*) FROM "Location" WHERE "name" IS NULL',
    "dropped_unique": """SELECT sum(n) FROM (SELECT count(*) AS n FROM "Item" GROUP BY "practiceId", "name"
                         HAVING count(*) > 1) d""",
}


def test_problem_ground_truth(pg_server):
    dsn = build_database(pg_server, "next_fixture_problems", seed="problems")
    with psycopg.connect(dsn) as conn:
        counts = {name: conn.execute(sql).fetchone()[0] for name, sql in RECOUNT.items()}
        schema = introspect(conn)
    assert counts == {name: p["rows"] for name, p in PROBLEMS.items()}
    assert len({p["rows"] for n, p in PROBLEMS.items() if n != "dropped_unique"}) == len(PROBLEMS) - 1
    assert schema.constraint("LocationInventory", "LocationInventory_quantity_check") is None
    assert not schema.constraint("OrderItem", "OrderItem_quantity_check").validated
    assert not schema.constraint("StockAdjustment", "StockAdjustment_quantity_check").validated
    assert schema.constraint("Order", "Order_practiceSupplierId_fkey") is None
    assert schema.tables["Location"].columns["name"].nullable
    assert "Item_practiceId_name_key" not in schema.indexes
