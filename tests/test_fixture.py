"""The Venzory fixture itself: migrations, schema.prisma, seeds, ground truth, checksums.

Everything else in the suite trusts this fixture, so here it is proven against a real
PostgreSQL: the migrations apply like `prisma migrate deploy`, the final catalog is what
venzory-schema.md says, schema.prisma matches the migrations, and the ground truth numbers
of the problems database are recounted by plain, obviously-correct SQL written below
(independently of any code of the exporter).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from exporter.migrations.checksum import checksum, checksum_matches, legacy_format, read_migration
from exporter.migrations.replay import MigrationError, apply_migrations, migration_names
from exporter.schema.catalog import introspect
from exporter.schema.model import ConstraintKind, normalize_expression
from venzory_fixture import (
    CHECK_CONSTRAINTS,
    CREATED_BY_TABLES,
    ENUMS,
    KNOWN_DRIFT,
    MIGRATIONS,
    PROBLEM_DUPLICATES,
    PROBLEM_VIOLATIONS,
    SCHEMA_PRISMA,
    STEP_6,
    STEP_7,
    STEP_10,
    STEP_11,
    STEPS,
    UNIQUE_INDEXES,
    build_database,
)

# -- Independent recounts: one plain query per check --------------------------------------------


def _orphans(table: str, column: str, parent: str) -> str:
    return (f'SELECT count(*) FROM "{table}" c LEFT JOIN "{parent}" p ON p."id" = c."{column}" '
            f'WHERE c."{column}" IS NOT NULL AND p."id" IS NULL')


# A row violates a rule when the rule is FALSE; `x < 0` is NULL (not counted) for a NULL x.
# Enum comparisons go through ::text so they also run where PARTIALLY_RECEIVED does not exist.
VIOLATION_SQL: dict[str, str] = {
    "location_inventory_negative_quantity": 'SELECT count(*) FROM "LocationInventory" WHERE "quantity" < 0',
    "order_item_quantity_positive": 'SELECT count(*) FROM "OrderItem" WHERE "quantity" <= 0',
    "goods_receipt_line_quantity_positive": 'SELECT count(*) FROM "GoodsReceiptLine" WHERE "quantity" <= 0',
    "inventory_transfer_quantity_positive": 'SELECT count(*) FROM "InventoryTransfer" WHERE "quantity" <= 0',
    "stock_adjustment_quantity_not_zero": 'SELECT count(*) FROM "StockAdjustment" WHERE "quantity" = 0',
    "inventory_transfer_different_locations":
        'SELECT count(*) FROM "InventoryTransfer" WHERE "fromLocationId" = "toLocationId"',
    "order_sent_has_sent_at":
        """SELECT count(*) FROM "Order" WHERE "status"::text = 'SENT' AND "sentAt" IS NULL""",
    "order_received_has_received_at":
        """SELECT count(*) FROM "Order" WHERE "status"::text = 'RECEIVED' AND "receivedAt" IS NULL""",
    "order_partially_received_has_received_at":
        """SELECT count(*) FROM "Order" WHERE "status"::text = 'PARTIALLY_RECEIVED' AND "receivedAt" IS NULL""",
    "goods_receipt_confirmed_has_received_at":
        """SELECT count(*) FROM "GoodsReceipt" WHERE "status"::text = 'CONFIRMED' AND "receivedAt" IS NULL""",
    "order_item_unit_price_non_negative": 'SELECT count(*) FROM "OrderItem" WHERE "unitPrice" < 0',
    "supplier_item_unit_price_non_negative": 'SELECT count(*) FROM "SupplierItem" WHERE "unitPrice" < 0',
    "supplier_catalog_unit_price_non_negative": 'SELECT count(*) FROM "SupplierCatalog" WHERE "unitPrice" < 0',
    "location_inventory_reorder_point_non_negative":
        'SELECT count(*) FROM "LocationInventory" WHERE "reorderPoint" < 0',
    "location_inventory_reorder_quantity_positive":
        'SELECT count(*) FROM "LocationInventory" WHERE "reorderQuantity" <= 0',
    "supplier_item_min_order_qty_positive": 'SELECT count(*) FROM "SupplierItem" WHERE "minOrderQty" <= 0',
    "supplier_catalog_min_order_qty_positive": 'SELECT count(*) FROM "SupplierCatalog" WHERE "minOrderQty" <= 0',
    "order_created_by_orphan": _orphans("Order", "createdById", "User"),
    "goods_receipt_created_by_orphan": _orphans("GoodsReceipt", "createdById", "User"),
    "stock_adjustment_created_by_orphan": _orphans("StockAdjustment", "createdById", "User"),
    "inventory_transfer_created_by_orphan": _orphans("InventoryTransfer", "createdById", "User"),
    "stock_count_session_created_by_orphan": _orphans("StockCountSession", "createdById", "User"),
    "order_template_created_by_orphan": _orphans("OrderTemplate", "createdById", "User"),
    "order_supplier_orphan": _orphans("Order", "supplierId", "Supplier"),
    "item_default_supplier_orphan": _orphans("Item", "defaultSupplierId", "Supplier"),
}


def _groups(table: str, columns: str, where: str = "TRUE") -> str:
    return (f'SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM "{table}" '
            f"WHERE {where} GROUP BY {columns} HAVING count(*) > 1) AS g")


# GROUP BY puts NULLs together, so the key columns that may be NULL are filtered first.
DUPLICATE_SQL: dict[str, str] = {
    "item_name_duplicate": _groups("Item", '"practiceId", "name"'),
    "item_sku_duplicate": _groups("Item", '"practiceId", "sku"', '"sku" IS NOT NULL'),
    "location_code_duplicate": _groups("Location", '"practiceId", "code"', '"code" IS NOT NULL'),
    "supplier_name_duplicate": _groups("Supplier", '"practiceId", "name"'),
    "global_supplier_name_duplicate": _groups("GlobalSupplier", '"name"'),
}

# Valid rows a naive script would flag: both seeds must contain them (`clean_only`: only the
# clean seed, since createdById is NOT NULL before step 7).
TRICKY_VALID: dict[str, tuple[str, bool]] = {
    "inventory quantity 0": ('SELECT count(*) FROM "LocationInventory" WHERE "quantity" = 0', False),
    "reorderPoint NULL": ('SELECT count(*) FROM "LocationInventory" WHERE "reorderPoint" IS NULL', False),
    "reorderPoint 0": ('SELECT count(*) FROM "LocationInventory" WHERE "reorderPoint" = 0', False),
    "reorderQuantity NULL": ('SELECT count(*) FROM "LocationInventory" WHERE "reorderQuantity" IS NULL', False),
    "OrderItem unitPrice NULL": ('SELECT count(*) FROM "OrderItem" WHERE "unitPrice" IS NULL', False),
    "OrderItem unitPrice 0": ('SELECT count(*) FROM "OrderItem" WHERE "unitPrice" = 0', False),
    "SupplierItem unitPrice NULL": ('SELECT count(*) FROM "SupplierItem" WHERE "unitPrice" IS NULL', False),
    "SupplierItem minOrderQty NULL": ('SELECT count(*) FROM "SupplierItem" WHERE "minOrderQty" IS NULL', False),
    "SupplierCatalog unitPrice NULL": ('SELECT count(*) FROM "SupplierCatalog" WHERE "unitPrice" IS NULL', False),
    "SupplierCatalog minOrderQty NULL":
        ('SELECT count(*) FROM "SupplierCatalog" WHERE "minOrderQty" IS NULL', False),
    "several NULL skus in one practice": (
        'SELECT count(*) FROM (SELECT 1 FROM "Item" WHERE "sku" IS NULL GROUP BY "practiceId" '
        "HAVING count(*) >= 2) g", False),
    "several NULL codes in one practice": (
        'SELECT count(*) FROM (SELECT 1 FROM "Location" WHERE "code" IS NULL GROUP BY "practiceId" '
        "HAVING count(*) >= 2) g", False),
    "same item name in two practices": (
        'SELECT count(*) FROM (SELECT 1 FROM "Item" GROUP BY "name" '
        'HAVING count(DISTINCT "practiceId") >= 2) g', False),
    "same sku in two practices": (
        'SELECT count(*) FROM (SELECT 1 FROM "Item" WHERE "sku" IS NOT NULL GROUP BY "sku" '
        'HAVING count(DISTINCT "practiceId") >= 2) g', False),
    "same location code in two practices": (
        'SELECT count(*) FROM (SELECT 1 FROM "Location" WHERE "code" IS NOT NULL GROUP BY "code" '
        'HAVING count(DISTINCT "practiceId") >= 2) g', False),
    "same supplier name in two practices": (
        'SELECT count(*) FROM (SELECT 1 FROM "Supplier" GROUP BY "name" '
        'HAVING count(DISTINCT "practiceId") >= 2) g', False),
    "global supplier names differing in case": (
        'SELECT count(*) FROM (SELECT 1 FROM "GlobalSupplier" GROUP BY lower("name") '
        'HAVING count(DISTINCT "name") >= 2) g', False),
    "DRAFT order without sentAt": (
        """SELECT count(*) FROM "Order" WHERE "status" = 'DRAFT' AND "sentAt" IS NULL""", False),
    "CANCELLED order without sentAt": (
        """SELECT count(*) FROM "Order" WHERE "status" = 'CANCELLED' AND "sentAt" IS NULL""", False),
    "DRAFT receipt without receivedAt": (
        """SELECT count(*) FROM "GoodsReceipt" WHERE "status" = 'DRAFT' AND "receivedAt" IS NULL""", False),
    "Order supplierId NULL": ('SELECT count(*) FROM "Order" WHERE "supplierId" IS NULL', False),
    "Item defaultSupplierId NULL": ('SELECT count(*) FROM "Item" WHERE "defaultSupplierId" IS NULL', False),
    "negative stock adjustment": ('SELECT count(*) FROM "StockAdjustment" WHERE "quantity" < 0', False),
    **{
        f"{table} createdById NULL": (f'SELECT count(*) FROM "{table}" WHERE "createdById" IS NULL', True)
        for table in CREATED_BY_TABLES
    },
}


# -- Databases (built once per module) ---------------------------------------------------------


@pytest.fixture(scope="module")
def step6_dsn(pg_server):
    return build_database(pg_server, "fixture_step6", upto=STEP_6)


@pytest.fixture(scope="module")
def final_schema(clean_dsn):
    with psycopg.connect(clean_dsn) as conn:
        return introspect(conn)


def _count(dsn: str, sql: str):
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchone()


# -- The migrations folder -----------------------------------------------------------------------


def test_folder_holds_the_eleven_runbook_migrations_in_order():
    assert migration_names(MIGRATIONS) == list(STEPS)
    assert 'provider = "postgresql"' in (MIGRATIONS / "migration_lock.toml").read_text()


def test_migration_names_ignores_files_and_folders_without_a_script(tmp_path):
    for name in ("2_b", "1_a", "3_empty"):
        (tmp_path / name).mkdir()
    (tmp_path / "2_b" / "migration.sql").write_text("SELECT 2;\n")
    (tmp_path / "1_a" / "migration.sql").write_text("SELECT 1;\n")
    (tmp_path / "migration_lock.toml").write_text('provider = "postgresql"\n')
    assert migration_names(tmp_path) == ["1_a", "2_b"]


def test_every_migration_applies_and_is_recorded_like_prisma(clean_dsn):
    with psycopg.connect(clean_dsn) as conn:
        rows = conn.execute(
            "SELECT migration_name, checksum, finished_at IS NOT NULL, rolled_back_at, logs,"
            " applied_steps_count, length(id) FROM _prisma_migrations ORDER BY started_at, migration_name"
        ).fetchall()
    assert [r[0] for r in rows] == list(STEPS)
    for name, stored, finished, rolled_back, logs, steps, id_length in rows:
        script = MIGRATIONS / name / "migration.sql"
        assert finished and rolled_back is None and logs is None and steps == 1 and id_length == 36
        assert checksum_matches(stored, read_migration(script)), name
        assert stored == hashlib.sha256(script.read_bytes()).hexdigest()


def test_migrations_table_has_prismas_columns(clean_dsn, final_schema):
    columns = {c.name: (c.type, c.nullable) for c in final_schema.tables["_prisma_migrations"].columns.values()}
    assert columns == {
        "id": ("character varying(36)", False),
        "checksum": ("character varying(64)", False),
        "finished_at": ("timestamp with time zone", True),
        "migration_name": ("character varying(255)", False),
        "logs": ("text", True),
        "rolled_back_at": ("timestamp with time zone", True),
        "started_at": ("timestamp with time zone", False),
        "applied_steps_count": ("integer", False),
    }
    assert final_schema.constraints[("_prisma_migrations", "_prisma_migrations_pkey")].columns == ("id",)


def test_record_false_leaves_no_history(pg_server):
    dsn = build_database(pg_server, "fixture_norecord", upto=STEP_6, record=False)
    assert _count(dsn, "SELECT to_regclass('_prisma_migrations')") == (None,)
    assert _count(dsn, "SELECT to_regclass('\"PracticeSupplier\"') IS NOT NULL") == (True,)


def test_deploy_skips_applied_migrations_and_applies_the_rest(pg_server):
    dsn = build_database(pg_server, "fixture_incremental", upto=STEP_6)
    with psycopg.connect(dsn) as conn:  # not autocommit, idle: switched for the call and back
        assert apply_migrations(conn, MIGRATIONS, upto=STEP_10) == list(STEPS[6:10])
        assert conn.autocommit is False
        assert apply_migrations(conn, MIGRATIONS) == [STEP_11]
        assert apply_migrations(conn, MIGRATIONS) == []
        assert conn.execute("SELECT count(*) FROM _prisma_migrations").fetchone() == (11,)
        with pytest.raises(ValueError):
            apply_migrations(conn, MIGRATIONS, upto="20990101000000_nope")
        conn.execute("SELECT 1")  # now inside a transaction
        with pytest.raises(ValueError):
            apply_migrations(conn, MIGRATIONS)


def test_failed_migration_is_rolled_back_recorded_and_blocks_deploy(pg_server):
    """Duplicate GlobalSupplier names: step 7 fails at its unique index, after it already
    dropped foreign keys and NOT NULLs. The script is one transaction: nothing stays changed."""
    dsn = build_database(pg_server, "fixture_failed", upto=STEP_6)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""INSERT INTO "GlobalSupplier" ("id", "name", "updatedAt")
                        VALUES ('a', 'Henry Schein', now()), ('b', 'Henry Schein', now())""")
        with pytest.raises(MigrationError) as failure:
            apply_migrations(conn, MIGRATIONS)
        assert failure.value.migration == STEP_7
        assert "GlobalSupplier_name_key" in failure.value.message
        finished, logs = conn.execute(
            "SELECT finished_at, logs FROM _prisma_migrations WHERE migration_name = %s", (STEP_7,)
        ).fetchone()
        assert finished is None and "23505" in logs and "GlobalSupplier_name_key" in logs
        schema = introspect(conn)
        assert schema.constraints[("Order", "Order_createdById_fkey")].on_delete == "RESTRICT"
        assert not schema.tables["Order"].columns["createdById"].nullable
        # P3009: nothing more is applied while a failed migration is recorded
        with pytest.raises(MigrationError, match="P3009"):
            apply_migrations(conn, MIGRATIONS)
        # `prisma migrate resolve --rolled-back`, fix the data, deploy again
        conn.execute("UPDATE _prisma_migrations SET rolled_back_at = now() WHERE finished_at IS NULL")
        conn.execute("""DELETE FROM "GlobalSupplier" WHERE "id" = 'b'""")
        assert apply_migrations(conn, MIGRATIONS) == list(STEPS[6:])


