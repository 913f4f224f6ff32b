"""The SQL each check kind writes, and the catalog guards that spare a query - from
literal configs and schemas, no database (the database tests run the same SQL)."""

from __future__ import annotations

import pytest

from exporter.checks.run import KIND_MODULES, table_pass_sql
from exporter.config import Config
from exporter.schema.model import Column, Constraint, ConstraintKind, Index, Schema, Table

CONFIG = Config.model_validate({
    "databases": [{"name": "shop", "dsn": "postgresql://localhost/shop"}],
    "checks": [
        {"name": "stock_non_negative", "kind": "row", "table": "Stock", "rule": '"quantity" >= 0',
         "category": "negative_inventory", "severity": "critical"},
        {"name": "stock_item_orphan", "kind": "orphan", "table": "Stock", "column": "itemId",
         "references": {"table": "Item", "column": "id"}, "category": "orphaned_reference", "severity": "warning"},
        {"name": "item_names", "kind": "duplicate", "table": "Item", "columns": ["practiceId", "name"],
         "where": '"deletedAt" IS NULL', "category": "duplicate", "severity": "warning"},
    ],
})
ROW, ORPHAN, DUPLICATE = CONFIG.checks
TABLES = {"Item": Table("Item", {"id": Column("id", "integer", False)}), "Stock": Table("Stock")}
ITEM_PKEY = Index("Item_pkey", "Item", ("id",), unique=True, primary=True)


@pytest.mark.parametrize("check, sql", [
    (ROW, 'SELECT * FROM "Stock" WHERE ("quantity" >= 0) IS FALSE;'),
    (ORPHAN, 'SELECT t.* FROM "Stock" t WHERE t."itemId" IS NOT NULL '
             'AND NOT EXISTS (SELECT 1 FROM "Item" p WHERE p."id" = t."itemId");'),
    (DUPLICATE, 'SELECT * FROM (SELECT *, count(*) OVER (PARTITION BY "practiceId", "name") AS duplicates '
                'FROM "Item" WHERE "practiceId" IS NOT NULL AND "name" IS NOT NULL AND ("deletedAt" IS NULL)) d '
                'WHERE duplicates > 1 ORDER BY "practiceId", "name";'),
], ids=["row", "orphan", "duplicate"])
def test_inspect_sql_lists_the_offending_rows(check, sql):
    assert KIND_MODULES[check.kind].inspect_sql(check) == sql


@pytest.mark.parametrize("parent_indexes, join", [
    ({}, 'LEFT JOIN (SELECT DISTINCT "id" AS parent_key FROM "Item") p1 ON p1.parent_key = t."itemId"'),
    ({"Item_pkey": ITEM_PKEY}, 'LEFT JOIN "Item" p1 ON p1."id" = t."itemId"'),
], ids=["parent key not unique", "parent key unique"])
def test_row_and_orphan_checks_of_a_table_share_one_pass(parent_indexes, join):
    schema = Schema(tables=TABLES, indexes=parent_indexes)
    orphan = "p1.parent_key IS NULL" if not parent_indexes else 'p1."id" IS NULL'
    assert table_pass_sql("Stock", [ROW, ORPHAN], schema) == (
        'SELECT count(*) FILTER (WHERE ("quantity" >= 0) IS FALSE), '
        f'count(*) FILTER (WHERE t."itemId" IS NOT NULL AND {orphan}) FROM "Stock" t {join}')


def test_a_duplicate_check_counts_rows_and_groups_in_its_own_query():
    assert KIND_MODULES["duplicate"].probe(DUPLICATE).sql == (
        'SELECT coalesce(sum(n), 0)::bigint, count(*) FROM (SELECT count(*) AS n FROM "Item" '
        'WHERE "practiceId" IS NOT NULL AND "name" IS NOT NULL AND ("deletedAt" IS NULL) '
        'GROUP BY "practiceId", "name" HAVING count(*) > 1) d')


def _check(name: str, definition: str = "", validated: bool = True, **fields) -> Constraint:
    return Constraint(name, "Stock", ConstraintKind.CHECK, definition=definition, validated=validated, **fields)


def _foreign_key(columns: tuple[str, ...], validated: bool = True) -> Constraint:
    return Constraint("Stock_itemId_fkey", "Stock", ConstraintKind.FOREIGN_KEY, columns, validated=validated,
                      ref_table="Item", ref_columns=("id",))


def _unique(columns: tuple[str, ...], predicate: str | None = None, valid: bool = True) -> Index:
    return Index("Item_key", "Item", columns, unique=True, predicate=predicate, valid=valid)


@pytest.mark.parametrize("check, constraints, indexes, guard", [
    (ROW, [_check("stock_q", "CHECK ((quantity >= 0))")], [], "stock_q"),
    (ROW, [_check("stock_q", "CHECK ((quantity >= 0))", validated=False)], [], None),  # NOT VALID
    (ROW, [_check("stock_q", "CHECK ((quantity > 0))")], [], None),  # another rule
    (ORPHAN, [_foreign_key(("itemId",))], [], "Stock_itemId_fkey"),
    (ORPHAN, [_foreign_key(("itemId",), validated=False)], [], None),
    (ORPHAN, [_foreign_key(("otherId",))], [], None),
    (DUPLICATE, [], [_unique(("practiceId", "name"), '("deletedAt" IS NULL)')], "Item_key"),
    (DUPLICATE, [], [_unique(("practiceId",))], "Item_key"),  # a unique subset of the key
    (DUPLICATE, [], [_unique(("practiceId", "name"))], "Item_key"),  # not partial: covers every row
    (DUPLICATE, [], [_unique(("practiceId", "name"), '("archived" IS NULL)')], None),  # other rows
    (DUPLICATE, [], [_unique(("practiceId", "name"), valid=False)], None),  # a failed concurrent build
], ids=["row: same CHECK", "row: NOT VALID", "row: other rule", "orphan: same FK", "orphan: NOT VALID",
        "orphan: other column", "duplicate: same partial index", "duplicate: key subset",
        "duplicate: full index", "duplicate: other predicate", "duplicate: invalid index"])
def test_a_validated_constraint_answers_the_check_from_the_catalog(check, constraints, indexes, guard):
    schema = Schema(tables=TABLES, indexes={i.name: i for i in indexes},
                    constraints={(c.table, c.name): c for c in constraints})
    assert KIND_MODULES[check.kind].guard(check, schema) == guard
