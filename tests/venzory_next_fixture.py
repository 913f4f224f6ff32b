"""The later Venzory: a second Prisma project that evolves tests/fixtures/venzory the way
real apps do, and databases built from it.

    tests/fixtures/venzory_next/
      prisma/schema.prisma          the final schema of the later app
      prisma/migrations/            a consolidated baseline and five later migrations
      seed_clean.sql                valid data for a database with the baseline applied;
                                    every later migration keeps it valid
      seed_problems.sql             problems planted on the clean, fully migrated database:
                                    a dropped, two NOT VALID and a renamed-column constraint,
                                    a dropped NOT NULL and a dropped unique index

How it evolves the runbook-era project:
  - STEP_1 consolidates the 11 runbook-era migrations into one baseline; its CHECK
    constraints carry the names PostgreSQL gives a column constraint
    (`OrderItem_quantity_check`, ...), two of them written in a shorter, equivalent form
    (`"reorderPoint" >= 0` for `"reorderPoint" IS NULL OR "reorderPoint" >= 0`);
  - STEP_2 drops the legacy table SupplierCatalog (and the enum IntegrationType);
  - STEP_3 renames the foreign-key column Order.supplierId to practiceSupplierId (folding the
    transitional column of the same name into it, remapping the values);
  - STEP_4 cleans data, then adds the stock rules (`LocationInventory_quantity_check`, the
    runbook's critical rule under a new name, and `StockAdjustment_quantity_check`) and two
    new CHECKs on a new column (`"maxStock" > 0`, `"reorderPoint" <= "maxStock"`);
  - STEP_5 adds a required column without a default (fails on a non-empty OrderTemplate);
  - STEP_6 rewrites an enum the Prisma way (CREATE TYPE ..._new, USING (...::text::..._new)),
    removing StockCountStatus.CANCELLED (fails while a row holds it).
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from exporter.migrations.replay import apply_migrations

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "venzory_next"
PRISMA = FIXTURE / "prisma"
MIGRATIONS = PRISMA / "migrations"
SCHEMA_PRISMA = PRISMA / "schema.prisma"
SEEDS = {"clean": FIXTURE / "seed_clean.sql", "problems": FIXTURE / "seed_problems.sql"}

STEP_1 = "20251118000000_init"
STEP_2 = "20251119090000_drop_supplier_catalog"
STEP_3 = "20251119120000_rename_order_supplier"
STEP_4 = "20251120100000_add_inventory_invariants"
STEP_5 = "20251122090000_add_order_template_global_supplier"
STEP_6 = "20251124090000_rewrite_stock_count_status"
STEPS = (STEP_1, STEP_2, STEP_3, STEP_4, STEP_5, STEP_6)


def build_database(pg_server, name: str, *, upto: str | None = None, seed: str | None = None,
                   record: bool = True) -> str:
    """Create database `name` (dropped first if it exists), apply the migrations up to and
    including `upto` (all when None) and load `seed`; return its DSN.

    seed "clean": loaded right after the baseline, then the migrations up to `upto` run over
    it (as they would in production). seed "problems": the clean seed, all migrations, then
    seed_problems.sql (`upto` must be None).
    """
    if seed not in (None, "clean", "problems"):
        raise ValueError(f"unknown seed {seed!r}: expected 'clean', 'problems' or None")
    if seed == "problems" and upto not in (None, STEPS[-1]):
        raise ValueError("the problems seed is for a database with all migrations applied")
    dsn = pg_server.create_database(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if seed is None:
            apply_migrations(conn, MIGRATIONS, upto=upto, record=record)
            return dsn
        apply_migrations(conn, MIGRATIONS, upto=STEP_1, record=record)
        conn.execute(SEEDS["clean"].read_text(encoding="utf-8"))  # one script, no parameters
        if upto != STEP_1:
            apply_migrations(conn, MIGRATIONS, upto=upto, record=record)
        if seed == "problems":
            conn.execute(SEEDS["problems"].read_text(encoding="utf-8"))
    return dsn


# -- The CHECK constraints of the final schema: (table, name) -> rule as written -------------
CHECK_CONSTRAINTS: dict[tuple[str, str], str] = {
    ("OrderItem", "OrderItem_quantity_check"): '"quantity" > 0',
    ("GoodsReceiptLine", "GoodsReceiptLine_quantity_check"): '"quantity" > 0',
    ("InventoryTransfer", "InventoryTransfer_quantity_check"): '"quantity" > 0',
    ("InventoryTransfer", "InventoryTransfer_check"): '"fromLocationId" <> "toLocationId"',
    ("Order", "Order_sentAt_check"): "\"status\" <> 'SENT' OR \"sentAt\" IS NOT NULL",
    ("Order", "Order_receivedAt_check"): "\"status\" <> 'RECEIVED' OR \"receivedAt\" IS NOT NULL",
    ("Order", "Order_receivedAt_check1"): "\"status\" <> 'PARTIALLY_RECEIVED' OR \"receivedAt\" IS NOT NULL",
    ("GoodsReceipt", "GoodsReceipt_receivedAt_check"): "\"status\" <> 'CONFIRMED' OR \"receivedAt\" IS NOT NULL",
    ("LocationInventory", "LocationInventory_reorderPoint_check"): '"reorderPoint" >= 0',
    ("LocationInventory", "LocationInventory_reorderQuantity_check"): '"reorderQuantity" > 0',
    ("OrderItem", "OrderItem_unitPrice_check"): '"unitPrice" >= 0',
    ("SupplierItem", "SupplierItem_unitPrice_check"): '"unitPrice" >= 0',
    ("SupplierItem", "SupplierItem_minOrderQty_check"): '"minOrderQty" > 0',
    ("LocationInventory", "LocationInventory_quantity_check"): '"quantity" >= 0',
    ("StockAdjustment", "StockAdjustment_quantity_check"): '"quantity" <> 0',
    ("LocationInventory", "LocationInventory_maxStock_check"): '"maxStock" > 0',
    ("LocationInventory", "LocationInventory_reorderPoint_maxStock_check"): '"reorderPoint" <= "maxStock"',
}
# Only in the baseline (SupplierCatalog is dropped by STEP_2).
DROPPED_CHECKS = {
    ("SupplierCatalog", "SupplierCatalog_unitPrice_check"): '"unitPrice" >= 0',
    ("SupplierCatalog", "SupplierCatalog_minOrderQty_check"): '"minOrderQty" > 0',
}
# Added by STEP_4 (absent before it).
STEP_4_CHECKS = (
    ("LocationInventory", "LocationInventory_quantity_check"),
    ("StockAdjustment", "StockAdjustment_quantity_check"),
    ("LocationInventory", "LocationInventory_maxStock_check"),
    ("LocationInventory", "LocationInventory_reorderPoint_maxStock_check"),
)
# The runbook's CHECK names (tests/venzory_fixture.py) -> (table, name) in the later app.
RENAMED_CHECKS: dict[tuple[str, str], tuple[str, str]] = {
    ("LocationInventory", "check_quantity_non_negative"): ("LocationInventory", "LocationInventory_quantity_check"),
    ("OrderItem", "check_quantity_positive"): ("OrderItem", "OrderItem_quantity_check"),
    ("GoodsReceiptLine", "check_quantity_positive"): ("GoodsReceiptLine", "GoodsReceiptLine_quantity_check"),
    ("InventoryTransfer", "check_quantity_positive"): ("InventoryTransfer", "InventoryTransfer_quantity_check"),
    ("InventoryTransfer", "check_different_locations"): ("InventoryTransfer", "InventoryTransfer_check"),
    ("StockAdjustment", "check_quantity_not_zero"): ("StockAdjustment", "StockAdjustment_quantity_check"),
    ("Order", "check_sent_has_sentAt"): ("Order", "Order_sentAt_check"),
    ("Order", "check_received_has_receivedAt"): ("Order", "Order_receivedAt_check"),
    ("Order", "check_partially_received_has_receivedAt"): ("Order", "Order_receivedAt_check1"),
    ("GoodsReceipt", "check_confirmed_has_receivedAt"): ("GoodsReceipt", "GoodsReceipt_receivedAt_check"),
    ("LocationInventory", "check_reorder_point_non_negative"): ("LocationInventory", "LocationInventory_reorderPoint_check"),
    ("LocationInventory", "check_reorder_quantity_positive"): ("LocationInventory", "LocationInventory_reorderQuantity_check"),
    ("OrderItem", "check_unitPrice_non_negative"): ("OrderItem", "OrderItem_unitPrice_check"),
    ("SupplierItem", "check_unitPrice_non_negative"): ("SupplierItem", "SupplierItem_unitPrice_check"),
    ("SupplierItem", "check_minOrderQty_positive"): ("SupplierItem", "SupplierItem_minOrderQty_check"),
}
DROPPED_TABLES = ("SupplierCatalog",)
RENAMED_COLUMNS = {("Order", "supplierId"): ("Order", "practiceSupplierId")}  # by STEP_3

# -- Ground truth of the problems database ------------------------------------------------------
# What seed_problems.sql did -> rows that break the rule now. Every count differs.
PROBLEMS: dict[str, dict] = {
    "dropped_check": {"table": "LocationInventory", "constraint": "LocationInventory_quantity_check",
                      "rule": '"quantity" >= 0', "rows": 3},
    "not_valid_check": {"table": "OrderItem", "constraint": "OrderItem_quantity_check",
                        "rule": '"quantity" > 0', "rows": 7},
    "not_valid_new_check": {"table": "StockAdjustment", "constraint": "StockAdjustment_quantity_check",
                            "rule": '"quantity" <> 0', "rows": 4},
    "dropped_fk_renamed_column": {"table": "Order", "constraint": "Order_practiceSupplierId_fkey",
                                  "column": "practiceSupplierId", "references": ("PracticeSupplier", "id"),
                                  "rows": 6},
    "dropped_new_check": {"table": "LocationInventory", "constraint": "LocationInventory_maxStock_check",
                          "rule": '"maxStock" > 0', "rows": 1},
    "dropped_not_null": {"table": "Location", "column": "name", "rows": 5},
    "dropped_unique": {"table": "Item", "constraint": "Item_practiceId_name_key",
                       "columns": ("practiceId", "name"), "rows": 2, "groups": 1},
}