def test_deploying_hardening_onto_the_problems_database_fails(pg_server):
    """The runbook's scenario: `migrate deploy` on the un-hardened data fails part-way."""
    dsn = build_database(pg_server, "fixture_problems_deploy", seed="problems")
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(MigrationError) as failure:
            apply_migrations(conn, MIGRATIONS)
        assert failure.value.migration == STEP_7
        assert conn.execute(
            "SELECT count(*) FROM _prisma_migrations WHERE finished_at IS NOT NULL"
        ).fetchone() == (6,)


# -- The final catalog (all 11 steps) ----------------------------------------------------------------


def test_final_schema_has_every_check_constraint(final_schema):
    checks = {key: c for key, c in final_schema.constraints.items() if c.kind == ConstraintKind.CHECK}
    assert set(checks) == set(CHECK_CONSTRAINTS)
    for key, rule in CHECK_CONSTRAINTS.items():
        assert checks[key].validated, key
        assert normalize_expression(checks[key].definition) == normalize_expression(rule), key


def test_final_schema_has_the_unique_indexes(final_schema):
    for name, (table, columns, predicate) in UNIQUE_INDEXES.items():
        index = final_schema.indexes[name]
        assert (index.table, index.columns, index.unique, index.valid) == (table, columns, True, True), name
        if predicate is None:
            assert index.predicate is None, name
        else:
            assert normalize_expression(index.predicate) == normalize_expression(predicate), name
    prisma_default_uniques = {
        "Practice_slug_key": ("Practice", ("slug",)),
        "User_email_key": ("User", ("email",)),
        "Product_gtin_key": ("Product", ("gtin",)),
        "SupplierItem_supplierId_itemId_key": ("SupplierItem", ("supplierId", "itemId")),
        "SupplierCatalog_supplierId_productId_key": ("SupplierCatalog", ("supplierId", "productId")),
        "OrderItem_orderId_itemId_key": ("OrderItem", ("orderId", "itemId")),
    }
    for name, (table, columns) in prisma_default_uniques.items():
        index = final_schema.indexes[name]
        assert (index.table, index.columns, index.unique) == (table, columns, True), name


