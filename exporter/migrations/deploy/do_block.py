"""DO blocks: the decidable part of a migration's PL/pgSQL, walked as if its statements
stood in the migration.

Hand-edited Prisma migrations make DDL idempotent with a DO block:
`DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE ...) THEN
ALTER TABLE ... ADD COLUMN ...; END IF; END $$;`. Such a body is parsed here with pglast's
PL/pgSQL parser into plain SQL statements and IF / ELSIF / ELSE branches whose conditions are
`[NOT] EXISTS` look-ups by name in a catalog view; the look-up is answered from the virtual
catalog as the earlier statements left it (and, for the other schemas, from the live
catalog), and the chosen branch's statements are run by the statement walker. Anything else
(variables, loops, EXECUTE, PERFORM, RAISE, exception handlers, a condition on anything but
a catalog look-up by constants) raises NotModelled naming it: the block may then change any
table or the schema, so every table's rows and the absence of anything become unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import psycopg
from pglast import ast, parse_plpgsql, parse_sql
from pglast.enums import A_Expr_Kind, BoolExprType, SQLValueFunctionOp, SubLinkType

from exporter.migrations.deploy.evaluator import Evaluator, Query, Unknown, error_text
from exporter.migrations.deploy.parsing import Statement, expression_node, literal, strings
from exporter.migrations.deploy.results import EFFECTS, LOCK_ORDER, Outcome, StatementResult
from exporter.migrations.deploy.state import CHECK, FOREIGN_KEY, PRIMARY_KEY, UNIQUE, State
from exporter.schema.model import ConstraintKind


class NotModelled(Exception):
    """What in the DO block is not modelled."""


@dataclass(frozen=True)
class Sql:
    """A plain SQL statement of the body."""

    text: str
    node: ast.Node


@dataclass(frozen=True)
class If:
    branches: tuple[tuple[ast.Node | None, tuple[Step, ...]], ...]  # (condition, body); None: ELSE


class Return:
    """RETURN: the rest of the block does not run."""


Step = Sql | If | Return

# The statement walker (walk.run), handed in: it runs each statement of the chosen branch.
Run = Callable[[Evaluator, Statement], StatementResult]


def evaluate(ev: Evaluator, node: ast.DoStmt, base: StatementResult, run: Run) -> StatementResult:
    """A body of plain statements and IF branches on catalog look-ups is walked as if its
    statements stood here; anything else may change any table or the schema, so every
    table's rows and the absence of anything become unknown."""
    try:
        if ev.state.catalog_unknown:
            raise NotModelled(f"the catalog is unknown after {ev.state.catalog_unknown}")
        done: list[StatementResult] = []
        _run_steps(ev, parse(node, base.text), base, done, run)
    except (NotModelled, psycopg.Error) as e:
        reason = f"a DO block (statement {base.number})"
        for t in ev.state.tables.values():
            t.tainted = t.tainted or f"{reason} may change any table"
        ev.state.catalog_unknown = ev.state.catalog_unknown or reason
        what = error_text(e) if isinstance(e, psycopg.Error) else str(e)
        raise Unknown(f"a DO block is not modelled ({what}): it may change any table or the schema") from None
    return _combined(base, done)


def _run_steps(ev: Evaluator, steps: Sequence[Step], base: StatementResult, done: list[StatementResult],
               run: Run) -> bool:
    """Runs a DO block's steps; False once a RETURN or a failing statement ends the block."""
    for step in steps:
        if isinstance(step, Return):
            return False
        if isinstance(step, If):
            lookup = partial(exists, ev.state, query=ev.query)
            body = next(b for cond, b in step.branches if cond is None or decide(cond, lookup, ev.state.schema))
            if not _run_steps(ev, body, base, done, run):
                return False
            continue
        result = run(ev, Statement(base.number, base.line, step.text, step.node))
        if result.outcome == Outcome.CANNOT_EVALUATE:
            raise NotModelled(f"{step.text[:60]!r}: {result.reason}")
        done.append(result)
        if result.outcome == Outcome.FAILS:
            return False
    return True


def _combined(base: StatementResult, parts: Sequence[StatementResult]) -> StatementResult:
    """A DO block's result from its statements': their effects added up, the strongest lock
    (on its table), the failure of the last one if it failed; numbered as the DO statement."""
    effects = {e: sum(getattr(p, e) for p in parts) for e in EFFECTS}
    scanned = [p.rows_scanned for p in parts if p.rows_scanned is not None]
    result = replace(base, **effects, rewrites=any(p.rewrites for p in parts),
                     rows_scanned=max(scanned, default=0) if len(scanned) == len(parts) else None)
    locked = max(parts, key=lambda p: LOCK_ORDER.index(p.lock) if p.lock in LOCK_ORDER else 0, default=None)
    if locked is not None:
        result = replace(result, table=locked.table, lock=locked.lock)
    if parts and parts[-1].outcome == Outcome.FAILS:
        f = parts[-1]
        result = replace(result, outcome=Outcome.FAILS, table=f.table, reason=f.reason, sqlstate=f.sqlstate,
                         offending_rows=f.offending_rows, inspect_sql=f.inspect_sql)
    return result


