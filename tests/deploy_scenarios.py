"""Scenarios for the differential test of the deploy prediction against the real Prisma CLI.

A scenario is a database (a template, then setup SQL: data and `_prisma_migrations` changes)
and a migrations folder (the fixture's real migrations, a consolidated baseline, synthetic
migrations built from the statement kinds the prediction models). Each is predicted by the
exporter (`exporter.migrations.deploy.forecast`, read-only), then the real `prisma migrate
status` and `prisma migrate deploy` run on a copy; the failing statement and the rows each
UPDATE/DELETE touched come from running the same statements one by one on the original
copy afterwards (PostgreSQL's own answer), since Prisma reports only the migration.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg

from exporter.migrations.deploy import Outcome, forecast, session_query, split_statements
from exporter.migrations.history import read_folder, read_rows
from exporter.schema.catalog import introspect
from pglast import ast
from pglast.parser import ParseError
from prisma_cli_runner import PrismaCli
import venzory_next_fixture as next_app
from venzory_fixture import MIGRATIONS, STEP_6, STEPS

# -- templates ---------------------------------------------------------------------------------

NEXT = "next"  # the later app (tests/fixtures/venzory_next): its baseline and clean seed, 5 migrations pending
BEFORE = "before"  # steps 1-6, problems seed, the dropped foreign keys back as NOT VALID
CLEAN = "clean"  # all 11 steps, clean seed
EMPTY = "empty"  # no tables

RESTORE_FKS = """
ALTER TABLE "Order" ADD CONSTRAINT "Order_createdById_fkey" FOREIGN KEY ("createdById") REFERENCES "User"("id") ON DELETE RESTRICT ON UPDATE CASCADE NOT VALID;
ALTER TABLE "GoodsReceipt" ADD CONSTRAINT "GoodsReceipt_createdById_fkey" FOREIGN KEY ("createdById") REFERENCES "User"("id") ON DELETE RESTRICT ON UPDATE CASCADE NOT VALID;
ALTER TABLE "StockAdjustment" ADD CONSTRAINT "StockAdjustment_createdById_fkey" FOREIGN KEY ("createdById") REFERENCES "User"("id") ON DELETE RESTRICT ON UPDATE CASCADE NOT VALID;
ALTER TABLE "InventoryTransfer" ADD CONSTRAINT "InventoryTransfer_createdById_fkey" FOREIGN KEY ("createdById") REFERENCES "User"("id") ON DELETE RESTRICT ON UPDATE CASCADE NOT VALID;
ALTER TABLE "StockCountSession" ADD CONSTRAINT "StockCountSession_createdById_fkey" FOREIGN KEY ("createdById") REFERENCES "User"("id") ON DELETE RESTRICT ON UPDATE CASCADE NOT VALID;
ALTER TABLE "OrderTemplate" ADD CONSTRAINT "OrderTemplate_createdById_fkey" FOREIGN KEY ("createdById") REFERENCES "User"("id") ON DELETE RESTRICT ON UPDATE CASCADE NOT VALID;
ALTER TABLE "Order" ADD CONSTRAINT "Order_supplierId_fkey" FOREIGN KEY ("supplierId") REFERENCES "Supplier"("id") ON DELETE RESTRICT ON UPDATE CASCADE NOT VALID;
ALTER TABLE "Item" ADD CONSTRAINT "Item_defaultSupplierId_fkey" FOREIGN KEY ("defaultSupplierId") REFERENCES "Supplier"("id") ON DELETE RESTRICT ON UPDATE CASCADE NOT VALID;
"""

# -- fixes of the "before" data: applied as setup (data) or as a migration before step 7 ---------

_ORPHANS = [
    *(f'UPDATE "{t}" SET "createdById" = \'user_anna\' WHERE "createdById" NOT IN (SELECT "id" FROM "User");'
      for t in ("Order", "GoodsReceipt", "StockAdjustment", "InventoryTransfer", "StockCountSession", "OrderTemplate")),
    'UPDATE "Order" SET "supplierId" = NULL WHERE "supplierId" NOT IN (SELECT "id" FROM "Supplier");',
    'UPDATE "Item" SET "defaultSupplierId" = NULL WHERE "defaultSupplierId" NOT IN (SELECT "id" FROM "Supplier");',
]
_SUPPLIER_DUPS = [
    'UPDATE "GlobalSupplier" g SET "name" = g."name" || \' #\' || g."id" WHERE EXISTS '
    '(SELECT 1 FROM "GlobalSupplier" o WHERE o."name" = g."name" AND o."id" < g."id");',
    'UPDATE "Supplier" s SET "name" = s."name" || \' #\' || s."id" WHERE EXISTS '
    '(SELECT 1 FROM "Supplier" o WHERE o."practiceId" = s."practiceId" AND o."name" = s."name" AND o."id" < s."id");',
]
_ITEM_DUPS = [
    'UPDATE "Item" i SET "name" = i."name" || \' #\' || i."id" WHERE EXISTS '
    '(SELECT 1 FROM "Item" o WHERE o."practiceId" = i."practiceId" AND o."name" = i."name" AND o."id" < i."id");',
    'UPDATE "Item" i SET "sku" = i."sku" || \'-\' || i."id" WHERE i."sku" IS NOT NULL AND EXISTS '
    '(SELECT 1 FROM "Item" o WHERE o."practiceId" = i."practiceId" AND o."sku" = i."sku" AND o."id" < i."id");',
    'UPDATE "Location" l SET "code" = l."code" || \'-\' || l."id" WHERE l."code" IS NOT NULL AND EXISTS '
    '(SELECT 1 FROM "Location" o WHERE o."practiceId" = l."practiceId" AND o."code" = l."code" AND o."id" < l."id");',
]
# Simple enough to be modelled when they are a migration of their own.
_QUANTITIES = [
    'UPDATE "LocationInventory" SET "quantity" = 0 WHERE "quantity" < 0;',
    'UPDATE "OrderItem" SET "quantity" = 1 WHERE "quantity" <= 0;',
    'UPDATE "GoodsReceiptLine" SET "quantity" = 1 WHERE "quantity" <= 0;',
    'UPDATE "InventoryTransfer" SET "quantity" = 1 WHERE "quantity" <= 0;',
    'DELETE FROM "InventoryTransfer" WHERE "fromLocationId" = "toLocationId";',
    'DELETE FROM "StockAdjustment" WHERE "quantity" = 0;',
]
_STATUS = [
    'UPDATE "Order" SET "sentAt" = "updatedAt" WHERE "status" = \'SENT\' AND "sentAt" IS NULL;',
    'UPDATE "Order" SET "receivedAt" = "updatedAt" WHERE "status" = \'RECEIVED\' AND "receivedAt" IS NULL;',
    'UPDATE "GoodsReceipt" SET "receivedAt" = "updatedAt" WHERE "status" = \'CONFIRMED\' AND "receivedAt" IS NULL;',
]
_OPTIONAL = [
    'UPDATE "LocationInventory" SET "reorderPoint" = NULL WHERE "reorderPoint" < 0;',
    'UPDATE "LocationInventory" SET "reorderQuantity" = NULL WHERE "reorderQuantity" <= 0;',
    *(f'UPDATE "{t}" SET "unitPrice" = NULL WHERE "unitPrice" < 0;' for t in ("OrderItem", "SupplierItem", "SupplierCatalog")),
    *(f'UPDATE "{t}" SET "minOrderQty" = NULL WHERE "minOrderQty" <= 0;' for t in ("SupplierItem", "SupplierCatalog")),
]
SANITIZE_NAME = "20251111130000_sanitize_before_hardening"  # sorts before step 7


@dataclass(frozen=True)
class Scenario:
    name: str
    template: str
    setup: str = ""  # SQL run on the database before anything (as its owner)
    fixture_upto: str | None = None  # the fixture's migrations up to this one (None: all; "": none)
    extra: tuple[tuple[str, str], ...] = ()  # more migrations: (folder name, migration.sql)
    consolidated: bool = False  # the fixture's 11 migrations as one baseline folder instead
    with_status: bool = True  # also run `prisma migrate status` (1.5-3 s of CI time each)
    app: str = "venzory"  # whose migrations folder: "venzory" (runbook era) or "next" (the later app)


def _before_family() -> list[Scenario]:
    scenarios = []
    data_knobs = {"orphans": _ORPHANS, "supplier_dups": _SUPPLIER_DUPS, "item_dups": _ITEM_DUPS,
                  "quantities": _QUANTITIES, "status": _STATUS, "optional": _OPTIONAL}
    for mask in itertools.product((0, 1), repeat=6):
        chosen = [k for k, on in zip(data_knobs, mask) if on]
        setup = "\n".join(s for k in chosen for s in data_knobs[k])
        scenarios.append(Scenario(f"before/data[{'+'.join(chosen) or 'none'}]", BEFORE, setup))
    # The simple fixes as a migration of the folder (UPDATE/DELETE modelled), the others as data.
    migration_knobs = {"quantities": _QUANTITIES, "status": _STATUS, "optional": _OPTIONAL}
    data_only = {"orphans": _ORPHANS, "supplier_dups": _SUPPLIER_DUPS, "item_dups": _ITEM_DUPS}
    for mask in itertools.product((0, 1), repeat=3):
        in_migration = [k for k, on in zip(migration_knobs, mask) if on] or ["quantities"]
        sanitize = "\n".join(s for k in in_migration for s in migration_knobs[k])
        for data_mask in itertools.product((0, 1), repeat=3):
            as_data = [k for k, on in zip(data_only, data_mask) if on]
            setup = "\n".join(s for k in as_data for s in data_only[k])
            name = f"before/migration[{'+'.join(in_migration)}]/data[{'+'.join(as_data) or 'none'}]"
            scenarios.append(Scenario(name, BEFORE, setup, extra=((SANITIZE_NAME, sanitize),)))
    return scenarios


# Synthetic migrations on the clean, fully migrated database: (name, migration.sql, setups)
# where setups maps a data variant to its setup SQL.
_NEXT = "20251201000000_next"
_NEXT2 = "20251202000000_after_next"
_ENUM_REWRITE = """-- AlterEnum
BEGIN;
CREATE TYPE "StockCountStatus_new" AS ENUM ('IN_PROGRESS', 'COMPLETED');
ALTER TABLE "StockCountSession" ALTER COLUMN "status" DROP DEFAULT;
ALTER TABLE "StockCountSession" ALTER COLUMN "status" TYPE "StockCountStatus_new" USING ("status"::text::"StockCountStatus_new");
ALTER TYPE "StockCountStatus" RENAME TO "StockCountStatus_old";
ALTER TYPE "StockCountStatus_new" RENAME TO "StockCountStatus";
DROP TYPE "StockCountStatus_old";
ALTER TABLE "StockCountSession" ALTER COLUMN "status" SET DEFAULT 'IN_PROGRESS';
COMMIT;
"""
_CANCELLED_GONE = 'UPDATE "StockCountSession" SET "status" = \'COMPLETED\' WHERE "status" = \'CANCELLED\';'
_REORDER_CAP = 'ALTER TABLE "LocationInventory" ADD CONSTRAINT "check_reorder_cap" CHECK ("reorderPoint" IS NULL OR "reorderPoint" <= 1000);'
_BIG_REORDER = 'UPDATE "LocationInventory" SET "reorderPoint" = 5000 WHERE "reorderPoint" IS NOT NULL AND "itemId" IN (SELECT "id" FROM "Item" ORDER BY "id" LIMIT 3);'
_DUP_EMAILS = 'UPDATE "Supplier" SET "email" = \'dup@example.test\' WHERE "id" IN (SELECT "id" FROM "Supplier" ORDER BY "id" LIMIT 2);'
_NUMERIC_REFS = 'UPDATE "Order" SET "reference" = regexp_replace(coalesce("reference", \'0\'), \'[^0-9]\', \'\', \'g\');'
_SKUS = 'UPDATE "Item" SET "sku" = \'SKU-\' || "id" WHERE "sku" IS NULL;'

_BIG_ITEMS = ('UPDATE "OrderItem" SET "quantity" = 999 WHERE "orderId" IN '
              '(SELECT "id" FROM "Order" WHERE "status" {op} \'DRAFT\');')
_PREFERRED = ('INSERT INTO "PracticeSupplier" ("id", "practiceId", "globalSupplierId", "isPreferred", "updatedAt") '
              'SELECT \'ps_\' || "id", (SELECT min("id") FROM "Practice"), "id", {value}, now() FROM "GlobalSupplier" '
              'WHERE "id" NOT IN (SELECT "globalSupplierId" FROM "PracticeSupplier" WHERE "practiceId" = '
              '(SELECT min("id") FROM "Practice"));')
_GLOBAL = 'INSERT INTO "GlobalSupplier" ("id", "name", "updatedAt") VALUES '
_NO_PRACTICE_SUPPLIERS = ('UPDATE "Item" SET "defaultPracticeSupplierId" = NULL; UPDATE "Order" SET "practiceSupplierId" = NULL; '
                          'UPDATE "SupplierItem" SET "practiceSupplierId" = NULL; DELETE FROM "PracticeSupplier";')


def _do_if_missing(table: str, column: str, then: str) -> str:
    return ("DO $$\nBEGIN\n    IF NOT EXISTS (\n        SELECT 1 FROM information_schema.columns\n"
            f"        WHERE table_schema = current_schema() AND table_name = '{table}' AND column_name = '{column}'\n"
            f"    ) THEN\n        {then}\n    END IF;\nEND $$;")


SYNTHETIC: list[tuple[str, str, dict[str, str]]] = [
    ("check_added", _REORDER_CAP, {"clean": "", "violating": _BIG_REORDER}),
    ("update_then_check", 'UPDATE "LocationInventory" SET "reorderPoint" = 1000 WHERE "reorderPoint" > 1000;\n' + _REORDER_CAP,
     {"clean": "", "violating": _BIG_REORDER}),
    ("delete_then_check", 'DELETE FROM "LocationInventory" WHERE "reorderPoint" > 1000;\n' + _REORDER_CAP,
     {"clean": "", "violating": _BIG_REORDER}),
    ("unique_index", 'CREATE UNIQUE INDEX "Supplier_email_key" ON "Supplier"("email");', {"clean": "", "violating": _DUP_EMAILS}),
    ("null_then_unique", 'UPDATE "Supplier" SET "email" = NULL WHERE "email" = \'dup@example.test\';\n'
     'CREATE UNIQUE INDEX "Supplier_email_key" ON "Supplier"("email");', {"clean": "", "violating": _DUP_EMAILS}),
    ("unique_constraint", 'ALTER TABLE "Supplier" ADD CONSTRAINT "Supplier_email_key" UNIQUE ("email");',
     {"clean": "", "violating": _DUP_EMAILS}),
    ("set_not_null", 'ALTER TABLE "Item" ALTER COLUMN "sku" SET NOT NULL;', {"nulls": "", "filled": _SKUS}),
    ("fill_then_not_null", 'UPDATE "Item" SET "sku" = \'SKU-\' || "id" WHERE "sku" IS NULL;\n'
     'ALTER TABLE "Item" ALTER COLUMN "sku" SET NOT NULL;', {"nulls": "", "filled": _SKUS}),
    ("required_column", '-- AlterTable\nALTER TABLE "PracticeSupplier" ADD COLUMN "globalRef" TEXT NOT NULL;',
     {"rows": "", "empty": _NO_PRACTICE_SUPPLIERS}),
    ("required_column_default", 'ALTER TABLE "PracticeSupplier" ADD COLUMN "region" TEXT NOT NULL DEFAULT \'EU\';', {"rows": ""}),
    ("type_using", 'ALTER TABLE "Order" ALTER COLUMN "reference" SET DATA TYPE INTEGER USING ("reference"::integer);',
     {"text": "", "numeric": _NUMERIC_REFS}),
    ("type_no_using", 'ALTER TABLE "Order" ALTER COLUMN "reference" SET DATA TYPE INTEGER;', {"text": "", "numeric": _NUMERIC_REFS}),
    ("type_widen", 'ALTER TABLE "OrderItem" ALTER COLUMN "quantity" SET DATA TYPE BIGINT;', {"rows": ""}),
    ("type_to_text", 'ALTER TABLE "LocationInventory" ALTER COLUMN "reorderQuantity" SET DATA TYPE TEXT;', {"rows": ""}),
    ("enum_rewrite", _ENUM_REWRITE, {"cancelled_rows": "", "no_cancelled": _CANCELLED_GONE}),
    ("sanitize_then_enum_rewrite", _CANCELLED_GONE + "\n" + _ENUM_REWRITE, {"cancelled_rows": ""}),
    ("enum_rewrite_keeping_default", _ENUM_REWRITE.replace(
        'ALTER TABLE "StockCountSession" ALTER COLUMN "status" DROP DEFAULT;\n', ""), {"no_cancelled": _CANCELLED_GONE}),
    ("enum_rewrite_with_checks", _ENUM_REWRITE.replace("StockCountStatus", "GoodsReceiptStatus").replace(
        "StockCountSession", "GoodsReceipt").replace("'IN_PROGRESS', 'COMPLETED'", "'DRAFT', 'CONFIRMED'")
     .replace("SET DEFAULT 'IN_PROGRESS'", "SET DEFAULT 'DRAFT'"), {"rows": ""}),
    ("drop_leaf_table", 'DROP TABLE "OrderTemplate";', {"rows": ""}),
    ("drop_referenced_table", 'DROP TABLE "Supplier";', {"rows": ""}),
    ("drop_column", 'ALTER TABLE "Item" DROP COLUMN "sku";', {"rows": ""}),
    ("drop_referenced_column", 'ALTER TABLE "Practice" DROP COLUMN "id";', {"rows": ""}),
    ("foreign_key", 'ALTER TABLE "StockAdjustment" ADD CONSTRAINT "StockAdjustment_reason_fkey" FOREIGN KEY ("reason") '
     'REFERENCES "Location"("id") ON DELETE SET NULL ON UPDATE CASCADE;',
     {"orphans": 'UPDATE "StockAdjustment" SET "reason" = \'no such location\';', "none": 'UPDATE "StockAdjustment" SET "reason" = NULL;'}),
    ("insert_select_then_check", 'INSERT INTO "GlobalSupplier" ("id", "name", "updatedAt") SELECT "id" || \'-copy\', "name" || \' copy\', now() '
     'FROM "GlobalSupplier";\nALTER TABLE "GlobalSupplier" ADD CONSTRAINT "check_name" CHECK (length("name") < 10);', {"rows": ""}),
    ("do_block", 'DO $$ BEGIN UPDATE "Item" SET "unit" = \'pcs\' WHERE "unit" IS NULL; END $$;\n'
     'ALTER TABLE "Item" ALTER COLUMN "unit" SET NOT NULL;',
     {"rows": "", "nulls": 'UPDATE "Item" SET "unit" = NULL WHERE "id" IN (SELECT "id" FROM "Item" ORDER BY "id" LIMIT 3);'}),
    # DO blocks: the idempotent-DDL pattern (condition true / false), ELSIF/ELSE, and a LOOP left unevaluated.
    ("do_add_column_if_missing", _do_if_missing("PracticeSupplier", "globalRef",
                                                'ALTER TABLE "PracticeSupplier" ADD COLUMN "globalRef" TEXT NOT NULL;'),
     {"rows": "", "empty": _NO_PRACTICE_SUPPLIERS}),
    ("do_column_present_skipped", _do_if_missing("Item", "sku", 'ALTER TABLE "Item" ADD COLUMN "sku" TEXT NOT NULL;')
     + '\nCREATE INDEX "Item_sku_idx" ON "Item"("sku");', {"rows": ""}),
    ("do_check_if_missing", "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'check_reorder_cap') "
     f"THEN {_REORDER_CAP} END IF; END $$;", {"clean": "", "violating": _BIG_REORDER}),
    ("do_check_exists_then_skipped", _REORDER_CAP + "\nDO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM information_schema"
     ".table_constraints WHERE constraint_name = 'check_reorder_cap') THEN " + _REORDER_CAP + " END IF; END $$;",
     {"clean": "", "violating": _BIG_REORDER}),
    ("do_elsif_else", "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_type WHERE typname = 'NoSuchType') THEN "
     'DROP TABLE "Item"; ELSIF EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = \'no_such_idx\') THEN '
     'DROP TABLE "Item"; ELSE UPDATE "LocationInventory" SET "quantity" = "quantity" - 1000 WHERE "reorderPoint" > 1000; '
     "END IF; END $$;", {"clean": "", "violating": _BIG_REORDER}),
    ("do_loop", 'DO $$ BEGIN LOOP UPDATE "Item" SET "unit" = \'pcs\' WHERE "unit" IS NULL; EXIT; END LOOP; END $$;\n'
     'ALTER TABLE "Item" ALTER COLUMN "unit" SET NOT NULL;', {"rows": ""}),
    # INSERT: VALUES with defaults, conflicts it raises itself, INSERT ... SELECT, ON CONFLICT left unevaluated.
    ("insert_values", _GLOBAL + "('g_new1', 'Fresh One', now()), ('g_new2', 'Fresh Two', CURRENT_TIMESTAMP);\n"
     'CREATE UNIQUE INDEX "GlobalSupplier_email_key" ON "GlobalSupplier"("email");',
     {"clean": "", "name_taken": _GLOBAL + "('g_old', 'Fresh Two', now());"}),
    ("insert_missing_required", 'INSERT INTO "GlobalSupplier" ("id", "name") VALUES (\'g_new\', \'Fresh\');', {"rows": ""}),
    ("insert_missing_parent", 'INSERT INTO "PracticeSupplier" ("id", "practiceId", "globalSupplierId", "updatedAt") '
     "SELECT 'ps_' || \"id\", \"id\", 'g_parent', now() FROM \"Practice\";",
     {"no_parent": "", "parent": _GLOBAL + "('g_parent', 'Parent', now());"}),
    ("insert_then_check", _GLOBAL + "('g_new', 'Fresh', now());\n"
     'ALTER TABLE "GlobalSupplier" ADD CONSTRAINT "check_email" CHECK ("email" IS NOT NULL);',
     {"rows": "", "emails": 'UPDATE "GlobalSupplier" SET "email" = "id" || \'@example.test\';'}),
    ("insert_integer_into_boolean", _PREFERRED.format(value="1"), {"rows": ""}),
    ("insert_boolean", _PREFERRED.format(value="true"), {"rows": ""}),
    ("insert_on_conflict", _GLOBAL + "('g_new', 'Fresh', now()) ON CONFLICT DO NOTHING;", {"rows": ""}),
    # ON DELETE CASCADE / SET NULL: the children change, and a later check sees them as they will be.
    ("delete_cascade_then_check", 'DELETE FROM "Order" WHERE "status" = \'DRAFT\';\n'
     'ALTER TABLE "OrderItem" ADD CONSTRAINT "check_small_quantity" CHECK ("quantity" < 500);',
     {"draft_big": _BIG_ITEMS.format(op="="), "sent_big": _BIG_ITEMS.format(op="<>")}),
    ("delete_set_null_into_not_null", 'UPDATE "Order" SET "createdById" = \'user_anna\' WHERE "createdById" IS NULL;\n'
     'ALTER TABLE "Order" ALTER COLUMN "createdById" SET NOT NULL;\n'
     'DELETE FROM "User" WHERE "id" = \'user_ben\';\n'
     'ALTER TABLE "OrderTemplate" ADD CONSTRAINT "check_creator" CHECK ("createdById" IS NOT NULL);',
     {"orders": "", "reassigned": 'UPDATE "Order" SET "createdById" = \'user_anna\' WHERE "createdById" = \'user_ben\'; '
      'UPDATE "OrderTemplate" SET "createdById" = \'user_anna\';'}),
    ("create_existing_type", 'CREATE TYPE "OrderStatus" AS ENUM (\'A\');', {"rows": ""}),
    ("create_existing_table", 'CREATE TABLE "Item" ("id" TEXT NOT NULL);', {"rows": ""}),
    ("update_violates_check", 'UPDATE "LocationInventory" SET "quantity" = "quantity" - 1000 WHERE "reorderPoint" > 1000;',
     {"clean": "", "violating": _BIG_REORDER}),
    ("delete_restricted_parent", 'DELETE FROM "Item" WHERE "id" IN (\'x\') OR "name" LIKE \'%\';', {"rows": ""}),
    ("syntax_error", 'ALTER TABLE "Item" ADD COLUMN "x" TEXT;\nALTER TABL "Item" DROP COLUMN "x";', {"rows": ""}),
    ("concurrently_in_script", 'CREATE INDEX CONCURRENTLY "Item_name_idx" ON "Item"("name");\n'
     'ALTER TABLE "Item" ADD COLUMN "x" TEXT;', {"rows": ""}),
    ("concurrently_alone", 'CREATE INDEX CONCURRENTLY "Item_name_idx" ON "Item"("name");', {"rows": ""}),
    ("add_value_then_use", 'ALTER TYPE "OrderStatus" ADD VALUE \'ARCHIVED\';\nALTER TABLE "Order" ADD CONSTRAINT '
     '"check_archived" CHECK ("status" <> \'ARCHIVED\' OR "receivedAt" IS NOT NULL);', {"rows": ""}),
    ("add_value", 'ALTER TYPE "OrderStatus" ADD VALUE \'ARCHIVED\';', {"rows": ""}),
    ("rename_then_check", 'ALTER TABLE "LocationInventory" RENAME COLUMN "reorderPoint" TO "minStock";\n'
     'ALTER TABLE "LocationInventory" ADD CONSTRAINT "check_min_stock" CHECK ("minStock" IS NULL OR "minStock" <= 1000);',
     {"clean": "", "violating": _BIG_REORDER}),
    ("drop_missing_index", 'DROP INDEX "nope_idx";', {"rows": ""}),
    ("drop_missing_index_if_exists", 'DROP INDEX IF EXISTS "nope_idx";', {"rows": ""}),
    ("unknown_column_check", 'ALTER TABLE "Item" ADD CONSTRAINT "check_x" CHECK ("nope" > 0);', {"rows": ""}),
]


def _synthetic_family() -> list[Scenario]:
    scenarios = []
    for name, sql, setups in SYNTHETIC:
        for variant, setup in setups.items():
            scenarios.append(Scenario(f"clean/{name}[{variant}]", CLEAN, setup, extra=((_NEXT, sql + "\n"),)))
    # Two migrations: the first's effects seen by the second; a failure in the first leaves the second not reached.
    sanitize = 'UPDATE "LocationInventory" SET "reorderPoint" = 1000 WHERE "reorderPoint" > 1000;\n'
    for variant, setup in {"clean": "", "violating": _BIG_REORDER}.items():
        scenarios.append(Scenario(f"clean/two[sanitize,check][{variant}]", CLEAN, setup,
                                  extra=((_NEXT, sanitize), (_NEXT2, _REORDER_CAP + "\n"))))
        scenarios.append(Scenario(f"clean/two[check,sanitize][{variant}]", CLEAN, setup,
                                  extra=((_NEXT, _REORDER_CAP + "\n"), (_NEXT2, sanitize))))
    return scenarios


_FAILED_ROW = ("INSERT INTO _prisma_migrations (id, checksum, migration_name, logs, started_at, applied_steps_count) "
               "VALUES ('{id}', 'x', '{name}', 'Database error code: 23514', now(), 0);")
_ROLLED_BACK_ROW = ("INSERT INTO _prisma_migrations (id, checksum, migration_name, logs, started_at, rolled_back_at, "
                    "applied_steps_count) VALUES ('{id}', 'x', '{name}', 'Database error code: 23514', now(), now(), 0);")
_OLD_HISTORY = "UPDATE _prisma_migrations SET migration_name = 'old_' || migration_name;"


def _history_family() -> list[Scenario]:
    scenarios = []
    picks = [(n, sql, s) for n, sql, s in SYNTHETIC if n in ("check_added", "required_column", "enum_rewrite",
                                                             "update_then_check", "unique_index")]
    for name, sql, setups in picks:
        for variant, setup in setups.items():
            extra = ((_NEXT, sql + "\n"),)
            failed = _FAILED_ROW.format(id="00000000-0000-0000-0000-000000000001", name=_NEXT)
            rolled = _ROLLED_BACK_ROW.format(id="00000000-0000-0000-0000-000000000002", name=_NEXT)
            scenarios.append(Scenario(f"history/failed_recorded/{name}[{variant}]", CLEAN, setup + "\n" + failed, extra=extra))
            scenarios.append(Scenario(f"history/rolled_back/{name}[{variant}]", CLEAN, setup + "\n" + rolled, extra=extra))
            scenarios.append(Scenario(f"history/diverged_baseline/{name}[{variant}]", CLEAN, setup + "\n" + _OLD_HISTORY,
                                      extra=extra, consolidated=True))
    # A database that is `step 6` with failed step 7 recorded, then rolled back.
    rolled7 = _ROLLED_BACK_ROW.format(id="00000000-0000-0000-0000-000000000003", name=STEPS[6])
    scenarios.append(Scenario("history/before/rolled_back_step7[all fixed]", BEFORE,
                              "\n".join(_ORPHANS + _SUPPLIER_DUPS + _ITEM_DUPS + _QUANTITIES + _STATUS + _OPTIONAL) + rolled7))
    scenarios.append(Scenario("history/before/failed_step7", BEFORE,
                              _FAILED_ROW.format(id="00000000-0000-0000-0000-000000000004", name=STEPS[6])))
    scenarios.append(Scenario("history/not_managed", CLEAN, "DROP TABLE _prisma_migrations;"))
    scenarios.append(Scenario("history/missing_from_folder", CLEAN, "", fixture_upto=STEPS[8]))
    scenarios.append(Scenario("history/up_to_date", CLEAN, ""))
    scenarios.append(Scenario("history/diverged_middle", CLEAN,
                              f"UPDATE _prisma_migrations SET migration_name = 'renamed' WHERE migration_name = '{STEPS[5]}';"))
    scenarios.append(Scenario("empty/fixture_and_next", EMPTY, "", extra=((_NEXT, _REORDER_CAP + "\n"),)))
    scenarios.append(Scenario("empty/consolidated", EMPTY, "", consolidated=True))
    return scenarios


_NEXT_KNOBS = {
    "negative_stock": 'UPDATE "LocationInventory" SET "quantity" = -5 WHERE ("locationId", "itemId") IN '
                      '(SELECT "locationId", "itemId" FROM "LocationInventory" ORDER BY 1, 2 LIMIT 3);',
    "zero_adjustments": 'UPDATE "StockAdjustment" SET "quantity" = 0 WHERE "id" IN (SELECT "id" FROM "StockAdjustment" '
                        'ORDER BY "id" LIMIT 2);',
    "templates": 'INSERT INTO "OrderTemplate" ("id", "practiceId", "name", "updatedAt") '
                 'SELECT \'tpl_\' || g, (SELECT min("id") FROM "Practice"), \'Template \' || g, now() FROM generate_series(1, 4) g;',
    "cancelled_count": 'UPDATE "StockCountSession" SET "status" = \'CANCELLED\' WHERE "id" = (SELECT min("id") FROM "StockCountSession");',
}


def _next_family() -> list[Scenario]:
    """The issue's reproductions, on the later app's real migrations: a data-cleaning migration
    before its constraints, a required column without default, a Prisma enum rewrite, and an
    old history against the consolidated folder."""
    scenarios = []
    for mask in itertools.product((0, 1), repeat=len(_NEXT_KNOBS)):
        chosen = [k for k, on in zip(_NEXT_KNOBS, mask) if on]
        setup = "\n".join(_NEXT_KNOBS[k] for k in chosen)
        scenarios.append(Scenario(f"next/data[{'+'.join(chosen) or 'none'}]", NEXT, setup, app="next",
                                  with_status=not chosen))
    for variant, setup in {"clean": "", "problems": _BIG_REORDER}.items():
        scenarios.append(Scenario(f"next/old_history_against_consolidated_folder[{variant}]", CLEAN, setup, app="next"))
    return scenarios


def all_scenarios() -> list[Scenario]:
    """Every scenario; `migrate status` runs for the history family (where its verdict
    varies) and for every fourth of the others (where it is "pending" by construction)."""
    plain = [s if i % 4 == 0 else replace(s, with_status=False)
             for i, s in enumerate(_before_family() + _synthetic_family())]
    return plain + _history_family() + _next_family()


# -- running one -------------------------------------------------------------------------------


@dataclass
class Observed:
    """One side's answer for a scenario (predicted, or real)."""

    outcome: str  # passes | fails | refused | cannot_evaluate
    failing_migration: str | None = None
    failing_statement: int | None = None  # 1-based; 0 for a script PostgreSQL cannot parse
    rows_inserted: int | None = None
    rows_updated: int | None = None
    rows_deleted: int | None = None
    status: str | None = None
    detail: str = ""


