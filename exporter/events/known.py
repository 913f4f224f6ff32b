"""The names an event label may take: what the config and the expected schema know.

Label values are bounded by these sets (anything else becomes "other"), so a flood of
made-up constraint or table names cannot grow the number of series.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING
from collections.abc import Mapping

from exporter.schema.model import ConstraintKind, Schema

if TYPE_CHECKING:
    from exporter.config import Config


class ErrorKind(StrEnum):
    """What a Prisma error really is: the `kind` label of venzory_db_prisma_errors."""

    UNIQUE = "unique"
    FOREIGN_KEY = "foreign_key"
    CHECK = "check"
    NOT_NULL = "not_null"
    WRITE_CONFLICT = "write_conflict"
    RECORD_NOT_FOUND = "record_not_found"
    RELATION = "relation"
    OTHER = "other"


# Constraint kinds of the config / Schema that Prisma reports as errors, -> event kind.
_EVENT_KIND = {ConstraintKind.UNIQUE: ErrorKind.UNIQUE, ConstraintKind.PRIMARY_KEY: ErrorKind.UNIQUE,
               ConstraintKind.FOREIGN_KEY: ErrorKind.FOREIGN_KEY, ConstraintKind.CHECK: ErrorKind.CHECK}


@dataclass(frozen=True)
class KnownNames:
    constraints: frozenset[str] = frozenset()
    tables: frozenset[str] = frozenset()
    critical_constraints: frozenset[str] = frozenset()
    # (table or model name, columns in order) -> name of the unique constraint on them:
    # Prisma 5 reports a unique violation by its columns only.
    unique_columns: Mapping[tuple[str, tuple[str, ...]], str] = field(default_factory=dict)
    # (table, name, event kind) of each expected constraint: the critical ones get their
    # series created at 0 from the start.
    expected: frozenset[tuple[str, str, str]] = frozenset()
    # A constraint the app re-created under another name -> the configured name it was
    # matched to by meaning (exporter.checks.constraints): events are counted under the
    # configured name, so alerts on a rule (check_quantity_non_negative) survive a rename.
    aliases: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> KnownNames:
        """From config.constraints, the duplicate checks' guarding constraints, the
        checks' tables and events.known_constraints."""
        expected = frozenset(
            (c.table, c.name, _EVENT_KIND[c.kind]) for c in config.constraints if c.kind in _EVENT_KIND
        )
        unique_columns = {
            (check.table, tuple(check.columns)): check.constraint
            for check in config.checks
            if check.kind == "duplicate" and check.constraint
        }
        guarding = {check.constraint for check in config.checks if check.constraint}
        return cls(
            constraints=frozenset({c.name for c in config.constraints} | guarding
                                  | set(config.events.known_constraints)),
            tables=frozenset({c.table for c in config.constraints} | {check.table for check in config.checks}),
            critical_constraints=frozenset(c.name for c in config.constraints if c.critical),
            unique_columns=unique_columns,
            expected=expected,
        )

    def with_schema(self, schema: Schema) -> KnownNames:
        """These names plus an (expected) `exporter.schema.model.Schema`'s tables,
        constraints, unique indexes and their columns."""
        unique_columns = dict(self.unique_columns)
        names = set(self.constraints)
        for constraint in schema.constraints.values():
            names.add(constraint.name)
            if constraint.kind in (ConstraintKind.UNIQUE, ConstraintKind.PRIMARY_KEY) and constraint.columns:
                unique_columns.setdefault((constraint.table, tuple(constraint.columns)), constraint.name)
        for index in schema.indexes.values():
            if index.unique:
                names.add(index.name)
                unique_columns.setdefault((index.table, tuple(index.columns)), index.name)
        return replace(self, constraints=frozenset(names), tables=self.tables | frozenset(schema.tables),
                       unique_columns=unique_columns)

    def with_aliases(self, aliases: Mapping[str, str]) -> KnownNames:
        """These names, with events of each live name counted under its configured name."""
        return replace(self, aliases={**self.aliases, **aliases})
