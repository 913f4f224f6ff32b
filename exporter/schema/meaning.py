"""What a constraint means, as a key: two constraints with equal keys reject the same rows,
whatever they are called.

    CHECK        (check, table, canonical expression)
    foreign key  (foreign_key, table, columns, referenced table, referenced columns)
    unique       (unique, table, set of columns, canonical partial predicate or None)
    NOT NULL     (not_null, table, column)

A unique index whose predicate only says its key columns are not null means the same as
one without a predicate (NULLs never clash in a unique index). Keys are how a renamed
constraint is recognised (config matched by meaning) and how a derived expectation finds
the live object that keeps it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import cast
from collections.abc import Iterable, Iterator

from exporter.schema.model import ConstraintKind, Schema, canonical_expression

Key = tuple[object, ...]  # (kind, table, ...): see the module's docstring


def check_key(table: str, expression: str) -> Key:
    column = not_null_column(expression)
    if column is not None:
        return not_null_key(table, column)
    return (ConstraintKind.CHECK, table, canonical_expression(expression))


def foreign_key_key(table: str, columns: Iterable[str], ref_table: str, ref_columns: Iterable[str]) -> Key:
    return (ConstraintKind.FOREIGN_KEY, table, tuple(columns), ref_table, tuple(ref_columns))


def unique_key(table: str, columns: Iterable[str], predicate: str | None) -> Key:
    columns = frozenset(columns)
    if predicate is not None:
        implied = {canonical_expression(f'"{c}" IS NOT NULL') for c in columns}
        parts = {canonical_expression(p) for p in re.split(r"\s+AND\s+", predicate.strip().strip("()"), flags=re.I)}
        predicate = None if parts <= implied else canonical_expression(predicate)
    return (ConstraintKind.UNIQUE, table, columns, predicate)


def not_null_key(table: str, column: str) -> Key:
    return (ConstraintKind.NOT_NULL, table, column)


def not_null_name(table: str, column: str) -> str:
    """The name PostgreSQL 18 gives a NOT NULL constraint; earlier versions have no name."""
    return f"{table}_{column}_not_null"


_NOT_NULL = re.compile(r'^\s*\(*\s*"?([A-Za-z_][A-Za-z0-9_]*)"?\s+IS\s+NOT\s+NULL\s*\)*\s*$', re.I)


def not_null_column(expression: str) -> str | None:
    """`"x" IS NOT NULL` (a rule that only forbids NULL in x) -> x."""
    match = _NOT_NULL.match(expression)
    return match.group(1) if match else None


def key_columns(key: Key) -> tuple[str, ...]:
    """The columns a key names on its own table (for "does it still exist?")."""
    kind, columns = key[0], key[2]
    if kind == ConstraintKind.NOT_NULL:
        return (str(columns),)
    if kind in (ConstraintKind.FOREIGN_KEY, ConstraintKind.UNIQUE):
        return tuple(sorted(cast("Iterable[str]", columns)))
    return ()


@dataclass(frozen=True)
class Kept:
    """A live (or expected) object that keeps a rule: its name and whether it is validated."""

    name: str
    kind: ConstraintKind
    valid: bool


def meanings(schema: Schema) -> dict[Key, Kept]:
    """Every rule a schema enforces, by its key (a validated object wins over a NOT VALID one)."""
    found: dict[Key, Kept] = {}
    for key, kept in (*_constraint_rules(schema), *_index_rules(schema), *_not_null_rules(schema)):
        if key not in found or (kept.valid and not found[key].valid):
            found[key] = kept
    return found


def _constraint_rules(schema: Schema) -> Iterator[tuple[Key, Kept]]:
    for c in schema.constraints.values():
        if c.kind == ConstraintKind.CHECK:
            yield check_key(c.table, c.definition), Kept(c.name, c.kind, c.validated)
        elif c.kind == ConstraintKind.FOREIGN_KEY:
            key = foreign_key_key(c.table, c.columns, c.ref_table or "", c.ref_columns)
            yield key, Kept(c.name, c.kind, c.validated)


def _index_rules(schema: Schema) -> Iterator[tuple[Key, Kept]]:
    for i in schema.indexes.values():
        if i.unique:
            kind = ConstraintKind.PRIMARY_KEY if i.primary else ConstraintKind.UNIQUE
            yield unique_key(i.table, i.columns, i.predicate), Kept(i.name, kind, i.valid)


def _not_null_rules(schema: Schema) -> Iterator[tuple[Key, Kept]]:
    for table in schema.tables.values():
        for column in table.columns.values():
            if not column.nullable:
                name = not_null_name(table.name, column.name)
                yield not_null_key(table.name, column.name), Kept(name, ConstraintKind.NOT_NULL, True)