# -- the body, as steps -------------------------------------------------------------------------

_KINDS = {
    "PLpgSQL_stmt_dynexecute": "EXECUTE", "PLpgSQL_stmt_perform": "PERFORM", "PLpgSQL_stmt_raise": "RAISE",
    "PLpgSQL_stmt_assign": "an assignment", "PLpgSQL_stmt_loop": "a LOOP", "PLpgSQL_stmt_while": "a WHILE loop",
    "PLpgSQL_stmt_fori": "a FOR loop", "PLpgSQL_stmt_fors": "a FOR loop", "PLpgSQL_stmt_forc": "a FOR loop",
    "PLpgSQL_stmt_dynfors": "a FOR ... EXECUTE loop", "PLpgSQL_stmt_foreach_a": "a FOREACH loop",
    "PLpgSQL_stmt_case": "CASE", "PLpgSQL_stmt_getdiag": "GET DIAGNOSTICS", "PLpgSQL_stmt_call": "CALL",
}


def parse(node: ast.DoStmt, text: str) -> tuple[Step, ...]:
    """The body of a DO statement (`text`: the statement as written) as steps."""
    options = {d.defname: d.arg.sval or "" for d in node.args or () if isinstance(d.arg, ast.String)}
    if options.get("language", "plpgsql").lower() != "plpgsql":
        raise NotModelled(f"LANGUAGE {options['language']}")
    try:
        (function,) = parse_plpgsql(text)
    except Exception as e:  # pglast raises its own ParseError, or ValueError on odd input
        raise NotModelled(f"its body does not parse as PL/pgSQL: {e}") from None
    body = function["PLpgSQL_function"]
    variables = [d for d in body.get("datums", ()) if _refname(d) != "found"]
    if variables:
        raise NotModelled("variables (DECLARE) are not modelled")
    return _block(body["action"]["PLpgSQL_stmt_block"])


def _refname(datum: dict[str, Any]) -> str:
    fields: dict[str, Any] = next(iter(datum.values()), {})
    return str(fields.get("refname", ""))


def _block(block: dict[str, Any]) -> tuple[Step, ...]:
    if block.get("exceptions"):
        raise NotModelled("an EXCEPTION handler is not modelled")
    return tuple(_step(s) for s in block.get("body", ()))


def _step(statement: dict[str, Any]) -> Step:
    (kind, fields), = statement.items()
    if kind == "PLpgSQL_stmt_execsql":
        if fields.get("into"):
            raise NotModelled("SELECT ... INTO is not modelled")
        query = fields["sqlstmt"]["PLpgSQL_expr"]["query"]
        parsed = parse_sql(query)
        node = parsed[0].stmt if len(parsed) == 1 else None
        if node is None or isinstance(node, ast.SelectStmt):
            raise NotModelled(f"the statement {query!r} is not modelled")
        return Sql(query.strip(), node)
    if kind == "PLpgSQL_stmt_if":
        branches: list[tuple[ast.Node | None, tuple[Step, ...]]] = [
            (_condition(fields["cond"]), tuple(_step(s) for s in fields.get("then_body", ())))]
        for elsif in fields.get("elsif_list", ()):
            e = elsif["PLpgSQL_if_elsif"]
            branches.append((_condition(e["cond"]), tuple(_step(s) for s in e.get("stmts", ()))))
        branches.append((None, tuple(_step(s) for s in fields.get("else_body", ()))))
        return If(tuple(branches))
    if kind == "PLpgSQL_stmt_block":
        return If(((None, _block(fields)),))
    if kind == "PLpgSQL_stmt_return" and not fields.get("expr"):
        return Return()
    raise NotModelled(f"{_KINDS.get(kind, kind.removeprefix('PLpgSQL_stmt_').upper())} is not modelled")


def _condition(cond: dict[str, Any]) -> ast.Node:
    return expression_node(cond["PLpgSQL_expr"]["query"])


# -- conditions: look-ups by name in a catalog view --------------------------------------------

# A catalog answers (view, {column: value}) -> whether such a row exists.
Lookup = Callable[[str, dict[str, str]], bool]