def test_final_foreign_keys_follow_step_7(final_schema):
    for table in CREATED_BY_TABLES:
        fk = final_schema.constraints[(table, f"{table}_createdById_fkey")]
        assert (fk.ref_table, fk.ref_columns, fk.on_delete, fk.on_update) == ("User", ("id",), "SET NULL", "CASCADE")
        assert final_schema.tables[table].columns["createdById"].nullable
    for table, name in [("Order", "Order_supplierId_fkey"), ("Item", "Item_defaultSupplierId_fkey"),
                        ("GoodsReceipt", "GoodsReceipt_supplierId_fkey")]:
        fk = final_schema.constraints[(table, name)]
        assert (fk.ref_table, fk.on_delete) == ("Supplier", "SET NULL"), name
    for name in ("InventoryTransfer_fromLocationId_fkey", "InventoryTransfer_toLocationId_fkey"):
        fk = final_schema.constraints[("InventoryTransfer", name)]
        assert (fk.ref_table, fk.on_delete) == ("Location", "RESTRICT"), name
    assert all(c.on_update == "CASCADE" for c in final_schema.constraints.values() if c.kind == ConstraintKind.FOREIGN_KEY)


def test_final_enums_and_tables(final_schema):
    assert dict(final_schema.enums) == ENUMS
    assert len(set(final_schema.tables) - {"_prisma_migrations"}) == 20
    pk = final_schema.constraints[("LocationInventory", "LocationInventory_pkey")]
    assert (pk.kind, pk.columns) == (ConstraintKind.PRIMARY_KEY, ("locationId", "itemId"))


