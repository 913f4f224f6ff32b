"""Drift on real PostgreSQL: the fixture's migrations build a database; tampered copies of
it must produce exactly the expected drift items, from both sources of "expected".

- source "migrations": expected = the catalog of an untouched copy (what a shadow replay of
  the folder gives), so everything is compared;
- source "schema_prisma": expected = to_schema(schema.prisma), which cannot say CHECK
  constraints, partial predicates or NOT VALID - tampering with those is not its drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
import pytest

from exporter.schema.catalog import introspect
from exporter.schema.diff import (
    DriftItem,
    DriftKind,
    DriftSource,
    acknowledge,
    diff_schemas,
)
from exporter.schema.model import Column, Constraint, ConstraintKind, Index, Schema, Table
from exporter.schema.prisma import parse_prisma_schema, to_schema
from venzory_fixture import KNOWN_DRIFT, SCHEMA_PRISMA as SCHEMA_PRISMA_FILE, STEP_10, build_database

BASE = "drift_base"


@pytest.fixture(scope="module")
def base(pg_server) -> Schema:
    """A fully migrated fixture database (with its _prisma_migrations), the template of the copies."""
    dsn = build_database(pg_server, BASE)
    with psycopg.connect(dsn) as conn:
        return introspect(conn)


@pytest.fixture(scope="module")
def prisma_expected() -> Schema:
    return to_schema(parse_prisma_schema(SCHEMA_PRISMA_FILE.read_text(encoding="utf-8")))


def tampered_copy(pg_server, name: str, statements: list[str]) -> Schema:
    """A copy of the base database (CREATE DATABASE ... TEMPLATE) after `statements`."""
    name = database_name(name)
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{BASE}"')
    with psycopg.connect(pg_server.dsn(name), autocommit=True) as conn:
        for statement in statements:  # one by one: CREATE INDEX CONCURRENTLY refuses a script
            conn.execute(statement)
        return introspect(conn)


def database_name(text: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", text.lower())[:60]


def kinds_and_objects(items: list[DriftItem]) -> list[tuple[str, str]]:
    return [(i.kind, i.object) for i in items]


# name -> (statements, items from source "migrations", items from source "schema_prisma")
TAMPERINGS = {
    "drop an index": (
        ['DROP INDEX "Order_practiceId_idx"'],
        [("missing_index", "Order_practiceId_idx")],
        [("missing_index", "Order_practiceId_idx")],
    ),
    "add a column": (
        ['ALTER TABLE "Item" ADD COLUMN "color" text'],
        [("extra_column", "Item.color")],
        [("extra_column", "Item.color")],
    ),
    "change a column type": (
        ['ALTER TABLE "OrderItem" ALTER COLUMN "quantity" TYPE bigint'],
        [("column_type", "OrderItem.quantity")],
        [("column_type", "OrderItem.quantity")],
    ),
    "change nullability": (
        ['ALTER TABLE "Item" ALTER COLUMN "unit" SET NOT NULL'],
        [("column_nullability", "Item.unit")],
        [("column_nullability", "Item.unit")],
    ),
    "change a default": (
        ["ALTER TABLE \"SupplierItem\" ALTER COLUMN \"currency\" SET DEFAULT 'USD'"],
        [("column_default", "SupplierItem.currency")],
        [("column_default", "SupplierItem.currency")],
    ),
    "drop a default": (
        ['ALTER TABLE "Product" ALTER COLUMN "isGs1Product" DROP DEFAULT'],
        [("column_default", "Product.isGs1Product")],
        [("column_default", "Product.isGs1Product")],
    ),
    "change a foreign key's ON DELETE": (
        [
            'ALTER TABLE "Order" DROP CONSTRAINT "Order_supplierId_fkey"',
            'ALTER TABLE "Order" ADD CONSTRAINT "Order_supplierId_fkey" FOREIGN KEY ("supplierId")'
            ' REFERENCES "Supplier"("id") ON DELETE CASCADE ON UPDATE CASCADE',
        ],
        [("constraint_definition", "Order.Order_supplierId_fkey")],
        [("constraint_definition", "Order.Order_supplierId_fkey")],
    ),
    # The same name exists on GoodsReceiptLine and InventoryTransfer: only OrderItem's changed.
    "alter a CHECK expression": (
        [
            'ALTER TABLE "OrderItem" DROP CONSTRAINT "check_quantity_positive"',
            'ALTER TABLE "OrderItem" ADD CONSTRAINT "check_quantity_positive" CHECK ("quantity" >= 0)',
        ],
        [("constraint_definition", "OrderItem.check_quantity_positive")],
        [],
    ),
    "add an enum value": (
        ["ALTER TYPE \"OrderStatus\" ADD VALUE 'ARCHIVED'"],
        [("enum_values", "OrderStatus")],
        [("enum_values", "OrderStatus")],
    ),
    "drop a CHECK constraint": (
        ['ALTER TABLE "StockAdjustment" DROP CONSTRAINT "check_quantity_not_zero"'],
        [("missing_constraint", "StockAdjustment.check_quantity_not_zero")],
        [],
    ),
    "add a CHECK constraint": (
        ["ALTER TABLE \"Item\" ADD CONSTRAINT \"check_name_not_empty\" CHECK (name <> '')"],
        [("extra_constraint", "Item.check_name_not_empty")],
        [],
    ),
    "make a CHECK constraint NOT VALID": (
        [
            'ALTER TABLE "Order" DROP CONSTRAINT "check_sent_has_sentAt"',
            "ALTER TABLE \"Order\" ADD CONSTRAINT \"check_sent_has_sentAt\""
            " CHECK (status <> 'SENT' OR \"sentAt\" IS NOT NULL) NOT VALID",
        ],
        [("constraint_definition", "Order.check_sent_has_sentAt")],
        [],
    ),
    "make a foreign key NOT VALID": (
        [
            'ALTER TABLE "Order" DROP CONSTRAINT "Order_createdById_fkey"',
            'ALTER TABLE "Order" ADD CONSTRAINT "Order_createdById_fkey" FOREIGN KEY ("createdById")'
            ' REFERENCES "User"("id") ON DELETE SET NULL ON UPDATE CASCADE NOT VALID',
        ],
        [("constraint_definition", "Order.Order_createdById_fkey")],
        [],
    ),
    "drop a primary key": (
        ['ALTER TABLE "OrderTemplate" DROP CONSTRAINT "OrderTemplate_pkey"'],
        [("missing_constraint", "OrderTemplate.OrderTemplate_pkey")],  # not a second time as an index
        [("missing_constraint", "OrderTemplate.OrderTemplate_pkey")],
    ),
    "drop a unique index": (
        ['DROP INDEX "GlobalSupplier_name_key"'],
        [("missing_index", "GlobalSupplier_name_key")],
        [("missing_index", "GlobalSupplier_name_key")],
    ),
    "unique constraint in place of the unique index": (
        ['DROP INDEX "User_email_key"', 'ALTER TABLE "User" ADD CONSTRAINT "User_email_key" UNIQUE ("email")'],
        [],
        [],
    ),
    "drop a partial predicate": (
        [
            'DROP INDEX "Item_practiceId_sku_key"',
            'CREATE UNIQUE INDEX "Item_practiceId_sku_key" ON "Item"("practiceId", "sku")',
        ],
        [("index_definition", "Item_practiceId_sku_key")],
        [],
    ),
    "change an index's columns": (
        ['DROP INDEX "Order_practiceId_idx"', 'CREATE INDEX "Order_practiceId_idx" ON "Order"("practiceId", "status")'],
        [("index_definition", "Order_practiceId_idx")],
        [("index_definition", "Order_practiceId_idx")],
    ),
    "add a partial index": (
        ['CREATE INDEX "Item_unnamed_idx" ON "Item"("practiceId") WHERE "sku" IS NULL'],
        [("extra_index", "Item_unnamed_idx")],
        [],  # schema.prisma cannot say a partial index: not its drift
    ),
    "add a plain index": (
        ['CREATE INDEX "Item_unit_idx" ON "Item"("unit")'],
        [("extra_index", "Item_unit_idx")],
        [("extra_index", "Item_unit_idx")],
    ),
    "drop a table": (
        ['DROP TABLE "OrderTemplate"'],
        [("missing_table", "OrderTemplate")],  # its columns, indexes, constraints are implied
        [("missing_table", "OrderTemplate")],
    ),
    "add a table": (
        ['CREATE TABLE "Audit" ("id" integer PRIMARY KEY, "note" text)'],
        [("extra_table", "Audit")],
        [("extra_table", "Audit")],
    ),
}


@pytest.mark.parametrize("case", list(TAMPERINGS))
def test_each_tampering_is_exactly_its_drift(case, base, prisma_expected, pg_server):
    statements, from_migrations, from_prisma = TAMPERINGS[case]
    live = tampered_copy(pg_server, "drift_" + case, statements)
    assert kinds_and_objects(diff_schemas(base, live, DriftSource.MIGRATIONS)) == from_migrations
    assert kinds_and_objects(diff_schemas(prisma_expected, live, DriftSource.SCHEMA_PRISMA)) == from_prisma


def test_details_say_expected_and_actual(base, pg_server):
    live = tampered_copy(
        pg_server,
        "drift_details",
        TAMPERINGS["change a foreign key's ON DELETE"][0]
        + TAMPERINGS["make a CHECK constraint NOT VALID"][0]
        + TAMPERINGS["add an enum value"][0]
        + TAMPERINGS["change nullability"][0],
    )
    details = {i.object: i.detail for i in diff_schemas(base, live, DriftSource.MIGRATIONS)}
    assert details == {
        "Item.unit": "column Item.unit is NOT NULL, expected nullable",
        "Order.Order_supplierId_fkey": (
            "constraint Order.Order_supplierId_fkey has ON DELETE CASCADE, expected ON DELETE SET NULL"
        ),
        "Order.check_sent_has_sentAt": (
            "constraint Order.check_sent_has_sentAt is present but NOT VALID: "
            "existing rows were never checked against it"
        ),
        "OrderStatus": (
            "enum OrderStatus has values (DRAFT, SENT, RECEIVED, CANCELLED, PARTIALLY_RECEIVED, ARCHIVED), "
            "expected (DRAFT, SENT, RECEIVED, CANCELLED, PARTIALLY_RECEIVED); not expected ARCHIVED"
        ),
    }


def test_a_failed_concurrent_index_is_invalid_drift(base, prisma_expected, pg_server):
    """CREATE UNIQUE INDEX CONCURRENTLY over duplicates fails and leaves an INVALID index
    behind: present by name, enforcing nothing."""
    tampered_copy(
        pg_server,
        "drift_invalid_index",
        [
            'DROP INDEX "Supplier_practiceId_name_key"',
            "INSERT INTO \"Practice\" (id, name, slug, \"updatedAt\") VALUES ('p1', 'P', 'p', now())",
            "INSERT INTO \"Supplier\" (id, \"practiceId\", name, \"updatedAt\")"
            " VALUES ('s1', 'p1', 'Same', now()), ('s2', 'p1', 'Same', now())",
        ],
    )
    with psycopg.connect(pg_server.dsn(database_name("drift_invalid_index")), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                'CREATE UNIQUE INDEX CONCURRENTLY "Supplier_practiceId_name_key" ON "Supplier"("practiceId", "name")'
            )
        live = introspect(conn)
    for expected, source in ((base, DriftSource.MIGRATIONS), (prisma_expected, DriftSource.SCHEMA_PRISMA)):
        items = diff_schemas(expected, live, source)
        assert kinds_and_objects(items) == [("index_definition", "Supplier_practiceId_name_key")]
        assert "INVALID" in items[0].detail


def test_no_drift_between_two_introspections(base, pg_server):
    with psycopg.connect(pg_server.dsn(BASE)) as conn:
        again = introspect(conn)
    assert diff_schemas(base, again, DriftSource.MIGRATIONS) == []


def test_prisma_bookkeeping_table_is_never_drift(base, pg_server):
    """A shadow replay has no _prisma_migrations; the live database does."""
    dsn = build_database(pg_server, "drift_shadow", record=False)
    with psycopg.connect(dsn) as conn:
        shadow = introspect(conn)
    assert "_prisma_migrations" in base.tables and "_prisma_migrations" not in shadow.tables
    assert diff_schemas(shadow, base, DriftSource.MIGRATIONS) == []
    assert diff_schemas(base, shadow, DriftSource.MIGRATIONS) == []


def test_schema_prisma_finds_no_drift_on_a_fully_migrated_database(base, prisma_expected):
    """Step 11 formalized the runbook's known drift: nothing is left, and the CHECK
    constraints and partial unique indexes schema.prisma cannot say are not noise."""
    assert diff_schemas(prisma_expected, base, DriftSource.SCHEMA_PRISMA) == []


@dataclass(frozen=True)
class Rule:
    object: str
    kind: str | None = None
    source: str | None = None


KNOWN_DRIFT_RULES = [
    Rule("LocationInventory.createdAt", "missing_column"),
    Rule("Order_practiceId_status_createdAt_idx", "missing_index", DriftSource.SCHEMA_PRISMA),
    Rule("LocationInventory_*_idx", "missing_index"),
]


def test_schema_prisma_at_step_10_is_the_runbooks_known_drift(pg_server, prisma_expected):
    dsn = build_database(pg_server, "drift_step_10", upto=STEP_10)
    with psycopg.connect(dsn) as conn:
        live = introspect(conn)
    items = diff_schemas(prisma_expected, live, DriftSource.SCHEMA_PRISMA)
    table, column = KNOWN_DRIFT["column"]
    order_index, inventory_index = KNOWN_DRIFT["indexes"]
    assert kinds_and_objects(items) == [
        ("missing_column", f"{table}.{column}"),
        ("missing_index", inventory_index),
        ("missing_index", order_index),
    ]
    acknowledged = acknowledge(items, KNOWN_DRIFT_RULES)
    assert [i.acknowledged for i in acknowledged] == [True, True, True]
    assert [(i.kind, i.object, i.detail) for i in acknowledged] == [(i.kind, i.object, i.detail) for i in items]


def test_acknowledge_matches_object_kind_and_source():
    items = [
        DriftItem(DriftSource.SCHEMA_PRISMA, "missing_index", "LocationInventory_itemId_reorderPoint_quantity_idx", "d"),
        DriftItem(DriftSource.MIGRATIONS, "missing_index", "LocationInventory_itemId_reorderPoint_quantity_idx", "d"),
        DriftItem(DriftSource.SCHEMA_PRISMA, "missing_column", "LocationInventory.createdAt", "d"),
        DriftItem(DriftSource.SCHEMA_PRISMA, "extra_column", "LocationInventory.createdAt", "d"),
        DriftItem(DriftSource.SCHEMA_PRISMA, "extra_column", "Item.[x]", "d"),
        DriftItem(DriftSource.SCHEMA_PRISMA, "extra_column", "Item.y", "d"),
    ]
    rules = [
        Rule("LocationInventory_*", source=DriftSource.SCHEMA_PRISMA),  # glob, any kind, one source
        Rule("LocationInventory.createdAt", kind="missing_column"),  # exact, one kind, any source
        Rule("Item.[x]"),  # glob characters other than * are literal
    ]
    assert [i.acknowledged for i in acknowledge(items, rules)] == [True, False, True, False, True, False]
    assert acknowledge(items, []) == items


def test_order_is_deterministic(base, pg_server):
    cases = [
        "add a table", "add a column", "change a column type", "change a default", "add a plain index",
        "drop a unique index", "alter a CHECK expression", "change a foreign key's ON DELETE",
        "make a foreign key NOT VALID", "drop a CHECK constraint", "add an enum value", "drop a table",
    ]
    live = tampered_copy(pg_server, "drift_many", [s for case in cases for s in TAMPERINGS[case][0]])
    first = diff_schemas(base, live, DriftSource.MIGRATIONS)
    assert first == diff_schemas(base, live, DriftSource.MIGRATIONS)
    assert len(first) > 10
    assert all(i.kind in DriftKind for i in first)
    sections = ["table", "column", "index", "constraint", "enum"]
    ranks = [next(n for n, word in enumerate(sections) if word in i.kind) for i in first]
    assert ranks == sorted(ranks)


# -- pure comparisons (no database needed) ---------------------------------------------------------


def _schema(default: str, *, unique_as_constraint: bool = False) -> Schema:
    table = Table("T", {"id": Column("id", "integer", False, default), "code": Column("code", "text", False)})
    if unique_as_constraint:
        constraints = {("T", "T_code_key"): Constraint("T_code_key", "T", ConstraintKind.UNIQUE, ("code",), "UNIQUE (code)")}
        return Schema({"T": table}, {}, constraints)
    return Schema({"T": table}, {"T_code_key": Index("T_code_key", "T", ("code",), True)})


def test_autoincrement_compares_loosely_only_against_schema_prisma():
    expected = _schema("nextval('\"T_id_seq\"'::regclass)")
    actual = _schema("nextval('\"T_id_seq1\"'::regclass)")
    assert diff_schemas(expected, actual, DriftSource.SCHEMA_PRISMA) == []
    assert kinds_and_objects(diff_schemas(expected, actual, DriftSource.MIGRATIONS)) == [("column_default", "T.id")]


@pytest.mark.parametrize("a, b", [("'-5'::integer", "-5"), ("2", "2.0"), ("now()", "CURRENT_TIMESTAMP"),
                                  ("'x'::text", "'x'::text")])
def test_default_spellings_of_one_value_are_equal(a, b):
    assert diff_schemas(_schema(a), _schema(b), DriftSource.MIGRATIONS) == []


def test_different_default_values_are_drift():
    assert diff_schemas(_schema("'x'::text"), _schema("'y'::text"), DriftSource.MIGRATIONS) != []


def test_a_unique_constraint_alone_is_its_unique_index():
    """A Schema may hold a UNIQUE constraint without its backing index (a hand-made
    snapshot): it still equals the unique index of the same name and columns."""
    assert diff_schemas(_schema("1", unique_as_constraint=True), _schema("1"), DriftSource.MIGRATIONS) == []
    assert diff_schemas(_schema("1"), _schema("1", unique_as_constraint=True), DriftSource.MIGRATIONS) == []


def test_constraints_are_identified_by_table_and_name():
    def schema(on_delete_b: str) -> Schema:
        tables = {n: Table(n, {"x": Column("x", "integer", True)}) for n in ("A", "B", "P")}
        constraints = {
            (t, "fk"): Constraint("fk", t, ConstraintKind.FOREIGN_KEY, ("x",), "", True, "P", ("x",), action, "CASCADE")
            for t, action in (("A", "CASCADE"), ("B", on_delete_b))
        }
        return Schema(tables, {}, constraints)

    items = diff_schemas(schema("CASCADE"), schema("SET NULL"), DriftSource.MIGRATIONS)
    assert kinds_and_objects(items) == [("constraint_definition", "B.fk")]