def decide(condition: ast.Node, lookup: Lookup, schema: str) -> bool:
    """The value of an IF condition made of [NOT] EXISTS look-ups joined by AND / OR / NOT."""
    if isinstance(condition, ast.BoolExpr):
        values = [decide(a, lookup, schema) for a in condition.args or ()]
        if condition.boolop == BoolExprType.NOT_EXPR:
            return not values[0]
        return all(values) if condition.boolop == BoolExprType.AND_EXPR else any(values)
    if isinstance(condition, ast.SubLink) and condition.subLinkType == SubLinkType.EXISTS_SUBLINK:
        view, filters = _look_up(condition.subselect, schema)
        return lookup(view, filters)
    raise NotModelled("an IF condition other than [NOT] EXISTS (SELECT ... FROM <catalog view> WHERE ...) "
                      "is not modelled")


def _look_up(select: ast.Node | None, schema: str) -> tuple[str, dict[str, str]]:
    """(view, filters) of `SELECT ... FROM view WHERE col = constant AND ...`."""
    if not (isinstance(select, ast.SelectStmt) and select.fromClause and len(select.fromClause) == 1
            and isinstance(select.fromClause[0], ast.RangeVar) and not select.withClause
            and not select.groupClause and not select.havingClause and select.larg is None):
        raise NotModelled("an EXISTS sub-query other than a look-up in one catalog view is not modelled")
    rv = select.fromClause[0]
    view = f"{rv.schemaname or 'pg_catalog'}.{rv.relname}"
    if view not in VIEWS:
        raise NotModelled(f"a look-up in {view} is not modelled")
    names = {rv.relname, rv.alias.aliasname if rv.alias else rv.relname}
    where = select.whereClause
    terms = (where.args or ()) if isinstance(where, ast.BoolExpr) and where.boolop == BoolExprType.AND_EXPR \
        else (where,)
    filters: dict[str, str] = {}
    for term in terms:
        pair = _equality(term, schema) if term is not None else None
        if pair is None or (pair[0][:-1] and pair[0][-2] not in names):
            raise NotModelled(f"a filter on {view} other than column = constant is not modelled")
        column, value = pair[0][-1], pair[1]
        if filters.get(column, value) != value:
            return view, {"?": "never"}  # two different values for one column: no row
        filters[column] = value
    return view, filters


def _equality(term: ast.Node, schema: str) -> tuple[list[str], str] | None:
    if not (isinstance(term, ast.A_Expr) and term.kind == A_Expr_Kind.AEXPR_OP
            and strings(term.name) == ["="]):
        return None
    for column, value in ((term.lexpr, term.rexpr), (term.rexpr, term.lexpr)):
        constant = _constant(value, schema)
        if isinstance(column, ast.ColumnRef) and constant is not None:
            return strings(column.fields), constant
    return None


def _constant(node: object, schema: str) -> str | None:
    if isinstance(node, ast.TypeCast) and node.typeName and strings(node.typeName.names)[-1:] in (
            ["text"], ["name"], ["varchar"]):
        return _constant(node.arg, schema)
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.String):
        return node.val.sval
    if isinstance(node, ast.SQLValueFunction) and node.op == SQLValueFunctionOp.SVFOP_CURRENT_SCHEMA:
        return schema
    if isinstance(node, ast.FuncCall) and strings(node.funcname)[-1:] == ["current_schema"] and not node.args:
        return schema
    return None


# -- the catalog views, as the virtual catalog answers them -------------------------------------


@dataclass(frozen=True)
class View:
    columns: frozenset[str]  # that a filter may name
    schema_columns: tuple[str, ...]  # naming the schema (text); the others are answered live
    other_schemas: str  # SQL condition: the row is in another schema than {schema}
    rows: Callable[[State], Iterator[dict[str, str]]]  # from the virtual state; a missing column: unknown
    required: str = ""  # a filter it needs to be exact (table_constraints also lists NOT NULLs)


def _columns(state: State) -> Iterator[dict[str, str]]:
    for t in state.tables.values():
        for c in t.columns:
            yield {"table_schema": state.schema, "table_name": t.name, "column_name": c}


def _tables(state: State) -> Iterator[dict[str, str]]:
    for t in state.tables:
        yield {"table_schema": state.schema, "table_name": t, "table_type": "BASE TABLE"}
    for name in state.other_relations:  # a view is listed, a sequence is not: unknown
        yield {"table_schema": state.schema, "table_name": name, "?": ""}


