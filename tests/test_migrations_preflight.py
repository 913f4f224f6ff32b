"""The pending-migration preflight on the runbook's "before hardening" database (steps 1-6
and the problems seed): every count is checked against the fixture's ground truth."""

from __future__ import annotations

import shutil

import psycopg
import pytest

from exporter.migrations.history import read_history
from exporter.migrations.preflight import (
    PreflightItem, PreflightKind, PreflightStatus, added_constraints, preflight, verdicts,
)
from exporter.migrations.shadow import expected_steps
from exporter.schema.catalog import introspect
from venzory_fixture import (
    MIGRATIONS, PROBLEM_DUPLICATES, PROBLEM_VIOLATIONS, STEP_6, STEP_7, STEP_8, STEP_9, STEP_10, STEP_11,
    STEPS, build_database,
)

# (migration, table, constraint) -> the fixture's name for the same rule.
ROW_RULES = {
    (STEP_9, "LocationInventory", "check_quantity_non_negative"): "location_inventory_negative_quantity",
    (STEP_9, "OrderItem", "check_quantity_positive"): "order_item_quantity_positive",
    (STEP_9, "GoodsReceiptLine", "check_quantity_positive"): "goods_receipt_line_quantity_positive",
    (STEP_9, "InventoryTransfer", "check_quantity_positive"): "inventory_transfer_quantity_positive",
    (STEP_9, "InventoryTransfer", "check_different_locations"): "inventory_transfer_different_locations",
    (STEP_9, "StockAdjustment", "check_quantity_not_zero"): "stock_adjustment_quantity_not_zero",
    (STEP_9, "Order", "check_sent_has_sentAt"): "order_sent_has_sent_at",
    (STEP_9, "Order", "check_received_has_receivedAt"): "order_received_has_received_at",
    (STEP_9, "Order", "check_partially_received_has_receivedAt"): "order_partially_received_has_received_at",
    (STEP_9, "GoodsReceipt", "check_confirmed_has_receivedAt"): "goods_receipt_confirmed_has_received_at",
    (STEP_9, "LocationInventory", "check_reorder_point_non_negative"): "location_inventory_reorder_point_non_negative",
    (STEP_9, "LocationInventory", "check_reorder_quantity_positive"): "location_inventory_reorder_quantity_positive",
    (STEP_9, "OrderItem", "check_unitPrice_non_negative"): "order_item_unit_price_non_negative",
    (STEP_9, "SupplierItem", "check_unitPrice_non_negative"): "supplier_item_unit_price_non_negative",
    (STEP_9, "SupplierCatalog", "check_unitPrice_non_negative"): "supplier_catalog_unit_price_non_negative",
    (STEP_9, "SupplierItem", "check_minOrderQty_positive"): "supplier_item_min_order_qty_positive",
    (STEP_9, "SupplierCatalog", "check_minOrderQty_positive"): "supplier_catalog_min_order_qty_positive",
    (STEP_7, "Order", "Order_createdById_fkey"): "order_created_by_orphan",
    (STEP_7, "GoodsReceipt", "GoodsReceipt_createdById_fkey"): "goods_receipt_created_by_orphan",
    (STEP_7, "StockAdjustment", "StockAdjustment_createdById_fkey"): "stock_adjustment_created_by_orphan",
    (STEP_7, "InventoryTransfer", "InventoryTransfer_createdById_fkey"): "inventory_transfer_created_by_orphan",
    (STEP_7, "StockCountSession", "StockCountSession_createdById_fkey"): "stock_count_session_created_by_orphan",
    (STEP_7, "OrderTemplate", "OrderTemplate_createdById_fkey"): "order_template_created_by_orphan",
    (STEP_7, "Order", "Order_supplierId_fkey"): "order_supplier_orphan",
    (STEP_7, "Item", "Item_defaultSupplierId_fkey"): "item_default_supplier_orphan",
}
DUPLICATE_RULES = {
    (STEP_10, "Location", "Location_practiceId_code_key"): "location_code_duplicate",
    (STEP_10, "Item", "Item_practiceId_name_key"): "item_name_duplicate",
    (STEP_10, "Item", "Item_practiceId_sku_key"): "item_sku_duplicate",
    (STEP_7, "Supplier", "Supplier_practiceId_name_key"): "supplier_name_duplicate",
    (STEP_7, "GlobalSupplier", "GlobalSupplier_name_key"): "global_supplier_name_duplicate",
}
# Re-created by step 7 with another ON DELETE; the problems seed leaves them intact.
INTACT_FOREIGN_KEYS = {"GoodsReceipt_supplierId_fkey", "InventoryTransfer_fromLocationId_fkey",
                       "InventoryTransfer_toLocationId_fkey"}


def read_only(dsn):
    return psycopg.connect(dsn, autocommit=True, options="-c default_transaction_read_only=on")