def test_known_drift_items_are_formalized_by_step_11(final_schema, step6_dsn):
    table, column = KNOWN_DRIFT["column"]
    assert final_schema.has_column(table, column)
    assert final_schema.tables[table].columns[column].default == "CURRENT_TIMESTAMP"
    order_idx = final_schema.indexes["Order_practiceId_status_createdAt_idx"]
    assert order_idx.columns == ("practiceId", "status", "createdAt") and not order_idx.unique
    li_idx = final_schema.indexes["LocationInventory_itemId_reorderPoint_quantity_idx"]
    assert li_idx.columns == ("itemId", "reorderPoint", "quantity") and not li_idx.unique
    with psycopg.connect(step6_dsn) as conn:
        before = introspect(conn)
    assert not before.has_column(table, column)
    assert not set(KNOWN_DRIFT["indexes"]) & set(before.indexes)


def test_step_11_is_idempotent_on_a_db_push_database(pg_server):
    """Databases that got the drift items through `db push` take step 11 without error."""
    dsn = build_database(pg_server, "fixture_pushed", upto=STEP_10)
    script = read_migration(MIGRATIONS / STEP_11 / "migration.sql")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('ALTER TABLE "LocationInventory" ADD COLUMN "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP')
        conn.execute('CREATE INDEX "Order_practiceId_status_createdAt_idx" ON "Order"("practiceId", "status", "createdAt")')
        assert apply_migrations(conn, MIGRATIONS) == [STEP_11]
        conn.execute(script)  # and once more: still nothing to do
        assert set(KNOWN_DRIFT["indexes"]) <= set(introspect(conn).indexes)