# ConstraintKind -> (information_schema's constraint_type, pg_constraint's contype)
_CONSTRAINT_TYPES = {CHECK: ("CHECK", "c"), FOREIGN_KEY: ("FOREIGN KEY", "f"),
                     PRIMARY_KEY: ("PRIMARY KEY", "p"), UNIQUE: ("UNIQUE", "u")}


def _constraint_type(kind: ConstraintKind) -> tuple[str, str]:
    return _CONSTRAINT_TYPES.get(kind, ("?", "?"))


def _table_constraints(state: State) -> Iterator[dict[str, str]]:
    for c in state.constraints.values():
        yield {"constraint_schema": state.schema, "table_schema": state.schema, "constraint_name": c.name,
               "table_name": c.table, "constraint_type": _constraint_type(c.kind)[0]}


def _pg_constraint(state: State) -> Iterator[dict[str, str]]:
    for c in state.constraints.values():
        yield {"conname": c.name, "contype": _constraint_type(c.kind)[1]}


def _pg_indexes(state: State) -> Iterator[dict[str, str]]:
    for name, (table, _, _) in state.indexes.items():
        yield {"schemaname": state.schema, "tablename": table, "indexname": name}


def _pg_class(state: State) -> Iterator[dict[str, str]]:
    yield from ({"relname": t, "relkind": "r"} for t in state.tables)
    yield from ({"relname": i, "relkind": "i"} for i in state.indexes)
    yield from ({"relname": o} for o in state.other_relations)


def _pg_type(state: State) -> Iterator[dict[str, str]]:
    for name in state.enums:
        yield {"typname": name, "typtype": "e"}
        yield {"typname": "_" + name, "typtype": "b"}
    for name in state.tables:  # every table has its row type
        yield {"typname": name, "typtype": "c"}
        yield {"typname": "_" + name, "typtype": "b"}
    for name in state.other_relations:
        yield {"typname": name, "?": ""}
        yield {"typname": "_" + name, "?": ""}


_NSP = "ALL (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = {schema})"
VIEWS = {
    "information_schema.columns": View(frozenset({"table_schema", "table_name", "column_name"}), ("table_schema",),
                                       "table_schema <> {schema}", _columns),
    "information_schema.tables": View(frozenset({"table_schema", "table_name", "table_type"}), ("table_schema",),
                                      "table_schema <> {schema}", _tables),
    "information_schema.table_constraints": View(
        frozenset({"constraint_schema", "table_schema", "constraint_name", "table_name", "constraint_type"}),
        ("constraint_schema", "table_schema"), "table_schema <> {schema}", _table_constraints,
        required="constraint_name"),
    "pg_catalog.pg_constraint": View(frozenset({"conname", "contype"}), (), "connamespace <> " + _NSP, _pg_constraint,
                                     required="conname"),
    "pg_catalog.pg_indexes": View(frozenset({"schemaname", "tablename", "indexname"}), ("schemaname",),
                                  "schemaname <> {schema}", _pg_indexes),
    "pg_catalog.pg_class": View(frozenset({"relname", "relkind"}), (), "relnamespace <> " + _NSP, _pg_class,
                                required="relname"),
    "pg_catalog.pg_type": View(frozenset({"typname", "typtype"}), (), "typnamespace <> " + _NSP, _pg_type,
                               required="typname"),
}


def exists(state: State, view_name: str, filters: dict[str, str], query: Query) -> bool:
    """Whether the view holds a row matching `filters`: in the monitored schema from the
    virtual state, in the other schemas (which migrations do not change) from the live catalog."""
    if "?" in filters:
        return False
    view = VIEWS[view_name]
    unknown = set(filters) - view.columns
    if unknown:
        raise NotModelled(f"a filter on {view_name}.{sorted(unknown)[0]} is not modelled")
    if view.required and view.required not in filters:
        raise NotModelled(f"a look-up in {view_name} without {view.required} = ... is not modelled")
    schemas = {filters[c] for c in view.schema_columns if c in filters}
    if schemas - {state.schema}:
        raise NotModelled(f"a look-up in another schema ({sorted(schemas - {state.schema})[0]}) is not modelled")
    for row in view.rows(state):
        known = {c: v for c, v in filters.items() if c in row}
        if all(row[c] == v for c, v in known.items()):
            if len(known) < len(filters) or "?" in row:
                raise NotModelled(f"{view_name} as an earlier statement left it (a relation of unknown kind)")
            return True
    if schemas:
        return False
    where = " AND ".join([f"{c} = {literal(v)}" for c, v in filters.items()]
                         + [view.other_schemas.format(schema=literal(state.schema))])
    return bool(query(f"SELECT EXISTS (SELECT 1 FROM {view_name} WHERE {where})")[0])
