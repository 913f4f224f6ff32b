"""Drift: the difference between the Schema a database should have and the one it has.

Two sources of "should":

- `migrations`: the catalog of a shadow database where the migrations folder was replayed.
  Both sides are real PostgreSQL catalogs, so everything is compared.
- `schema_prisma`: `prisma.to_schema(parse_prisma_schema(...))`. schema.prisma cannot say
  CHECK or exclusion constraints, partial index predicates, expression indexes, NOT VALID,
  or which sequence a SERIAL column draws from, so those are left out of the comparison
  (`PRISMA_SCOPE`) instead of being reported as noise.

Unique constraints and unique indexes are one thing for drift: PostgreSQL backs a UNIQUE
constraint with a unique index of the same name, and Prisma creates only the index. Both
are compared as indexes. Primary keys and exclusion constraints are compared as
constraints (their backing index is not reported a second time).

NOT VALID: a constraint the expected side has validated but the live side holds NOT VALID
is reported as `constraint_definition` (detail "present but NOT VALID ..."): it exists and
guards new rows, but old rows were never checked against it. A live constraint that is
validated where the expected one is NOT VALID is stronger than asked and not reported.
An index left INVALID by a failed CREATE INDEX CONCURRENTLY is `index_definition`.

One item per difference, never its consequences: a missing table is one `missing_table`
(not also its columns, indexes and constraints); a missing or extra enum type is an
`enum_values` item saying so. `_prisma_migrations` is never compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol
from collections.abc import Iterable, Iterator

from exporter.schema.model import Column, Constraint, ConstraintKind, Index, Schema, normalize_expression

class DriftSource(StrEnum):
    """Where the expected side of a drift item comes from."""

    MIGRATIONS = "migrations"
    SCHEMA_PRISMA = "schema_prisma"


IGNORED_TABLES = frozenset({"_prisma_migrations"})  # Prisma's bookkeeping, never drift


class DriftKind(StrEnum):
    MISSING_TABLE = "missing_table"
    EXTRA_TABLE = "extra_table"
    MISSING_COLUMN = "missing_column"
    EXTRA_COLUMN = "extra_column"
    COLUMN_TYPE = "column_type"
    COLUMN_NULLABILITY = "column_nullability"
    COLUMN_DEFAULT = "column_default"
    MISSING_INDEX = "missing_index"
    EXTRA_INDEX = "extra_index"
    INDEX_DEFINITION = "index_definition"
    MISSING_CONSTRAINT = "missing_constraint"
    EXTRA_CONSTRAINT = "extra_constraint"
    CONSTRAINT_DEFINITION = "constraint_definition"
    ENUM_VALUES = "enum_values"


@dataclass(frozen=True)
class DriftItem:
    source: DriftSource
    kind: DriftKind
    object: str  # "Table", "Table.column", an index name, "Table.constraint", an enum name
    detail: str  # one sentence, expected vs actual
    acknowledged: bool = False

    @property
    def is_problem(self) -> bool:
        return not self.acknowledged


@dataclass(frozen=True)
class Scope:
    """What the expected side is able to say, hence what a difference can mean."""

    check_constraints: bool = True  # CHECK and exclusion constraints
    index_predicates: bool = True  # partial index WHERE clauses (and expression indexes)
    validation: bool = True  # NOT VALID constraints
    sequence_names: bool = True  # nextval('seq') defaults by sequence; else any nextval matches
    enum_order: bool = True  # order of enum labels (ALTER TYPE ADD VALUE appends; Prisma ignores order)


FULL_SCOPE = Scope()
PRISMA_SCOPE = Scope(
    check_constraints=False, index_predicates=False, validation=False, sequence_names=False, enum_order=False
)
_SCOPES = {DriftSource.MIGRATIONS: FULL_SCOPE, DriftSource.SCHEMA_PRISMA: PRISMA_SCOPE}


def diff_schemas(
    expected: Schema, actual: Schema, source: DriftSource, *, scope: Scope | None = None
) -> list[DriftItem]:
    """What differs between the expected and the actual Schema, in a deterministic order:
    tables, columns, indexes, constraints, enums; each sorted by object name."""
    scope = scope or _SCOPES.get(source, FULL_SCOPE)
    expected = _unknown_where_locked(expected, actual)
    items: list[tuple[DriftKind, str, str]] = []  # (kind, object, detail)
    items += _tables(expected, actual)
    items += _columns(expected, actual, scope)
    items += _indexes(expected, actual, scope)
    items += _constraints(expected, actual, scope)
    items += _enums(expected, actual, scope)
    return [DriftItem(source, kind, obj, detail) for kind, obj, detail in items]


def _unknown_where_locked(expected: Schema, actual: Schema) -> Schema:
    """`expected`, with what could not be read of `actual`'s locked tables taken from
    `actual` itself: a locked table's defaults, CHECK and index definitions are unknown
    for this poll, not different (only what exists, by name, is compared there)."""
    if not actual.locked:
        return expected
    tables = dict(expected.tables)
    for name in actual.locked & set(tables) & set(actual.tables):
        have = actual.tables[name].columns
        tables[name] = replace(tables[name], columns={
            c: replace(column, default=have[c].default) if c in have else column
            for c, column in tables[name].columns.items()})
    indexes = {name: actual.indexes[name] if index.table in actual.locked and name in actual.indexes else index
               for name, index in expected.indexes.items()}
    constraints = {key: actual.constraints[key] if key[0] in actual.locked and key in actual.constraints else c
                   for key, c in expected.constraints.items()}
    return replace(expected, tables=tables, indexes=indexes, constraints=constraints)


class AcknowledgeRule(Protocol):
    object: str  # exact, or a glob where * matches anything
    kind: str | None  # None: any kind
    source: str | None  # None: any source


def acknowledge(items: Iterable[DriftItem], rules: Iterable[AcknowledgeRule]) -> list[DriftItem]:
    """The items, with `acknowledged=True` on those some rule matches (order kept)."""
    rules = list(rules)
    return [replace(item, acknowledged=True) if any(_matches(r, item) for r in rules) else item for item in items]


def _matches(rule: AcknowledgeRule, item: DriftItem) -> bool:
    if rule.kind is not None and rule.kind != item.kind:
        return False
    if rule.source is not None and rule.source != item.source:
        return False
    # Only * is special: object names may hold other glob characters literally.
    pattern = ".*".join(re.escape(part) for part in rule.object.split("*"))
    return re.fullmatch(pattern, item.object) is not None


# -- tables and columns -------------------------------------------------------------------------


def _table_names(schema: Schema) -> set[str]:
    return set(schema.tables) - IGNORED_TABLES


def _common_tables(expected: Schema, actual: Schema) -> list[str]:
    return sorted(_table_names(expected) & _table_names(actual))


def _tables(expected: Schema, actual: Schema) -> Iterator[tuple[DriftKind, str, str]]:
    for name in sorted(_table_names(expected) - _table_names(actual)):
        yield DriftKind.MISSING_TABLE, name, f"table {name} is expected but does not exist"
    for name in sorted(_table_names(actual) - _table_names(expected)):
        yield DriftKind.EXTRA_TABLE, name, f"table {name} exists but is not expected"


def _columns(expected: Schema, actual: Schema, scope: Scope) -> Iterator[tuple[DriftKind, str, str]]:
    for table in _common_tables(expected, actual):
        want, have = expected.tables[table].columns, actual.tables[table].columns
        for name in sorted(set(want) | set(have)):
            obj = f"{table}.{name}"
            if name not in have:
                text = _column_text(want[name])
                yield DriftKind.MISSING_COLUMN, obj, f"column {obj} ({text}) is expected but does not exist"
                continue
            if name not in want:
                text = _column_text(have[name])
                yield DriftKind.EXTRA_COLUMN, obj, f"column {obj} ({text}) exists but is not expected"
                continue
            w, h = want[name], have[name]
            if w.type != h.type:
                yield DriftKind.COLUMN_TYPE, obj, f"column {obj} is {h.type}, expected {w.type}"
            if w.nullable != h.nullable:
                yield DriftKind.COLUMN_NULLABILITY, obj, (
                    f"column {obj} is {_nullability(h.nullable)}, expected {_nullability(w.nullable)}"
                )
            if _default_key(w.default, scope) != _default_key(h.default, scope):
                yield DriftKind.COLUMN_DEFAULT, obj, (
                    f"column {obj} has default {_default_text(h.default)}, expected {_default_text(w.default)}"
                )


def _column_text(column: Column) -> str:
    text = f"{column.type} {_nullability(column.nullable)}"
    return text + (f" default {column.default}" if column.default else "")


def _nullability(nullable: bool) -> str:
    return "nullable" if nullable else "NOT NULL"


def _default_text(default: str | None) -> str:
    return default if default is not None else "none"


_QUOTED_NUMBER = re.compile(r"'(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)'")


def _default_key(default: str | None, scope: Scope) -> str | None:
    """A comparison key for a default: two spellings PostgreSQL may print for one value
    (casts, quotes, '-5'::integer vs -5, 2 vs 2.0) compare equal."""
    if default is None:
        return None
    if not scope.sequence_names and default.lower().startswith("nextval("):
        return "nextval()"  # autoincrement: the sequence name is PostgreSQL's choice
    key = _QUOTED_NUMBER.sub(r"\1", normalize_expression(default))
    if key == "now":  # now() and CURRENT_TIMESTAMP are one function
        key = "current_timestamp"
    try:
        return repr(float(key))
    except ValueError:
        return key


# -- indexes ------------------------------------------------------------------------------------


def _indexes_compared(schema: Schema, tables: set[str]) -> dict[str, Index]:
    """The indexes drift compares: unique constraints folded in as unique indexes, minus the
    indexes behind a primary key or exclusion constraint (compared as constraints)."""
    behind_constraints = {
        (c.table, c.name) for c in schema.constraints.values()
        if c.kind in (ConstraintKind.PRIMARY_KEY, ConstraintKind.EXCLUSION)
    }
    indexes = {
        name: index
        for name, index in schema.indexes.items()
        if index.table in tables and not index.primary and (index.table, name) not in behind_constraints
    }
    for c in schema.constraints.values():
        if c.kind == ConstraintKind.UNIQUE and c.table in tables and c.name not in indexes:
            indexes[c.name] = Index(c.name, c.table, c.columns, unique=True)
    return indexes


def _inexpressible(index: Index) -> bool:
    """An index schema.prisma cannot say: partial, or on an expression (the catalog shows an
    expression column as pg_get_indexdef text, which always holds a parenthesis)."""
    return index.predicate is not None or any("(" in column for column in index.columns)


def _indexes(expected: Schema, actual: Schema, scope: Scope) -> Iterator[tuple[DriftKind, str, str]]:
    tables = set(_common_tables(expected, actual))
    want = _indexes_compared(expected, tables)
    have = _indexes_compared(actual, tables)
    for name in sorted(set(want) | set(have)):
        if name not in have:
            yield DriftKind.MISSING_INDEX, name, f"{_index_text(want[name])} is expected but does not exist"
        elif name not in want:
            if scope.index_predicates or not _inexpressible(have[name]):
                yield DriftKind.EXTRA_INDEX, name, f"{_index_text(have[name])} exists but is not expected"
        else:
            detail = _index_difference(want[name], have[name], scope)
            if detail:
                yield DriftKind.INDEX_DEFINITION, name, f"index {name} {detail}"


def _index_text(index: Index) -> str:
    text = f"{'unique index' if index.unique else 'index'} {index.name} on {index.table} ({', '.join(index.columns)})"
    if index.method != "btree":
        text += f" USING {index.method}"
    if index.predicate:
        text += f" WHERE {index.predicate}"
    return text


def _index_difference(want: Index, have: Index, scope: Scope) -> str:
    parts = []
    if want.table != have.table:
        parts.append(f"is on table {have.table}, expected {want.table}")
    if want.columns != have.columns:
        parts.append(f"has columns ({', '.join(have.columns)}), expected ({', '.join(want.columns)})")
    if want.unique != have.unique:
        parts.append("is not unique, expected unique" if want.unique else "is unique, expected not unique")
    if want.method != have.method:
        parts.append(f"uses {have.method}, expected {want.method}")
    if scope.index_predicates and _predicate_key(want.predicate) != _predicate_key(have.predicate):
        parts.append(f"has predicate {_predicate_text(have.predicate)}, expected {_predicate_text(want.predicate)}")
    if want.valid and not have.valid:
        parts.append("is INVALID (a failed CREATE INDEX CONCURRENTLY?): it is not used and enforces nothing")
    return "; ".join(parts)


def _predicate_key(predicate: str | None) -> str | None:
    return normalize_expression(predicate) if predicate else None


def _predicate_text(predicate: str | None) -> str:
    return f"WHERE {predicate}" if predicate else "none"


# -- constraints --------------------------------------------------------------------------------

_KIND_TEXT = {
    ConstraintKind.PRIMARY_KEY: "PRIMARY KEY",
    ConstraintKind.FOREIGN_KEY: "FOREIGN KEY",
    ConstraintKind.CHECK: "CHECK",
    ConstraintKind.EXCLUSION: "EXCLUDE",
    ConstraintKind.UNIQUE: "UNIQUE",
}


def _constraints_compared(schema: Schema, tables: set[str], scope: Scope) -> dict[tuple[str, str], Constraint]:
    skipped = {ConstraintKind.UNIQUE}
    if not scope.check_constraints:
        skipped |= {ConstraintKind.CHECK, ConstraintKind.EXCLUSION}
    return {key: c for key, c in schema.constraints.items() if c.table in tables and c.kind not in skipped}


def _constraints(expected: Schema, actual: Schema, scope: Scope) -> Iterator[tuple[DriftKind, str, str]]:
    tables = set(_common_tables(expected, actual))
    want = _constraints_compared(expected, tables, scope)
    have = _constraints_compared(actual, tables, scope)
    for key in sorted(set(want) | set(have)):
        obj = f"{key[0]}.{key[1]}"
        if key not in have:
            definition = want[key].definition
            yield DriftKind.MISSING_CONSTRAINT, obj, f"constraint {obj} ({definition}) is expected but does not exist"
        elif key not in want:
            definition = have[key].definition
            yield DriftKind.EXTRA_CONSTRAINT, obj, f"constraint {obj} ({definition}) exists but is not expected"
        else:
            detail = _constraint_difference(want[key], have[key], scope)
            if detail:
                yield DriftKind.CONSTRAINT_DEFINITION, obj, f"constraint {obj} {detail}"


def _constraint_difference(want: Constraint, have: Constraint, scope: Scope) -> str:
    if want.kind != have.kind:
        return f"is a {_KIND_TEXT[have.kind]} constraint, expected {_KIND_TEXT[want.kind]}"
    parts = []
    if want.kind in (ConstraintKind.CHECK, ConstraintKind.EXCLUSION):
        if normalize_expression(want.definition) != normalize_expression(have.definition):
            parts.append(f"is {_strip_not_valid(have.definition)}, expected {_strip_not_valid(want.definition)}")
    elif want.columns != have.columns:
        parts.append(f"is on ({', '.join(have.columns)}), expected ({', '.join(want.columns)})")
    if want.kind == ConstraintKind.FOREIGN_KEY:
        if (want.ref_table, want.ref_columns) != (have.ref_table, have.ref_columns):
            parts.append(
                f"references {have.ref_table}({', '.join(have.ref_columns)}), "
                f"expected {want.ref_table}({', '.join(want.ref_columns)})"
            )
        if want.on_delete != have.on_delete:
            parts.append(f"has ON DELETE {have.on_delete}, expected ON DELETE {want.on_delete}")
        if want.on_update != have.on_update:
            parts.append(f"has ON UPDATE {have.on_update}, expected ON UPDATE {want.on_update}")
    if scope.validation and want.validated and not have.validated:
        parts.append("is present but NOT VALID: existing rows were never checked against it")
    return "; ".join(parts)


def _strip_not_valid(definition: str) -> str:
    return re.sub(r"\s+NOT VALID\s*$", "", definition)


# -- enums --------------------------------------------------------------------------------------


def _enums(expected: Schema, actual: Schema, scope: Scope) -> Iterator[tuple[DriftKind, str, str]]:
    for name in sorted(set(expected.enums) | set(actual.enums)):
        want, have = expected.enums.get(name), actual.enums.get(name)
        if have is None:
            yield DriftKind.ENUM_VALUES, name, f"enum {name} ({', '.join(want or ())}) is expected but does not exist"
        elif want is None:
            yield DriftKind.ENUM_VALUES, name, f"enum {name} ({', '.join(have)}) exists but is not expected"
        elif (want != have) if scope.enum_order else (set(want) != set(have)):
            missing = [v for v in want if v not in have]
            extra = [v for v in have if v not in want]
            detail = f"enum {name} has values ({', '.join(have)}), expected ({', '.join(want)})"
            if missing:
                detail += f"; missing {', '.join(missing)}"
            if extra:
                detail += f"; not expected {', '.join(extra)}"
            if not missing and not extra:
                detail += "; same values in another order"
            yield DriftKind.ENUM_VALUES, name, detail
