"""The shared shape of the check kinds."""

from __future__ import annotations

from dataclasses import dataclass


def ident(name: str) -> str:
    """A quoted SQL identifier (Prisma's camelCase names need quotes)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class TablePass:
    """Counted by one `count(*) FILTER (WHERE condition)` in its table's single pass.

    `join` is an optional LEFT JOIN clause the condition needs (its alias is chosen by
    the planner, so several joins can share one pass).
    """

    condition: str
    join: str = ""


@dataclass(frozen=True)
class OwnQuery:
    """Counted by a query of its own returning one row: (violating rows, groups)."""

    sql: str