@dataclass
class Comparison:
    scenario: Scenario
    predicted: Observed
    real: Observed
    fields: dict[str, bool | None] = field(default_factory=dict)  # field -> agrees (None: abstained)

    @property
    def predicted_success_but_failed(self) -> bool:
        return self.predicted.outcome == Outcome.PASSES and self.real.outcome != Outcome.PASSES


FIELDS = ("outcome", "failing_migration", "failing_statement", "rows_inserted", "rows_updated", "rows_deleted", "status")


class Lab:
    """Template databases and scenario databases on the test server."""

    def __init__(self, pg_server):
        self.pg = pg_server
        self._create = threading.Lock()  # CREATE DATABASE ... TEMPLATE one at a time
        self._count = itertools.count()
        self.templates: dict[str, str] = {}

    def build_templates(self) -> None:
        from venzory_fixture import build_database

        self.templates[BEFORE] = "dtpl_before"
        dsn = build_database(self.pg, "dtpl_before", upto=STEP_6, seed="problems")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(RESTORE_FKS)
        build_database(self.pg, "dtpl_clean", seed="clean")
        self.templates[CLEAN] = "dtpl_clean"
        self.pg.create_database("dtpl_empty")
        self.templates[EMPTY] = "dtpl_empty"
        next_app.build_database(self.pg, "dtpl_next", upto=next_app.STEP_1, seed="clean")
        self.templates[NEXT] = "dtpl_next"

    def clone(self, template: str) -> str:
        name = f"dsc_{next(self._count)}"
        with self._create, psycopg.connect(self.pg.admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop(self, name: str) -> None:
        with psycopg.connect(self.pg.admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def folder(self, scenario: Scenario) -> Path:
        root = Path(tempfile.mkdtemp(prefix="venzory-deploy-"))
        (root / "migration_lock.toml").write_text('provider = "postgresql"\n')
        names = list(STEPS) if scenario.fixture_upto is None else list(STEPS[: STEPS.index(scenario.fixture_upto) + 1]) \
            if scenario.fixture_upto else []
        if scenario.app == "next":
            for n in next_app.STEPS:
                shutil.copytree(next_app.MIGRATIONS / n, root / n)
        elif scenario.consolidated:
            text = "\n".join((MIGRATIONS / n / "migration.sql").read_text() for n in STEPS)
            (root / "20251130000000_init").mkdir()
            (root / "20251130000000_init" / "migration.sql").write_text(text)
        else:
            for n in names:
                shutil.copytree(MIGRATIONS / n, root / n)
        for name, sql in scenario.extra:
            (root / name).mkdir()
            (root / name / "migration.sql").write_text(sql)
        return root

    def run(self, scenario: Scenario) -> Comparison:
        p_name = self.clone(self.templates[scenario.template])
        folder = self.folder(scenario)
        a_name = None
        try:
            p_dsn = self.pg.dsn(p_name)
            if scenario.setup.strip():
                with psycopg.connect(p_dsn, autocommit=True) as conn:
                    conn.execute(scenario.setup)
            predicted, fc = self._predict(p_dsn, folder)
            a_name = self.clone(p_name)
            real = self._real(self.pg.dsn(a_name), folder, scenario.with_status)
            if real.outcome in (Outcome.PASSES, Outcome.FAILS):
                self._stepwise(p_dsn, folder, fc.view.not_applied, real)
            return _compare(scenario, predicted, real)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            self.drop(p_name)
            if a_name:
                self.drop(a_name)

    def _predict(self, dsn: str, folder: Path):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET default_transaction_read_only = on")
            rows = read_rows(conn)
            fc = forecast(rows, read_folder(folder), introspect(conn), session_query(conn))
        d = fc.deploy
        failure = d.failure
        inserted = updated = deleted = 0
        for m in d.migrations:
            for s in m.statements:
                inserted += s.rows_inserted
                updated += s.rows_updated
                deleted += s.rows_deleted
        statement = None
        if failure:
            statement = 0 if failure[1].sqlstate == "42601" else failure[1].number
        return Observed(d.outcome.value, failure[0] if failure else None, statement,
                        inserted, updated, deleted, fc.view.status.value, d.summary()), fc

    def _real(self, dsn: str, folder: Path, with_status: bool) -> Observed:
        cli = PrismaCli(folder)
        try:
            status = cli.status(dsn) if with_status else None
            deploy = cli.deploy(dsn)
        finally:
            cli.close()
        verdict = _status_verdict(status.exit_code, status.output) if status else None
        if deploy.exit_code == 0:
            return Observed(Outcome.PASSES.value, status=verdict, detail="")
        if any(m in deploy.output for m in ("P3009", "P3005", "found failed migrations", "schema is not empty")):
            return Observed(Outcome.REFUSED.value, status=verdict, detail=_last_error(deploy.output))
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NULL AND "
                               "rolled_back_at IS NULL ORDER BY started_at DESC LIMIT 1").fetchone()
        return Observed(Outcome.FAILS.value, row[0] if row else None, status=verdict, detail=_last_error(deploy.output))

    def _stepwise(self, dsn: str, folder: Path, names: tuple[str, ...], real: Observed) -> None:
        """Run the statements one by one for the failing statement and the rows each
        UPDATE/DELETE touched, as PostgreSQL reports them: one transaction per migration, as
        deploy runs them (a label added by one migration is usable by the next)."""
        touched = {"inserted": 0, "updated": 0, "deleted": 0}
        with psycopg.connect(dsn) as conn:
            for name in names:
                conn.execute("SELECT 1")  # opens the migration's transaction: each statement is a savepoint in it
                failed_at = _run_migration(conn, (folder / name / "migration.sql").read_text(), touched)
                if failed_at is None:
                    conn.commit()
                    continue
                number, error = failed_at
                if real.failing_migration == name:
                    real.failing_statement = number
                real.detail = real.detail or error
                break
            conn.rollback()
        real.rows_inserted, real.rows_updated, real.rows_deleted = touched["inserted"], touched["updated"], touched["deleted"]


def _run_migration(conn: psycopg.Connection, text: str, touched: dict[str, int]) -> tuple[int, str] | None:
    """(statement number, error) of the first statement that fails (0: the script does not
    parse), or None; INSERT/UPDATE/DELETE row counts added to `touched`."""
    try:
        statements = split_statements(text)
    except ParseError as e:
        return 0, str(e)
    for s in statements:
        if isinstance(s.node, ast.TransactionStmt):
            continue
        if isinstance(s.node, ast.IndexStmt) and s.node.concurrent and len(statements) == 1:
            continue  # alone it runs outside a transaction, as deploy sends it
        before = _rows_touched_in_transaction(conn) if isinstance(s.node, ast.DoStmt) else None
        try:
            with conn.transaction():
                cur = conn.execute(s.text)
        except psycopg.Error as e:
            return s.number, f"{e.sqlstate} {str(e).splitlines()[0]}"
        if before is not None:  # a DO block reports no row count: the transaction's statistics do
            for key, was, now in zip(("inserted", "updated", "deleted"), before, _rows_touched_in_transaction(conn)):
                touched[key] += now - was
        elif type(s.node) in _COUNTED:
            touched[_COUNTED[type(s.node)]] += max(cur.rowcount, 0)
    return None


_COUNTED: dict[type, str] = {ast.InsertStmt: "inserted", ast.UpdateStmt: "updated", ast.DeleteStmt: "deleted"}


def _rows_touched_in_transaction(conn: psycopg.Connection) -> tuple[int, int, int]:
    """(rows inserted, updated, deleted) by the current transaction so far, all tables."""
    row = conn.execute("SELECT coalesce(sum(n_tup_ins), 0), coalesce(sum(n_tup_upd), 0), coalesce(sum(n_tup_del), 0) "
                       "FROM pg_stat_xact_user_tables").fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _status_verdict(exit_code: int, output: str) -> str:
    if "last common migration" in output:
        return "diverged"
    if "not yet been applied" in output:
        return "pending"
    if "have failed" in output or "failed migration" in output.lower():
        return "failed"
    if exit_code == 0 and "up to date" in output:
        return "up_to_date"
    return f"unknown (exit {exit_code})"


def _last_error(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("Error querying the database", "Error: P", "ERROR")) or "Database error" in line:
            return line.strip()[:200]
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _compare(scenario: Scenario, predicted: Observed, real: Observed) -> Comparison:
    c = Comparison(scenario, predicted, real)
    if predicted.outcome == Outcome.CANNOT_EVALUATE:
        c.fields = {f: None for f in FIELDS}
        c.fields["status"] = predicted.status == real.status if real.status else None
        return c
    c.fields["outcome"] = predicted.outcome == real.outcome
    c.fields["failing_migration"] = predicted.failing_migration == real.failing_migration
    both_ran = real.outcome in (Outcome.PASSES, Outcome.FAILS)
    c.fields["failing_statement"] = predicted.failing_statement == real.failing_statement if both_ran else True
    c.fields["rows_inserted"] = predicted.rows_inserted == real.rows_inserted if both_ran else True
    c.fields["rows_updated"] = predicted.rows_updated == real.rows_updated if both_ran else True
    c.fields["rows_deleted"] = predicted.rows_deleted == real.rows_deleted if both_ran else True
    c.fields["status"] = predicted.status == real.status if real.status else None
    return c


def agreement_table(comparisons: list[Comparison]) -> str:
    lines = ["| field | agree | disagree | not compared (cannot_evaluate; status not run) |", "|---|---|---|---|"]
    for f in FIELDS:
        values = [c.fields.get(f) for c in comparisons]
        lines.append(f"| {f} | {values.count(True)} | {values.count(False)} | {values.count(None)} |")
    false_success = sum(c.predicted_success_but_failed for c in comparisons)
    lines.append(f"| **predicted success, real deploy failed** | | **{false_success}** | |")
    return "\n".join(lines)


def scenario_counts(comparisons: list[Comparison]) -> str:
    by_real = {}
    for c in comparisons:
        by_real[c.real.outcome] = by_real.get(c.real.outcome, 0) + 1
    return ", ".join(f"{n} real {k}" for k, n in sorted(by_real.items()))


def describe(c: Comparison) -> str:
    wrong = [f for f, ok in c.fields.items() if ok is False]
    return (f"{c.scenario.name}: {', '.join(wrong)}\n    predicted {c.predicted}\n    real      {c.real}")

