"""Expected constraints: present and valid in the live Schema, answered from the catalog.

A unique constraint and a unique index are the same promise (Prisma creates unique
INDEXES, a partial one cannot be a constraint), so `unique` is looked up as an index;
its validity is the index's (a failed CREATE INDEX CONCURRENTLY leaves it invalid).
A CHECK or foreign key added NOT VALID is present and not valid.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.config import ExpectedConstraint
from exporter.schema.model import ConstraintKind, Schema

# Prisma's bookkeeping table is not the app's schema.
_IGNORED_TABLES = {"_prisma_migrations"}
# The constraints of an expected schema that are expected live too (not exclusion ones).
_EXPECTED_KINDS = (ConstraintKind.PRIMARY_KEY, ConstraintKind.UNIQUE, ConstraintKind.CHECK, ConstraintKind.FOREIGN_KEY)


@dataclass(frozen=True)
class ConstraintResult:
    table: str
    name: str
    kind: ConstraintKind
    critical: bool
    present: bool
    valid: bool
    detail: str = ""  # why it is missing or not valid, for people

    @property
    def is_problem(self) -> bool:
        return not (self.present and self.valid)


def _index_kind(expected: ExpectedConstraint, schema: Schema) -> tuple[bool, bool, str]:
    index = schema.indexes.get(expected.name)
    if index is None or index.table != expected.table:
        return False, False, "missing"
    if expected.kind == ConstraintKind.UNIQUE and not index.unique:
        return False, False, "exists, but the index is not unique"
    if expected.kind == ConstraintKind.PRIMARY_KEY and not index.primary:
        return False, False, "exists, but is not the primary key"
    return True, index.valid, "" if index.valid else "index is invalid (a failed concurrent build?)"


def _constraint_kind(expected: ExpectedConstraint, schema: Schema) -> tuple[bool, bool, str]:
    constraint = schema.constraint(expected.table, expected.name)
    if constraint is None:
        return False, False, "missing"
    if constraint.kind != expected.kind:
        return False, False, f"exists, but as a {constraint.kind} constraint"
    return True, constraint.validated, "" if constraint.validated else "NOT VALID: existing rows were never checked"


def check_constraint(expected: ExpectedConstraint, schema: Schema) -> ConstraintResult:
    if not schema.has_table(expected.table):
        present, valid, detail = False, False, f'table "{expected.table}" does not exist'
    elif expected.kind in (ConstraintKind.CHECK, ConstraintKind.FOREIGN_KEY):
        present, valid, detail = _constraint_kind(expected, schema)
    else:  # unique, primary_key, index: an index backs each of them
        assert expected.kind in (ConstraintKind.UNIQUE, ConstraintKind.PRIMARY_KEY, ConstraintKind.INDEX)
        present, valid, detail = _index_kind(expected, schema)
    return ConstraintResult(expected.table, expected.name, expected.kind, expected.critical, present, valid, detail)


def check_constraints(expected: list[ExpectedConstraint], schema: Schema) -> list[ConstraintResult]:
    return [check_constraint(e, schema) for e in expected]


def expected_constraints(configured: list[ExpectedConstraint], expected: Schema | None) -> list[ExpectedConstraint]:
    """The config's list plus every constraint and unique index of the expected schema
    (configured entries first, and they decide `critical`)."""
    found = {(c.table, c.name): c for c in configured}
    if expected is not None:
        for c in expected.constraints.values():
            if c.table not in _IGNORED_TABLES and c.kind in _EXPECTED_KINDS:
                found.setdefault((c.table, c.name), ExpectedConstraint(table=c.table, name=c.name, kind=c.kind))
        for i in expected.indexes.values():
            if i.unique and not i.primary and i.table not in _IGNORED_TABLES:
                expected_index = ExpectedConstraint(table=i.table, name=i.name, kind=ConstraintKind.UNIQUE)
                found.setdefault((i.table, i.name), expected_index)
    return list(found.values())
