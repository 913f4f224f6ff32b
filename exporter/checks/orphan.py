"""`orphan` checks: a non-null reference whose parent row is gone.

They exist where a foreign key was missing (a `db push`, a manual change, a restore with
triggers off). Counted inside the table's pass through a LEFT JOIN on the parent's
distinct keys: a hash join, and a parent with duplicate keys cannot multiply the rows
that the table's other checks count.
"""

from __future__ import annotations

from exporter.checks.shape import TablePass, ident
from exporter.config import OrphanCheck
from exporter.schema.model import FOREIGN_KEY, Schema


def probe(check: OrphanCheck, alias: str) -> TablePass:
    parent, key = ident(check.references.table), ident(check.references.column)
    join = (
        f"LEFT JOIN (SELECT DISTINCT {key} AS parent_key FROM {parent}) {alias} "
        f"ON {alias}.parent_key = t.{ident(check.column)}"
    )
    return TablePass(f"t.{ident(check.column)} IS NOT NULL AND {alias}.parent_key IS NULL", join)


def guard(check: OrphanCheck, schema: Schema) -> str | None:
    """A validated foreign key from exactly this column to the referenced column."""
    for constraint in schema.constraints_of(check.table):
        if (
            constraint.kind == FOREIGN_KEY
            and constraint.validated
            and constraint.columns == (check.column,)
            and constraint.ref_table == check.references.table
            and constraint.ref_columns == (check.references.column,)
        ):
            return constraint.name
    return None


def inspect_sql(check: OrphanCheck) -> str:
    col, parent, key = ident(check.column), ident(check.references.table), ident(check.references.column)
    return (
        f"SELECT t.* FROM {ident(check.table)} t WHERE t.{col} IS NOT NULL "
        f"AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.{key} = t.{col});"
    )
