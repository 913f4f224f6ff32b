"""The one model of database structure.

A `Schema` is produced by introspecting a live catalog (`catalog.py`), by replaying a
migrations folder into a shadow database, by loading a snapshot file, or by parsing
`schema.prisma`; it is consumed by drift (diff of two Schemas), by the guards that
answer checks from the catalog, and by the pending-migration preflight.

Everything is frozen: a Schema read during a poll is shared, never mutated.
Names are the database's own (after Prisma's @map/@@map), unquoted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, asdict
from enum import StrEnum
from typing import Any
from collections.abc import Iterable, Mapping



class ConstraintKind(StrEnum):
    """Constraint kinds, as in the metric label `kind` of venzory_db_constraint_present."""

    PRIMARY_KEY = "primary_key"
    UNIQUE = "unique"
    CHECK = "check"
    FOREIGN_KEY = "foreign_key"
    EXCLUSION = "exclusion"
    INDEX = "index"  # a plain (non-unique) index, only used by the constraint-presence report
    NOT_NULL = "not_null"  # a NOT NULL column, as an expectation (docs/expectations.md)


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type() text, e.g. "integer", "timestamp(3) without time zone"
    nullable: bool
    default: str | None = None  # pg_get_expr() text, None when there is none


@dataclass(frozen=True)
class Index:
    name: str
    table: str
    columns: tuple[str, ...]  # column names; an expression column is its pg_get_indexdef text
    unique: bool
    predicate: str | None = None  # partial index WHERE clause, pg_get_expr() text
    valid: bool = True  # pg_index.indisvalid (false after a failed CREATE INDEX CONCURRENTLY)
    primary: bool = False
    method: str = "btree"


@dataclass(frozen=True)
class Constraint:
    name: str
    table: str
    kind: ConstraintKind  # not INDEX
    columns: tuple[str, ...] = ()
    definition: str = ""  # pg_get_constraintdef() text
    validated: bool = True  # false for NOT VALID constraints
    ref_table: str | None = None
    ref_columns: tuple[str, ...] = ()
    on_delete: str | None = None  # "CASCADE", "RESTRICT", "SET NULL", "SET DEFAULT", "NO ACTION"
    on_update: str | None = None


@dataclass(frozen=True)
class Table:
    name: str
    columns: Mapping[str, Column] = field(default_factory=dict)


@dataclass(frozen=True)
class Schema:
    tables: Mapping[str, Table] = field(default_factory=dict)
    indexes: Mapping[str, Index] = field(default_factory=dict)  # by index name (unique per schema)
    constraints: Mapping[tuple[str, str], Constraint] = field(default_factory=dict)  # by (table, name)
    enums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # enum name -> labels in order
    # Live tables locked (ACCESS EXCLUSIVE, a migration?) when read: their expressions
    # (defaults, CHECK and index definitions) are None, unknown rather than absent.
    locked: frozenset[str] = frozenset()

    # -- lookups ---------------------------------------------------------------------------
    def has_table(self, table: str) -> bool:
        return table in self.tables

    def has_column(self, table: str, column: str) -> bool:
        return table in self.tables and column in self.tables[table].columns

    def constraint(self, table: str, name: str) -> Constraint | None:
        return self.constraints.get((table, name))

    def constraints_of(self, table: str) -> Iterable[Constraint]:
        return (c for (t, _), c in self.constraints.items() if t == table)

    def indexes_of(self, table: str) -> Iterable[Index]:
        return (i for i in self.indexes.values() if i.table == table)

    # -- snapshot files ----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "tables": {
                t.name: {"columns": [asdict(c) for c in t.columns.values()]}
                for t in self.tables.values()
            },
            "indexes": [asdict(i) for i in self.indexes.values()],
            "constraints": [asdict(c) for c in self.constraints.values()],
            "enums": {name: list(labels) for name, labels in self.enums.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Schema:
        tables = {
            name: Table(name, {c["name"]: Column(**c) for c in spec["columns"]})
            for name, spec in data["tables"].items()
        }
        indexes = {}
        for raw in data["indexes"]:
            raw = dict(raw, columns=tuple(raw["columns"]))
            indexes[raw["name"]] = Index(**raw)
        constraints = {}
        for raw in data["constraints"]:
            raw = dict(raw, columns=tuple(raw["columns"]), ref_columns=tuple(raw["ref_columns"]))
            constraints[(raw["table"], raw["name"])] = Constraint(**raw)
        enums = {name: tuple(labels) for name, labels in data["enums"].items()}
        return cls(tables, indexes, constraints, enums)


_CAST = re.compile(
    r'::\s*(?:"[^"]+"|\w+(?:\(\d+(?:,\s*\d+)?\))?'
    r'(?:\s+(?:varying|precision|with(?:out)?\s+time\s+zone))?(?:\(\d+(?:,\s*\d+)?\))?)(?:\[\])?',
    re.I,
)
_NOISE = re.compile(r'[\s()"]')


def normalize_expression(sql: str) -> str:
    """A comparison key for two spellings of one SQL boolean expression.

    PostgreSQL prints `CHECK ((quantity >= 0))` or
    `(((status <> 'SENT'::"OrderStatus") OR ("sentAt" IS NOT NULL)))` for what a config
    writes as `"quantity" >= 0` or `status::text <> 'SENT' OR "sentAt" IS NOT NULL`.
    Dropping the CHECK keyword, casts, quotes, parentheses, white space and case makes
    them equal. It can, in principle, equate two expressions that differ only in
    parenthesisation; that is why guarded answers are re-verified by the periodic full scan.
    """
    text = sql.strip()
    if text.upper().startswith("CHECK"):
        text = text[5:]
    text = re.sub(r"\s+NOT VALID\s*$", "", text, flags=re.I)
    text = _CAST.sub("", text)
    return _NOISE.sub("", text).lower()


_NULL_OR = re.compile(r'^\s*\(*\s*"?([A-Za-z_][A-Za-z0-9_]*)"?\s+IS\s+NULL\s*\)*\s+OR\s+(.+)$', re.I | re.S)
_COMPOUND = re.compile(r"\b(OR|AND|IS|COALESCE|CASE|NOT)\b", re.I)


def canonical_expression(sql: str) -> str:
    """normalize_expression, and one equivalence CHECK semantics make: a row passes a rule
    that is NULL, so `x IS NULL OR x >= 0` and `x >= 0` reject the same rows when the rest
    is one simple comparison of x (NULL whenever x is NULL). Apps write both forms, and a
    consolidated baseline may switch between them."""
    text = sql.strip()
    if text.upper().startswith("CHECK"):
        text = text[5:]
    text = unwrap(re.sub(r"\s+NOT VALID\s*$", "", text, flags=re.I))
    match = _NULL_OR.match(text)
    if match:
        column, rest = match.groups()
        rest = rest.strip()
        while rest.endswith(")") and not balanced(rest):
            rest = rest[:-1].rstrip()
        if not _COMPOUND.search(rest) and re.search(rf'(^|[^A-Za-z0-9_]){re.escape(column)}([^A-Za-z0-9_]|$)', rest):
            text = rest
    return normalize_expression(text)


def unwrap(text: str) -> str:
    """`((a >= 0))` -> `a >= 0`: the parentheses around the whole expression dropped."""
    text = text.strip()
    while text.startswith("(") and text.endswith(")") and balanced(text[1:-1]):
        text = text[1:-1].strip()
    return text


def balanced(text: str) -> bool:
    """Its parentheses pair up (so `(a) OR (b)` is not wrapped in one pair)."""
    depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0