def test_before_hardening_state(step6_dsn):
    with psycopg.connect(step6_dsn) as conn:
        schema = introspect(conn)
    assert not [c for c in schema.constraints.values() if c.kind == ConstraintKind.CHECK]
    assert "PARTIALLY_RECEIVED" not in schema.enums["OrderStatus"]
    for name in ("GlobalSupplier_name_key", "Supplier_practiceId_name_key", "Item_practiceId_name_key",
                 "Item_practiceId_sku_key", "Location_practiceId_code_key"):
        assert name not in schema.indexes
    assert "PracticeUser_practiceId_userId_key" in schema.indexes
    for table in CREATED_BY_TABLES:
        assert not schema.tables[table].columns["createdById"].nullable
        assert schema.constraints[(table, f"{table}_createdById_fkey")].on_delete == "RESTRICT"
    for table, name in [("Order", "Order_supplierId_fkey"), ("Item", "Item_defaultSupplierId_fkey")]:
        assert schema.constraints[(table, name)].on_delete == "RESTRICT"
    assert schema.constraints[("InventoryTransfer", "InventoryTransfer_fromLocationId_fkey")].on_delete == "CASCADE"


# -- schema.prisma matches the migrations ----------------------------------------------------------

ORACLE = Path(__file__).resolve().parent / "prisma_oracle" / "node_modules" / "@prisma" / "prisma-schema-wasm"
_DMMF_JS = ("const w = require(process.argv[1]); const fs = require('fs');"
            "process.stdout.write(w.get_dmmf(JSON.stringify({prismaSchema: fs.readFileSync(process.argv[2], 'utf8')})));")
