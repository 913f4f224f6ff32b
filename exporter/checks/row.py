"""`row` checks: rows of a table that break a rule, with CHECK-constraint semantics.

A row violates the rule when the rule is FALSE; NULL passes, exactly as PostgreSQL
evaluates a CHECK constraint. That is why `reorderPoint IS NULL OR reorderPoint >= 0`
and `reorderPoint >= 0` count the same rows, and why a clean database counts 0.
"""

from __future__ import annotations

from exporter.checks.shape import TablePass, ident
from exporter.config import RowCheck
from exporter.schema.meaning import not_null_column, not_null_name
from exporter.schema.model import Constraint, ConstraintKind, Index, Schema, canonical_expression


def probe(check: RowCheck) -> TablePass:
    return TablePass(f"({check.rule}) IS FALSE")


def guard(check: RowCheck, schema: Schema) -> str | None:
    """A validated CHECK constraint on the table with the same expression as the rule, or,
    for a rule that only forbids NULL, the column's NOT NULL."""
    column = not_null_column(check.rule)
    if column is not None and schema.has_column(check.table, column) \
            and not schema.tables[check.table].columns[column].nullable:
        return not_null_name(check.table, column)
    for constraint in schema.constraints_of(check.table):
        if constraint.validated and counts_same_rows(check, constraint):
            return constraint.name
    return None


def counts_same_rows(check: RowCheck, rule: Constraint | Index) -> bool:
    """The rows violating this CHECK constraint are exactly the check's violations."""
    return (
        isinstance(rule, Constraint) and rule.kind == ConstraintKind.CHECK and rule.table == check.table
        and canonical_expression(rule.definition) == canonical_expression(check.rule)
    )


def inspect_sql(check: RowCheck) -> str:
    return f"SELECT * FROM {ident(check.table)} WHERE ({check.rule}) IS FALSE;"