def run_preflight(dsn, steps, folder=MIGRATIONS):
    with read_only(dsn) as conn:
        pending = read_history(conn, folder).pending_names
        items = preflight(conn, introspect(conn), steps, pending)
    return pending, items


@pytest.fixture(scope="module")
def steps(pg_server):
    return expected_steps(MIGRATIONS, pg_server.admin_dsn)


@pytest.fixture(scope="module")
def result(problems_dsn, steps):
    return run_preflight(problems_dsn, steps)


def keyed(items):
    return {(i.migration, i.table, i.constraint): i for i in items}


def test_every_addition_is_found_and_nothing_else(result):
    pending, items = result
    assert pending == STEPS[6:]
    expected = set(ROW_RULES) | set(DUPLICATE_RULES) | {(STEP_7, "", fk) for fk in INTACT_FOREIGN_KEYS}
    found = {(m, "" if c in INTACT_FOREIGN_KEYS else t, c) for m, t, c in keyed(items)}
    assert found == expected
    assert len(items) == len(keyed(items)) == 33


def test_row_and_orphan_counts_equal_the_ground_truth(result):
    items = keyed(result[1])
    counted = {name: items[key].blocked_rows for key, name in ROW_RULES.items()}
    assert counted == PROBLEM_VIOLATIONS
    kinds = {items[key].kind for key in ROW_RULES}
    assert kinds == {PreflightKind.CHECK, PreflightKind.FOREIGN_KEY}


def test_duplicate_counts_equal_the_ground_truth(result):
    items = keyed(result[1])
    counted = {name: (items[key].duplicate_groups, items[key].blocked_rows) for key, name in DUPLICATE_RULES.items()}
    assert counted == PROBLEM_DUPLICATES
    assert {items[key].kind for key in DUPLICATE_RULES} == {PreflightKind.UNIQUE}


def test_blocked_steps_are_named_and_the_others_pass(result):
    pending, items = result
    assert verdicts(items, pending) == {STEP_7: PreflightStatus.BLOCKED, STEP_8: PreflightStatus.OK, STEP_9: PreflightStatus.BLOCKED, STEP_10: PreflightStatus.BLOCKED, STEP_11: PreflightStatus.OK}
    for item in items:
        assert item.status == (PreflightStatus.BLOCKED if item.blocked_rows else PreflightStatus.OK)
    assert all(i.status == PreflightStatus.OK and i.blocked_rows == 0 for i in items if i.constraint in INTACT_FOREIGN_KEYS)


def test_each_listing_query_returns_exactly_the_blocked_rows(problems_dsn, result):
    with read_only(problems_dsn) as conn:
        for item in result[1]:
            assert len(conn.execute(item.sql).fetchall()) == item.blocked_rows, item.sql


def test_new_enum_label_is_evaluated_as_text_because_no_row_can_hold_it(problems_dsn, result):
    item = keyed(result[1])[(STEP_9, "Order", "check_partially_received_has_receivedAt")]
    assert (item.status, item.blocked_rows) == (PreflightStatus.OK, 0) and "compared as text" in item.reason
    # The shadow's own text of the rule cannot run here: the live enum lacks the label.
    with read_only(problems_dsn) as conn, pytest.raises(psycopg.errors.InvalidTextRepresentation):
        conn.execute("""SELECT count(*) FROM "Order" WHERE NOT ((status <> 'PARTIALLY_RECEIVED'::"OrderStatus"))""")


def test_fully_migrated_database_has_nothing_to_check(pg_server, steps):
    dsn = build_database(pg_server, "preflight_clean", seed="clean")
    pending, items = run_preflight(dsn, steps)
    assert pending == () and items == ()


def test_first_migration_on_an_empty_database_adds_nothing_to_existing_rows(steps):
    # Tables a migration creates have no rows yet: nothing of theirs is checked.
    assert added_constraints(steps.before(STEPS[0]), steps.after(STEPS[0])) == []


# -- what the live database cannot evaluate yet --------------------------------------------

LATER_1 = "20251201000000_add_priority"
LATER_2 = "20251201000001_require_priority"
LATER_MIGRATIONS = {
    LATER_1: """
ALTER TABLE "Order" ADD COLUMN "priority" INTEGER;
ALTER TYPE "OrderStatus" ADD VALUE 'ON_HOLD';
CREATE FUNCTION "is_sku"(text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT $1 ~ '^[A-Z0-9-]+$' $$;
""",
    LATER_2: """
ALTER TABLE "Order" ADD CONSTRAINT "check_priority_positive" CHECK ("priority" > 0);
ALTER TABLE "Order" ALTER COLUMN "priority" SET NOT NULL;
CREATE UNIQUE INDEX "Order_practiceId_priority_key" ON "Order"("practiceId", "priority");
ALTER TABLE "Order" ADD CONSTRAINT "check_on_hold_after_sent" CHECK ("status" < 'ON_HOLD' OR "sentAt" IS NOT NULL);
ALTER TABLE "Item" ADD CONSTRAINT "check_sku_format" CHECK ("sku" IS NULL OR "is_sku"("sku"));
ALTER TABLE "Location" ALTER COLUMN "code" SET NOT NULL;
CREATE UNIQUE INDEX "Item_practiceId_lower_name_key" ON "Item"("practiceId", lower("name"));
""",
}