_SCALARS = {"String": "text", "Int": "integer", "Boolean": "boolean",
            "DateTime": "timestamp(3) without time zone", "Decimal": "numeric(10,2)"}
_ACTIONS = {"Cascade": "CASCADE", "Restrict": "RESTRICT", "SetNull": "SET NULL", "NoAction": "NO ACTION",
            "SetDefault": "SET DEFAULT"}


def test_schema_prisma_text():
    text = SCHEMA_PRISMA.read_text()
    assert 'url      = env("DATABASE_URL")' in text and 'provider = "postgresql"' in text
    assert "@@id([locationId, itemId])" in text
    assert "@@index([practiceId, status, createdAt])" in text
    assert "@@index([itemId, reorderPoint, quantity])" in text
    assert "@@unique([practiceId, sku])" in text and "@@unique([practiceId, code])" in text
    assert "///" in text
    decimals = [line for line in text.splitlines() if " Decimal" in line]
    assert decimals and all("@db.Decimal(10, 2)" in line for line in decimals)


def test_schema_prisma_matches_the_migrated_catalog(final_schema):
    assert_schema_prisma_matches(SCHEMA_PRISMA, final_schema)


def assert_schema_prisma_matches(schema_prisma: Path, live) -> None:
    """Prisma's own parser (the wasm oracle, when installed) reads schema.prisma; every table,
    column, default, key, index, foreign key action and enum must be what the migrations made."""
    node = shutil.which("node")
    if node is None or not ORACLE.is_dir():
        pytest.skip("node or tests/prisma_oracle (npm install there) not available")
    out = subprocess.run([node, "-e", _DMMF_JS, str(ORACLE), str(schema_prisma)],
                         capture_output=True, text=True, check=True, timeout=60)
    datamodel = json.loads(out.stdout)["datamodel"]

    columns, fks, pkeys, indexes = {}, {}, {}, {}
    for model in datamodel["models"]:
        table, fields = model["name"], {f["name"]: f for f in model["fields"]}
        for f in model["fields"]:
            if f["kind"] in ("scalar", "enum"):
                db_default = f["hasDefaultValue"] and not (
                    isinstance(f["default"], dict) and f["default"]["name"] in ("cuid", "uuid"))
                # format_type() quotes the mixed-case enum type names
                type_ = f'"{f["type"]}"' if f["kind"] == "enum" else _SCALARS[f["type"]]
                columns[(table, f["name"])] = (type_, not f["isRequired"], db_default)
            elif f.get("relationFromFields"):
                source = f["relationFromFields"]
                required = all(fields[s]["isRequired"] for s in source)
                action = f.get("relationOnDelete") or ("Restrict" if required else "SetNull")
                fks[(table, f"{table}_{'_'.join(source)}_fkey")] = (
                    tuple(source), f["type"], tuple(f["relationToFields"]), _ACTIONS[action])
    for index in datamodel["indexes"]:
        cols = tuple(x["name"] for x in index["fields"])
        if index["type"] == "id":
            pkeys[index["model"]] = cols
        else:
            unique = index["type"] == "unique"
            name = index.get("dbName") or f"{index['model']}_{'_'.join(cols)}_{'key' if unique else 'idx'}"
            indexes[name] = (index["model"], cols, unique)

    live_tables = set(live.tables) - {"_prisma_migrations"}
    assert live_tables == {m["name"] for m in datamodel["models"]}
    assert {(t, c.name): (c.type, c.nullable, c.default is not None)
            for t in live_tables for c in live.tables[t].columns.values()} == columns
    assert {c.table: c.columns for c in live.constraints.values()
            if c.kind == ConstraintKind.PRIMARY_KEY and c.table in live_tables} == pkeys
    assert {i.name: (i.table, i.columns, i.unique) for i in live.indexes.values()
            if not i.primary and i.table in live_tables} == indexes
    assert {k: (c.columns, c.ref_table, c.ref_columns, c.on_delete)
            for k, c in live.constraints.items() if c.kind == ConstraintKind.FOREIGN_KEY} == fks
    assert dict(live.enums) == {e["name"]: tuple(v["name"] for v in e["values"]) for e in datamodel["enums"]}


