"""`orphan` checks: a non-null reference whose parent row is gone.

They exist where a foreign key was missing (a `db push`, a manual change, a restore with
triggers off). Counted inside the table's pass through a LEFT JOIN (a hash join) on the parent: on the
parent itself when the referenced column is a unique key (the cheapest plan, measured in
docs/performance.md), else on its distinct keys, so that a parent with duplicate keys
cannot multiply the rows that the table's other checks count.
"""

from __future__ import annotations

from exporter.checks.shape import TablePass, ident
from exporter.config import OrphanCheck
from exporter.schema.model import Constraint, ConstraintKind, Index, Schema


def probe(check: OrphanCheck, alias: str, schema: Schema) -> TablePass:
    parent, key, column = ident(check.references.table), ident(check.references.column), ident(check.column)
    if _unique_key(check, schema):
        # The usual case (a foreign key must point at a unique key): join the parent
        # itself, no row can match twice.
        join = f"LEFT JOIN {parent} {alias} ON {alias}.{key} = t.{column}"
        return TablePass(f"t.{column} IS NOT NULL AND {alias}.{key} IS NULL", join)
    join = f"LEFT JOIN (SELECT DISTINCT {key} AS parent_key FROM {parent}) {alias} ON {alias}.parent_key = t.{column}"
    return TablePass(f"t.{column} IS NOT NULL AND {alias}.parent_key IS NULL", join)


def _unique_key(check: OrphanCheck, schema: Schema) -> bool:
    """The referenced column alone is a valid, non-partial unique key of the parent."""
    return any(
        i.unique and i.valid and i.predicate is None and i.columns == (check.references.column,)
        for i in schema.indexes_of(check.references.table)
    )


def guard(check: OrphanCheck, schema: Schema) -> str | None:
    """A validated foreign key from exactly this column to the referenced column."""
    for constraint in schema.constraints_of(check.table):
        if constraint.validated and counts_same_rows(check, constraint):
            return constraint.name
    return None


def counts_same_rows(check: OrphanCheck, rule: Constraint | Index) -> bool:
    """The rows this foreign key would reject are exactly the check's orphans."""
    return (
        isinstance(rule, Constraint) and rule.kind == ConstraintKind.FOREIGN_KEY and rule.table == check.table
        and rule.columns == (check.column,)
        and rule.ref_table == check.references.table and rule.ref_columns == (check.references.column,)
    )


def inspect_sql(check: OrphanCheck) -> str:
    col, parent, key = ident(check.column), ident(check.references.table), ident(check.references.column)
    return (
        f"SELECT t.* FROM {ident(check.table)} t WHERE t.{col} IS NOT NULL "
        f"AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.{key} = t.{col});"
    )