@pytest.fixture(scope="module")
def later_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("later") / "migrations"
    shutil.copytree(MIGRATIONS, folder, ignore=lambda d, names: [n for n in names if n > STEP_6 and n[0].isdigit()])
    for name, sql in LATER_MIGRATIONS.items():
        (folder / name).mkdir()
        (folder / name / "migration.sql").write_text(sql)
    return folder


def test_what_an_earlier_pending_step_adds_cannot_be_evaluated(pg_server, problems_dsn, later_folder):
    steps = expected_steps(later_folder, pg_server.admin_dsn)
    pending, items = run_preflight(problems_dsn, steps, later_folder)
    assert pending == (LATER_1, LATER_2)
    by_name = {i.constraint: i for i in items}
    assert set(by_name) == {"check_priority_positive", "priority", "Order_practiceId_priority_key",
                            "check_on_hold_after_sent", "check_sku_format", "code",
                            "Item_practiceId_lower_name_key"}

    for name in ("check_priority_positive", "priority", "Order_practiceId_priority_key"):
        item = by_name[name]  # found from the live Schema, before any query
        assert (item.status, item.blocked_rows, item.sql) == (PreflightStatus.CANNOT_EVALUATE, None, "")
        assert item.reason == f'column "Order"."priority" does not exist in the database yet (migration {LATER_1} adds it)'
    assert by_name["priority"].kind == PreflightKind.NOT_NULL

    ordering = by_name["check_on_hold_after_sent"]  # enum order: text would give another answer
    assert ordering.status == PreflightStatus.CANNOT_EVALUATE and "order of enum OrderStatus" in ordering.reason

    function = by_name["check_sku_format"]  # caught from the database's error
    assert function.status == PreflightStatus.CANNOT_EVALUATE and function.reason.startswith("query failed: 42883")

    not_null = by_name["code"]  # an existing column: its NULLs counted
    with read_only(problems_dsn) as conn:
        nulls = conn.execute('SELECT count(*) FROM "Location" WHERE "code" IS NULL').fetchone()[0]
    assert nulls > 0 and (not_null.kind, not_null.status, not_null.blocked_rows) == (PreflightKind.NOT_NULL, PreflightStatus.BLOCKED, nulls)

    expression = by_name["Item_practiceId_lower_name_key"]  # a unique index on an expression
    with read_only(problems_dsn) as conn:
        groups, rows = conn.execute('SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM "Item"'
                                    ' GROUP BY "practiceId", lower("name") HAVING count(*) > 1) AS d').fetchone()
    assert rows > 0
    assert (expression.duplicate_groups, expression.blocked_rows, expression.status) == (groups, rows, PreflightStatus.BLOCKED)
    assert verdicts(items, pending) == {LATER_1: PreflightStatus.OK, LATER_2: PreflightStatus.BLOCKED}


def test_verdict_of_a_migration_is_its_worst_item():
    def item(migration, status):
        return PreflightItem(migration, "T", "c", PreflightKind.CHECK, status, None, "")
    items = [item("a", PreflightStatus.OK), item("b", PreflightStatus.CANNOT_EVALUATE), item("b", PreflightStatus.OK), item("c", PreflightStatus.CANNOT_EVALUATE), item("c", PreflightStatus.BLOCKED)]
    assert verdicts(items, ["a", "b", "c", "d"]) == {"a": PreflightStatus.OK, "b": PreflightStatus.CANNOT_EVALUATE, "c": PreflightStatus.BLOCKED, "d": PreflightStatus.OK}


def test_a_pending_migration_the_replay_does_not_know_is_not_evaluated(problems_dsn, steps):
    # history lists a folder whose migration.sql is still being copied; the replay skipped it
    with read_only(problems_dsn) as conn:
        items = preflight(conn, introspect(conn), steps, [STEP_7, "20251201000000_being_copied"])
    (unknown,) = [i for i in items if i.migration == "20251201000000_being_copied"]
    assert (unknown.kind, unknown.status, unknown.blocked_rows) == (PreflightKind.MIGRATION, PreflightStatus.CANNOT_EVALUATE, None)
    assert verdicts(items, [STEP_7, "20251201000000_being_copied"])["20251201000000_being_copied"] == PreflightStatus.CANNOT_EVALUATE