# -- Ground truth ---------------------------------------------------------------------------------------


def test_ground_truth_covers_every_check_once():
    assert set(VIOLATION_SQL) == set(PROBLEM_VIOLATIONS)
    assert set(DUPLICATE_SQL) == set(PROBLEM_DUPLICATES)
    nonzero = [n for n in PROBLEM_VIOLATIONS.values() if n]
    assert len(nonzero) == len(set(nonzero)) == len(PROBLEM_VIOLATIONS) - 1
    groups = [g for g, _ in PROBLEM_DUPLICATES.values()]
    rows = [r for _, r in PROBLEM_DUPLICATES.values()]
    assert len(set(groups)) == len(set(rows)) == len(PROBLEM_DUPLICATES)
    assert any(r != 2 * g for g, r in PROBLEM_DUPLICATES.values())


@pytest.mark.parametrize("check", sorted(PROBLEM_VIOLATIONS))
def test_problem_violation_counts(problems_dsn, clean_dsn, check):
    assert _count(problems_dsn, VIOLATION_SQL[check]) == (PROBLEM_VIOLATIONS[check],)
    assert _count(clean_dsn, VIOLATION_SQL[check]) == (0,)


@pytest.mark.parametrize("check", sorted(PROBLEM_DUPLICATES))
def test_problem_duplicate_counts(problems_dsn, clean_dsn, check):
    assert _count(problems_dsn, DUPLICATE_SQL[check]) == PROBLEM_DUPLICATES[check]
    assert _count(clean_dsn, DUPLICATE_SQL[check]) == (0, 0)


