"""A migration.sql as PostgreSQL's own parser reads it (pglast, a binding of libpg_query),
and the small pieces of AST and SQL text the statement kinds share."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql
from pglast.stream import RawStream


@dataclass(frozen=True)
class Statement:
    number: int
    line: int
    text: str
    node: ast.Node


def split_statements(script: str) -> list[Statement]:
    """The statements of a migration.sql, with their 1-based line. Raises ParseError."""
    result = []
    encoded = script.encode("utf-8")  # libpg_query's locations are byte offsets
    for number, raw in enumerate(parse_sql(script), start=1):
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(encoded)
        text = encoded[start:end].decode("utf-8", "replace")
        lead = len(text) - len(text.lstrip())
        line = encoded[: start + lead].count(b"\n") + 1
        result.append(Statement(number, line, text.strip(), raw.stmt))
    return result


def migration_warnings(statements: Sequence[Statement]) -> list[str]:
    """Why a migration is unsafe to run the way deploy runs it (one implicit transaction)."""
    warnings = []
    control = [f"{s.number} (line {s.line})" for s in statements if isinstance(s.node, ast.TransactionStmt)]
    if control:
        warnings.append(f"BEGIN/COMMIT inside the migration (statement {', '.join(control)}): a failure after a COMMIT "
                        "leaves the statements before it applied, while deploy records the migration as failed")
    for s in statements:
        if is_concurrent_index(s) and len(statements) > 1:
            warnings.append(f"statement {s.number} (line {s.line}): CREATE INDEX CONCURRENTLY cannot run inside the "
                            "transaction block deploy runs a multi-statement migration in")
    return warnings


def is_concurrent_index(statement: Statement) -> bool:
    return isinstance(statement.node, ast.IndexStmt) and bool(statement.node.concurrent)


# -- the AST ------------------------------------------------------------------------------------


def walk(node: object, *, into_subqueries: bool = True) -> Iterator[ast.Node]:
    if isinstance(node, (list, tuple)):
        for item in node:
            yield from walk(item, into_subqueries=into_subqueries)
    elif isinstance(node, ast.Node):
        yield node
        if isinstance(node, ast.SubLink) and not into_subqueries:
            yield from walk(node.testexpr, into_subqueries=False)
            return
        for attr in getattr(type(node), "__slots__", ()):
            yield from walk(getattr(node, attr, None), into_subqueries=into_subqueries)


def expression_node(expression: str) -> ast.Node:
    """An expression's AST (a CHECK constraint's text from the catalog, a DO block's IF)."""
    select = parse_sql(f"SELECT {expression}")[0].stmt
    assert isinstance(select, ast.SelectStmt) and select.targetList
    value = select.targetList[0].val
    assert isinstance(value, ast.Node)
    return value


def strings(nodes: Any) -> list[str]:
    """The String values of a name list (an operator, a qualified column or function name)."""
    return [n.sval or "" for n in nodes or () if isinstance(n, ast.String)]


def last_name(names: Sequence[object] | None) -> str:
    """Last component of a qualified name list (String nodes)."""
    last = names[-1] if names else None
    return (last.sval or "") if isinstance(last, ast.String) else ""


def columns_used(node: object) -> set[str]:
    return {f for n in walk(node) if isinstance(n, ast.ColumnRef) for f in strings(n.fields)}


_VOLATILE = {"random", "gen_random_uuid", "uuid_generate_v4", "clock_timestamp", "nextval", "timeofday"}


def is_volatile(node: object) -> bool:
    return any(isinstance(n, ast.FuncCall) and last_name(n.funcname).lower() in _VOLATILE for n in walk(node))


def table_of(node: object) -> str:
    relation = getattr(node, "relation", None)
    return getattr(relation, "relname", "") or ""


# -- SQL text -----------------------------------------------------------------------------------


def deparse(node: object) -> str:
    return RawStream()(node)


def type_sql(type_name: ast.TypeName) -> tuple[str, str]:
    """A type's SQL text and its unquoted last name (to match enums)."""
    return deparse(type_name), last_name(type_name.names)


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def unquote(name: str) -> str:
    name = name.strip()
    return name[1:-1].replace('""', '"') if name.startswith('"') and name.endswith('"') else name


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_TRAILING_ALIAS = re.compile(r' AS "(?:[^"]|"")+"$')


def aliased(source: str, alias: str) -> str:
    """The FROM item under another alias."""
    return _TRAILING_ALIAS.sub(f" AS {ident(alias)}", source)
