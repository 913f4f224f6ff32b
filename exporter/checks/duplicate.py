"""`duplicate` checks: groups of rows that a unique index on the key would reject.

Rows with a NULL in any key column never clash (PostgreSQL's default NULLS DISTINCT), and
an optional `where` restricts the rows like a partial unique index does. Reported as the
number of groups and the number of rows involved. Counted by one GROUP BY of its own,
the least any correct method can do without an index.
"""

from __future__ import annotations

from exporter.checks.shape import OwnQuery, ident
from exporter.config import DuplicateCheck
from exporter.schema.model import Constraint, Index, Schema, normalize_expression


def _where(check: DuplicateCheck) -> str:
    conditions = [f"{ident(c)} IS NOT NULL" for c in check.columns]
    if check.where:
        conditions.append(f"({check.where})")
    return " AND ".join(conditions)


def probe(check: DuplicateCheck) -> OwnQuery:
    key = ", ".join(ident(c) for c in check.columns)
    return OwnQuery(
        f"SELECT coalesce(sum(n), 0)::bigint, count(*) FROM "
        f"(SELECT count(*) AS n FROM {ident(check.table)} WHERE {_where(check)} "
        f"GROUP BY {key} HAVING count(*) > 1) d"
    )


def guard(check: DuplicateCheck, schema: Schema) -> str | None:
    """A valid unique index over a subset of the key whose partial predicate, if any, is
    the check's own `where` (a unique (a) also makes (a, b) unique)."""
    for index in schema.indexes_of(check.table):
        if index.unique and index.valid and set(index.columns) <= set(check.columns) and _same_rows(check, index):
            return index.name
    return None


def counts_same_rows(check: DuplicateCheck, rule: Constraint | Index) -> bool:
    """The rows this unique index would reject are exactly the check's duplicate rows."""
    return (
        isinstance(rule, Index) and rule.unique and rule.table == check.table
        and set(rule.columns) == set(check.columns) and _same_rows(check, rule)
    )


def _same_rows(check: DuplicateCheck, index: Index) -> bool:
    """The index covers the check's rows: not partial, or partial with the check's `where`."""
    wanted = normalize_expression(check.where) if check.where else None
    return index.predicate is None or normalize_expression(index.predicate) == wanted


def inspect_sql(check: DuplicateCheck) -> str:
    key = ", ".join(ident(c) for c in check.columns)
    return (
        f"SELECT * FROM (SELECT *, count(*) OVER (PARTITION BY {key}) AS duplicates "
        f"FROM {ident(check.table)} WHERE {_where(check)}) d WHERE duplicates > 1 ORDER BY {key};"
    )
