"""The Venzory test fixture: a small, faithful Prisma project and databases built from it.

    tests/fixtures/venzory/
      prisma/schema.prisma          the final schema (what the app's repository holds)
      prisma/migrations/            the 11 migrations of the runbook era + migration_lock.toml
      seed_clean.sql                valid data for a database with all 11 steps applied
      seed_problems.sql             broken data for a database with steps 1-6 only

`build_database` creates a database on the test server, applies the migrations like
`prisma migrate deploy` and loads a seed. PROBLEM_VIOLATIONS and PROBLEM_DUPLICATES are the
ground truth of the problems database (proven by plain SQL in tests/test_fixture.py); the
clean database has 0 for every check.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from exporter.migrations.replay import apply_migrations

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "venzory"
PRISMA = FIXTURE / "prisma"
MIGRATIONS = PRISMA / "migrations"
SCHEMA_PRISMA = PRISMA / "schema.prisma"
SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config" / "venzory.yaml"
SEEDS = {"clean": FIXTURE / "seed_clean.sql", "problems": FIXTURE / "seed_problems.sql"}

STEP_1 = "20251105171437_init"
STEP_2 = "20251106200124_add_gs1_foundation"
STEP_3 = "20251108011331_add_receiving_module"
STEP_4 = "20251108113748_remove_order_item_receipt"
STEP_5 = "20251111112724_add_global_and_practice_suppliers"
STEP_6 = "20251111122948_add_practice_supplier_to_orders_items"
STEP_7 = "20251111140000_add_ondelete_policies_and_constraints"
STEP_8 = "20251111140500_add_partially_received_status"
STEP_9 = "20251111141000_add_check_constraints"
STEP_10 = "20251113180000_add_unique_constraints_items_locations"
STEP_11 = "20251116000000_formalize_remaining_drift"
STEPS = (STEP_1, STEP_2, STEP_3, STEP_4, STEP_5, STEP_6, STEP_7, STEP_8, STEP_9, STEP_10, STEP_11)
HARDENING_STEPS = (STEP_7, STEP_9, STEP_10)  # the runbook's "constraint hardening"


def build_database(pg_server, name: str, *, upto: str | None = None, seed: str | None = None,
                   record: bool = True) -> str:
    """Create database `name` (dropped first if it exists), apply the migrations up to and
    including `upto` (all when None), load `seed` ("clean", "problems" or None); return its DSN.

    The clean seed needs all 11 steps; the problems seed needs exactly steps 1-6 (`upto`
    defaults to STEP_6 for it). With `record=False` no `_prisma_migrations` table is made.
    """
    if seed == "problems":
        upto = upto or STEP_6
        if upto != STEP_6:
            raise ValueError("the problems seed is for a database with steps 1-6 (upto=STEP_6)")
    elif seed == "clean":
        if upto not in (None, STEP_11):
            raise ValueError("the clean seed is for a database with all migrations applied")
    elif seed is not None:
        raise ValueError(f"unknown seed {seed!r}: expected 'clean', 'problems' or None")
    dsn = pg_server.create_database(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        apply_migrations(conn, MIGRATIONS, upto=upto, record=record)
        if seed is not None:
            conn.execute(SEEDS[seed].read_text(encoding="utf-8"))  # one script, no parameters
    return dsn


# -- Ground truth of the problems database (steps 1-6 + seed_problems.sql) ----------------------
# Row and orphan checks -> rows that violate them. Every non-zero count is different, so a
# result reported under the wrong check is caught. Three rows break two rules on purpose:
# a LocationInventory row (negative quantity and reorderPoint), an InventoryTransfer (quantity 0
# and from = to), an Order (SENT without sentAt, created by a deleted user).
PROBLEM_VIOLATIONS: dict[str, int] = {
    "order_partially_received_has_received_at": 0,  # the enum value only arrives in step 8
    "inventory_transfer_different_locations": 1,
    "location_inventory_reorder_point_non_negative": 2,
    "location_inventory_negative_quantity": 3,
    "location_inventory_reorder_quantity_positive": 4,
    "order_item_quantity_positive": 5,
    "goods_receipt_line_quantity_positive": 6,
    "inventory_transfer_quantity_positive": 7,
    "stock_adjustment_quantity_not_zero": 8,
    "order_sent_has_sent_at": 9,
    "order_received_has_received_at": 10,
    "goods_receipt_confirmed_has_received_at": 11,
    "order_item_unit_price_non_negative": 12,
    "supplier_item_unit_price_non_negative": 13,
    "supplier_catalog_unit_price_non_negative": 14,
    "supplier_item_min_order_qty_positive": 15,
    "supplier_catalog_min_order_qty_positive": 16,
    "order_created_by_orphan": 17,
    "goods_receipt_created_by_orphan": 18,
    "stock_adjustment_created_by_orphan": 19,
    "inventory_transfer_created_by_orphan": 20,
    "stock_count_session_created_by_orphan": 21,
    "order_template_created_by_orphan": 22,
    "order_supplier_orphan": 23,
    "item_default_supplier_orphan": 24,
}

# Duplicate checks -> (groups, rows involved). Groups and rows all differ; three checks
# have a group of 3, so rows != 2 * groups.
PROBLEM_DUPLICATES: dict[str, tuple[int, int]] = {
    "location_code_duplicate": (1, 2),          # Location (practiceId, code), code not null
    "item_name_duplicate": (2, 5),              # Item (practiceId, name)
    "item_sku_duplicate": (3, 7),               # Item (practiceId, sku), sku not null
    "supplier_name_duplicate": (4, 9),          # Supplier (practiceId, name)
    "global_supplier_name_duplicate": (5, 10),  # GlobalSupplier (name)
}

# -- The hardened schema, as venzory-schema.md states it ------------------------------------------
# CHECK constraints of step 9: (table, name) -> rule. Names repeat across tables.
CHECK_CONSTRAINTS: dict[tuple[str, str], str] = {
    ("LocationInventory", "check_quantity_non_negative"): '"quantity" >= 0',
    ("OrderItem", "check_quantity_positive"): '"quantity" > 0',
    ("GoodsReceiptLine", "check_quantity_positive"): '"quantity" > 0',
    ("InventoryTransfer", "check_quantity_positive"): '"quantity" > 0',
    ("InventoryTransfer", "check_different_locations"): '"fromLocationId" <> "toLocationId"',
    ("StockAdjustment", "check_quantity_not_zero"): '"quantity" <> 0',
    ("Order", "check_sent_has_sentAt"): "\"status\" <> 'SENT' OR \"sentAt\" IS NOT NULL",
    ("Order", "check_received_has_receivedAt"): "\"status\" <> 'RECEIVED' OR \"receivedAt\" IS NOT NULL",
    ("Order", "check_partially_received_has_receivedAt"):
        "\"status\" <> 'PARTIALLY_RECEIVED' OR \"receivedAt\" IS NOT NULL",
    ("GoodsReceipt", "check_confirmed_has_receivedAt"): "\"status\" <> 'CONFIRMED' OR \"receivedAt\" IS NOT NULL",
    ("LocationInventory", "check_reorder_point_non_negative"): '"reorderPoint" IS NULL OR "reorderPoint" >= 0',
    ("LocationInventory", "check_reorder_quantity_positive"): '"reorderQuantity" IS NULL OR "reorderQuantity" > 0',
    ("OrderItem", "check_unitPrice_non_negative"): '"unitPrice" IS NULL OR "unitPrice" >= 0',
    ("SupplierItem", "check_unitPrice_non_negative"): '"unitPrice" IS NULL OR "unitPrice" >= 0',
    ("SupplierCatalog", "check_unitPrice_non_negative"): '"unitPrice" IS NULL OR "unitPrice" >= 0',
    ("SupplierItem", "check_minOrderQty_positive"): '"minOrderQty" IS NULL OR "minOrderQty" > 0',
    ("SupplierCatalog", "check_minOrderQty_positive"): '"minOrderQty" IS NULL OR "minOrderQty" > 0',
}

# The runbook's six unique constraints/indexes: name -> (table, columns, partial predicate).
UNIQUE_INDEXES: dict[str, tuple[str, tuple[str, ...], str | None]] = {
    "Item_practiceId_name_key": ("Item", ("practiceId", "name"), None),
    "Item_practiceId_sku_key": ("Item", ("practiceId", "sku"), '"sku" IS NOT NULL'),
    "Location_practiceId_code_key": ("Location", ("practiceId", "code"), '"code" IS NOT NULL'),
    "PracticeUser_practiceId_userId_key": ("PracticeUser", ("practiceId", "userId"), None),
    "GlobalSupplier_name_key": ("GlobalSupplier", ("name",), None),
    "Supplier_practiceId_name_key": ("Supplier", ("practiceId", "name"), None),
}

# The tables whose createdById step 7 makes nullable with an ON DELETE SET NULL foreign key.
CREATED_BY_TABLES = ("Order", "GoodsReceipt", "StockAdjustment", "InventoryTransfer",
                     "StockCountSession", "OrderTemplate")

ENUMS: dict[str, tuple[str, ...]] = {
    "OrderStatus": ("DRAFT", "SENT", "RECEIVED", "CANCELLED", "PARTIALLY_RECEIVED"),
    "GoodsReceiptStatus": ("DRAFT", "CONFIRMED", "CANCELLED"),
    "StockCountStatus": ("IN_PROGRESS", "COMPLETED", "CANCELLED"),
    "PracticeRole": ("ADMIN", "STAFF", "VIEWER"),
    "MembershipStatus": ("INVITED", "ACTIVE", "SUSPENDED"),
    "IntegrationType": ("MANUAL", "CSV", "API", "EDI"),
}

# The "known drift" of the runbook: in schema.prisma, formalized only by step 11.
KNOWN_DRIFT = {
    "column": ("LocationInventory", "createdAt"),
    "indexes": ("Order_practiceId_status_createdAt_idx", "LocationInventory_itemId_reorderPoint_quantity_idx"),
}
