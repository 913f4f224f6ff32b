"""Reusable validated types for the config models (the query-exporter pattern)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated

import pglast
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SECONDS: dict[str | None, float] = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_BYTES = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_BYTE_UNITS: dict[str | None, float] = {
    None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2, "GB": 1000**3, "GiB": 1024**3,
}


def _quantity(value: object, pattern: re.Pattern[str], units: Mapping[str | None, float],
              number: Callable[[float], float], what: str, example: str) -> float:
    """A positive number, given bare or as a string with a unit ("30s", "8MiB")."""
    if isinstance(value, bool):
        raise ValueError(f"expected a {what} like {example}")
    if isinstance(value, (int, float)) and (number is float or isinstance(value, int)):
        amount = number(value)
    elif isinstance(value, str) and (m := pattern.match(value)):
        amount = number(float(m.group(1)) * units[m.group(2)])
    else:
        raise ValueError(f"expected a {what} like {example}, got {value!r}")
    if amount <= 0:
        raise ValueError(f"a {what} must be greater than zero")
    return amount


def parse_duration(value: object) -> float:
    return _quantity(value, _DURATION, _SECONDS, float, "duration", "30s, 5m, 24h")


# Seconds, written in YAML as a number or "500ms", "30s", "5m", "24h", "7d".
Duration = Annotated[float, BeforeValidator(parse_duration)]

# Bytes, written in YAML as a number or "512KiB", "8MiB", "1MB".
ByteSize = Annotated[int, BeforeValidator(
    lambda v: _quantity(v, _BYTES, _BYTE_UNITS, int, "size", "1048576, 512KiB, 8MiB"))]

# A label-safe identifier: database names, check names and categories become label values.
Identifier = Annotated[str, BeforeValidator(lambda v: _identifier(v))]


def _identifier(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,99}", value):
        raise ValueError(f"expected a name of letters, digits, '_', '-', '.', got {value!r}")
    return value


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_CLAUSES = {"distinctClause": "DISTINCT", "intoClause": "INTO", "fromClause": "FROM", "whereClause": "WHERE",
            "groupClause": "GROUP BY", "havingClause": "HAVING", "windowClause": "WINDOW", "valuesLists": "VALUES",
            "sortClause": "ORDER BY", "limitOffset": "OFFSET", "limitCount": "LIMIT",
            "lockingClause": "FOR UPDATE/SHARE", "withClause": "WITH"}
_NOT_CLAUSES = ("targetList", "op", "limitOption", "all", "groupDistinct")


def _one_expression(text: str) -> str:
    """A SQL expression and nothing else, as PostgreSQL's own parser (libpg_query, through
    pglast) reads it: `SELECT <text>` must be one statement selecting one unnamed value,
    with no FROM, no other clause, and no comment (a comment would swallow what the check
    writes after the expression). Parsed, not pattern-matched: no quoting trick gets a
    second statement or a clause past it."""
    try:
        statements = pglast.parse_sql(f"SELECT {text}")
        comments = [t for t in pglast.parser.scan(text) if t.name in ("SQL_COMMENT", "C_COMMENT")]
    except pglast.parser.ParseError as e:
        raise ValueError(f"not one SQL expression: {e}") from None
    if len(statements) != 1:
        raise ValueError("not one SQL expression: it holds several statements")
    select = statements[0].stmt
    if not isinstance(select, pglast.ast.SelectStmt):  # SELECT <text> parses as nothing else
        raise ValueError("not one SQL expression")
    if select.op:
        raise ValueError("not one SQL expression: it adds a set operation (UNION, INTERSECT, EXCEPT)")
    # Every attribute but the known harmless ones: a clause pglast adds later is refused too.
    slots = select.__slots__  # type: ignore[attr-defined]  # pglast's stubs leave it out
    clauses = [_CLAUSES.get(k, k) for k in slots if k not in _NOT_CLAUSES and getattr(select, k)]
    if clauses:
        raise ValueError(f"not one SQL expression: it adds {', '.join(clauses)} to the query")
    targets = select.targetList or ()
    if len(targets) != 1 or targets[0].name:
        raise ValueError("not one SQL expression: a list of values, or a value with AS")
    if comments:
        raise ValueError("not one SQL expression: remove the comment (-- or /* */)")
    return text


# `rule` and `where` of a check: spliced into the check's query, so exactly one expression.
SqlExpression = Annotated[str, AfterValidator(_one_expression)]