@pytest.mark.parametrize("case", sorted(TRICKY_VALID))
def test_seeds_contain_the_tricky_valid_cases(problems_dsn, clean_dsn, case):
    sql, clean_only = TRICKY_VALID[case]
    assert _count(clean_dsn, sql)[0] > 0
    if not clean_only:
        assert _count(problems_dsn, sql)[0] > 0


def test_problems_database_lacks_the_dropped_foreign_keys(problems_dsn):
    with psycopg.connect(problems_dsn) as conn:
        schema = introspect(conn)
    dropped = [(t, f"{t}_createdById_fkey") for t in CREATED_BY_TABLES]
    dropped += [("Order", "Order_supplierId_fkey"), ("Item", "Item_defaultSupplierId_fkey")]
    assert not [key for key in dropped if key in schema.constraints]
    assert ("GoodsReceipt", "GoodsReceipt_supplierId_fkey") in schema.constraints


def test_build_database_rejects_a_seed_for_the_wrong_state(pg_server):
    with pytest.raises(ValueError):
        build_database(pg_server, "fixture_wrong", seed="problems", upto=STEP_11)
    with pytest.raises(ValueError):
        build_database(pg_server, "fixture_wrong", seed="clean", upto=STEP_6)


# -- Checksums ---------------------------------------------------------------------------------------

SCRIPT = '-- CreateTable\nCREATE TABLE "A" (\n    "id" TEXT NOT NULL\n);\n'


def test_checksum_is_lowercase_hex_sha256_of_utf8():
    assert checksum("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert checksum("é") == hashlib.sha256("é".encode()).hexdigest()
    assert checksum_matches(checksum(SCRIPT), SCRIPT)


def test_line_ending_changes_are_accepted():
    crlf = SCRIPT.replace("\n", "\r\n")
    assert checksum_matches(checksum(SCRIPT), crlf)      # written on Linux, checked out on Windows
    assert checksum_matches(checksum(crlf), SCRIPT)      # and the other way round


@pytest.mark.parametrize("changed", [
    SCRIPT + "\n",                                 # one extra trailing newline
    SCRIPT.replace("NULL\n", "NULL \n"),           # a trailing space
    "\ufeff" + SCRIPT,                             # a BOM added
    SCRIPT.replace('"id"', '"Id"'),                # an edit
])
def test_other_changes_count_as_modified(changed):
    assert not checksum_matches(checksum(SCRIPT), changed)


def test_mixed_line_endings():
    """Only whole-file conversions are tried: a mixed file normalized to LF still matches the
    LF original, but a checksum recorded from a mixed file matches neither all-LF nor all-CRLF."""
    mixed = SCRIPT.replace("\n", "\r\n", 1)
    assert checksum_matches(checksum(SCRIPT), mixed)
    assert not checksum_matches(checksum(mixed), SCRIPT)
    assert not checksum_matches(checksum(mixed), SCRIPT.replace("\n", "\r\n"))


def test_stored_value_is_compared_exactly():
    assert not checksum_matches(checksum(SCRIPT).upper(), SCRIPT)
    assert not checksum_matches("", SCRIPT)


def test_legacy_unpadded_checksums():
    text = next(t for t in (f"SELECT {i};\n" for i in range(100))
                if min(hashlib.sha256(t.encode()).digest()) < 0x10)
    legacy = legacy_format(hashlib.sha256(text.encode()).digest())
    assert len(legacy) < 64
    assert legacy == "".join(f"{b:x}" for b in hashlib.sha256(text.encode()).digest())
    assert checksum_matches(legacy, text)
    assert checksum_matches(legacy, text.replace("\n", "\r\n"))
    assert not checksum_matches(legacy, text + "\n")


def test_read_migration_keeps_bom_and_line_endings_and_replaces_bad_bytes(tmp_path):
    path = tmp_path / "migration.sql"
    path.write_bytes(b"\xef\xbb\xbfSELECT 1;\r\n-- \xff\n")
    text = read_migration(path)
    assert text == "\ufeffSELECT 1;\r\n-- \ufffd\n"
    assert checksum(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()
