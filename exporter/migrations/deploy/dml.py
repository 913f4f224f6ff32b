"""Data changes: UPDATE, DELETE (with its ON DELETE CASCADE / SET NULL children) and INSERT.
Each becomes a layer over the table's rows - `CASE WHEN p THEN e ELSE c END` for an UPDATE,
`NOT coalesce(p, false)` for a DELETE, a `UNION ALL` of the new rows for an INSERT - so
every later count reads the rows as they will be; the rows it touches are counted, and
the constraints the changed rows must keep are checked on them.

What cannot be modelled (UPDATE ... FROM, DELETE ... USING, WITH, INSERT ... ON CONFLICT /
RETURNING, ON DELETE SET DEFAULT) leaves the table's rows unknown from here on (tainted)."""

from __future__ import annotations

from dataclasses import replace

import psycopg
from pglast import ast

from exporter.migrations.deploy.constraints import (
    UNUSED, foreign_key, join_condition, recheck_check, recheck_not_null, recheck_unique, recheck_updated,
)
from exporter.migrations.deploy.evaluator import Evaluator, Fails, Unknown, error_text
from exporter.migrations.deploy.parsing import aliased, expression_node, ident
from exporter.migrations.deploy.results import ROW_EXCLUSIVE, StatementResult
from exporter.migrations.deploy.state import CHECK, FOREIGN_KEY, Column, Table


def _target(ev: Evaluator, relation: ast.RangeVar, where: object, unmodelled: str) -> tuple[Table, str | None, str]:
    """The table an UPDATE/DELETE changes, its alias, and its WHERE as a condition on the
    virtual rows; a FROM/USING/WITH (`unmodelled`) or an expression that cannot be
    modelled leaves the table's rows unknown from here on."""
    table = relation.relname or ""
    if unmodelled:
        ev.taint(table, unmodelled)
    t = ev.table(table)
    alias = relation.alias.aliasname if relation.alias else None
    with ev.tainting(table):
        condition = f"coalesce(({ev.expression(t, where, alias)}), false)" if where is not None else "true"
    return t, alias, condition


def update(ev: Evaluator, node: ast.UpdateStmt, base: StatementResult) -> StatementResult:
    base = replace(base, table=node.relation.relname or "", lock=ROW_EXCLUSIVE)
    unmodelled = "UPDATE ... FROM is not modelled" if node.fromClause or node.withClause else ""
    t, alias, where = _target(ev, node.relation, node.whereClause, unmodelled)
    with ev.tainting(t.name):
        exprs = ev.identity(t)
        updated_columns = []
        for target in node.targetList:
            if target.name not in t.columns:
                ev.missing(f'column "{target.name}" of relation "{t.name}" does not exist', "42703")
            if target.indirection:
                raise Unknown("UPDATE of a part of a column is not modelled")
            col = t.columns[target.name]
            new_value = f"({ev.expression(t, target.val, alias)})::{ev.value_type(col)}"
            exprs[col.name] = f"CASE WHEN {where} THEN {new_value} ELSE {ident(col.name)} END"
            updated_columns.append(col)
    updated, total = ev.count(t, where, alias)
    ev.layer(t, exprs, inner_alias=alias)
    if updated:
        recheck_updated(ev, t, updated_columns)
    return replace(base, rows_updated=updated, rows_scanned=total)


def delete(ev: Evaluator, node: ast.DeleteStmt, base: StatementResult) -> StatementResult:
    base = replace(base, table=node.relation.relname or "", lock=ROW_EXCLUSIVE)
    unmodelled = "DELETE ... USING is not modelled" if node.usingClause or node.withClause else ""
    t, alias, condition = _target(ev, node.relation, node.whereClause, unmodelled)
    deleted, total = ev.count(t, condition, alias)
    if deleted:
        with ev.tainting(t.name):
            if alias and ev.state.fks_to(t.name):
                raise Unknown("a DELETE with an alias on a table others reference is not modelled")
            _children_of_deleted(ev, t, condition, t.source or "", t.name)
    ev.layer(t, ev.identity(t), where=f"NOT {condition}", inner_alias=alias)
    return replace(base, rows_deleted=deleted, rows_scanned=total)


def _children_of_deleted(ev: Evaluator, t: Table, condition: str, deleted: str, parent: str, depth: int = 0,
                         ancestors: frozenset[str] = frozenset()) -> None:
    """Rows of other tables referencing the deleted rows (those of `deleted`, aliased
    `parent`, where `condition`): RESTRICT / NO ACTION fails the DELETE, CASCADE deletes
    them (and their own children, down the chain), SET NULL empties their key columns (a
    NOT NULL or CHECK on them is checked); SET DEFAULT and cycles are not modelled."""
    for fk in ev.state.fks_to(t.name):
        child = ev.state.tables.get(fk.table)
        if child is None or child.source is None:
            continue
        ev.require_rows(child)
        alias = f"referencing_{depth}"
        joined = join_condition(fk, ident(parent), alias)
        referencing = f"EXISTS (SELECT 1 FROM {deleted} WHERE {condition} AND {joined})"
        rows = aliased(child.source, alias)
        hit = int(ev.query(f"SELECT count(*) FROM {rows} WHERE {referencing}")[0])
        if not hit:
            continue
        if fk.on_delete in ("NO ACTION", "RESTRICT"):
            raise Fails(f'update or delete on table "{t.name}" violates foreign key constraint "{fk.name}" '
                        f'on table "{fk.table}" ({hit} rows still reference deleted rows)', "23503", hit)
        if fk.on_delete not in ("CASCADE", "SET NULL") or child.name == t.name or child.name in ancestors:
            ev.taint(fk.table, f'ON DELETE {fk.on_delete} from a DELETE on "{t.name}" is not modelled')
            raise Unknown(f'ON DELETE {fk.on_delete} of "{fk.table}" from a DELETE on "{t.name}" is not modelled')
        if fk.on_delete == "CASCADE":
            _children_of_deleted(ev, child, referencing, rows, alias, depth + 1, ancestors | {t.name})
            ev.layer(child, ev.identity(child), where=f"NOT {referencing}", inner_alias=alias)
            continue
        exprs = ev.identity(child)
        for c in fk.columns:
            exprs[c] = f"CASE WHEN {referencing} THEN NULL ELSE {ident(c)} END"
        ev.layer(child, exprs, inner_alias=alias)
        recheck_updated(ev, child, [child.columns[c] for c in fk.columns])


# -- INSERT -----------------------------------------------------------------------------------


def insert(ev: Evaluator, node: ast.InsertStmt, base: StatementResult) -> StatementResult:
    """INSERT ... VALUES, or ... SELECT from one table: the new rows are checked as
    PostgreSQL checks them (NOT NULL, CHECK - NOT VALID ones too -, foreign keys, unique
    keys against every row), then joined to the table's rows for every later statement."""
    table = node.relation.relname or ""
    try:
        with ev.tainting(table):
            return _insert(ev, ev.table(table), node, replace(base, table=table, lock=ROW_EXCLUSIVE))
    except psycopg.Error as e:
        ev.taint(table, f"an INSERT could not be evaluated: {error_text(e)}")
        raise


def _insert(ev: Evaluator, t: Table, node: ast.InsertStmt, base: StatementResult) -> StatementResult:
    if node.onConflictClause or node.returningClause or node.withClause or node.override:
        raise Unknown("INSERT ... ON CONFLICT / RETURNING / WITH / OVERRIDING is not modelled")
    inserted = Table(t.name, t.columns, _inserted_rows(ev, t, node), changed=True)
    try:
        count = int(ev.query(f"SELECT count(*), count(ROW({', '.join(map(ident, t.columns))})::text) "
                             f"FROM {inserted.source}")[0])
    except psycopg.errors.DataError as e:  # a value that does not convert fails the INSERT the same way
        raise Fails(error_text(e), e.sqlstate or "22000") from None
    if not count:
        return base
    _check_new_rows(ev, t, inserted)
    old = t.source
    columns = ", ".join(map(ident, t.columns))
    t.source = inserted.source if old is None else \
        f"(SELECT {columns} FROM {old} UNION ALL SELECT {columns} FROM {inserted.source}) AS {ident(t.name)}"
    t.changed = True
    for fk in [c for c in ev.state.constraints.values() if c.table == t.name and c.kind == FOREIGN_KEY]:
        foreign_key(ev, inserted, fk, UNUSED)  # after the new rows joined: they may reference each other
    recheck_unique(ev, t, set(t.columns), "duplicate key value violates")
    return replace(base, rows_inserted=count, rows_scanned=0)


def _inserted_rows(ev: Evaluator, t: Table, node: ast.InsertStmt) -> str:
    """The new rows as a FROM item aliased as the table: every column, in its order."""
    targets = [c.name or "" for c in node.cols or ()] or list(t.columns)
    if any(c.indirection for c in node.cols or ()):
        raise Unknown("INSERT into a part of a column is not modelled")
    for name in targets:
        ev.column(t, name)
    select = node.selectStmt
    if not isinstance(select, ast.SelectStmt) or select.op or select.withClause:
        raise Unknown("INSERT from this query is not modelled")
    rows = [list(v) for v in select.valuesLists] if select.valuesLists else \
        [[target.val for target in select.targetList or ()]]
    mismatch = next((len(values) - len(targets) for values in rows if len(values) != len(targets)), 0)
    if mismatch:
        more, fewer = ("expressions", "target columns") if mismatch > 0 else ("target columns", "expressions")
        raise Fails(f"INSERT has more {more} than {fewer}", "42601")
    source, alias = _insert_source(ev, select)
    reads = source or Table("", {}, None)  # VALUES read no table: a column reference is not modelled
    typed: list[tuple[Column, str]] = []
    selects = [_new_row(ev, t, dict(zip(targets, values)), reads, alias, typed) for values in rows]
    if source is not None and source.source is None:  # an empty table: no row
        nothing = ", ".join(f"NULL::{ev.value_type(c)} AS {ident(c.name)}" for c in t.columns.values())
        return f"(SELECT {nothing} WHERE false) AS {ident(t.name)}"
    read_from = (aliased(source.source, alias) if alias else source.source) if source and source.source else None
    _assignment_of(ev, typed, read_from)
    if source is None:
        return f"({' UNION ALL '.join(selects)}) AS {ident(t.name)}"
    where = f" WHERE {ev.expression(source, select.whereClause, alias)}" if select.whereClause else ""
    return f"({selects[0]} FROM {read_from}{where}) AS {ident(t.name)}"


def _new_row(ev: Evaluator, t: Table, given: dict[str, ast.Node], reads: Table, alias: str | None,
             typed: list[tuple[Column, str]]) -> str:
    """SELECT of one new row: every column, given or its default; values that are not
    untyped literals are added to `typed`, to be checked for assignment."""
    exprs = []
    for col in t.columns.values():
        value = given.get(col.name)
        if value is None or isinstance(value, ast.SetToDefault):
            sql = ev.expression(t, expression_node(col.default)) if col.default else "NULL"
        else:
            sql = ev.expression(reads, value, alias)
            if not (isinstance(value, ast.A_Const) and (value.isnull or isinstance(value.val, ast.String))):
                typed.append((col, sql))
        exprs.append(f"({sql})::{ev.value_type(col)} AS {ident(col.name)}")
    return "SELECT " + ", ".join(exprs)


def _assignment_of(ev: Evaluator, typed: list[tuple[Column, str]], read_from: str | None) -> None:
    """An INSERT's typed values must be assignable to their columns (42804 otherwise):
    the rows are built with explicit casts, which allow more."""
    if not typed:
        return
    types = ", ".join(f"pg_typeof({sql})::text" for _, sql in typed)
    joined = f" LEFT JOIN {read_from} ON true" if read_from else ""
    (found,) = ev.query(f"SELECT ARRAY[{types}] FROM (SELECT 1) AS one{joined} LIMIT 1")
    for (col, _), value_type in zip(typed, found):
        if value_type != "unknown" and not ev.assignable(value_type, ev.value_type(col)):
            raise Fails(f'column "{col.name}" is of type {col.type} but expression is of type {value_type}',
                        "42804")


def _insert_source(ev: Evaluator, select: ast.SelectStmt) -> tuple[Table | None, str | None]:
    """The one table an INSERT ... SELECT reads (None for VALUES or no FROM), and its alias."""
    if select.valuesLists or not select.fromClause:
        return None, None
    clauses = (select.groupClause, select.havingClause, select.distinctClause, select.sortClause,
               select.limitCount, select.limitOffset, select.windowClause)
    rv = select.fromClause[0]
    if any(clauses) or len(select.fromClause) > 1 or not isinstance(rv, ast.RangeVar):
        raise Unknown("INSERT ... SELECT other than from one table with a WHERE is not modelled")
    source = ev.table(rv.relname or "")
    ev.require_rows(source)
    return source, rv.alias.aliasname if rv.alias else None


def _check_new_rows(ev: Evaluator, t: Table, inserted: Table) -> None:
    """What PostgreSQL checks on each new row before the keys: NOT NULL, CHECK, enum labels."""
    recheck_not_null(ev, inserted, [c for c in t.columns.values() if not c.nullable])
    for con in list(ev.state.constraints.values()):
        if con.table == t.name and con.kind == CHECK and con.expression:
            recheck_check(ev, inserted, con, set(t.columns))
    for enum_col in (c for c in t.columns.values() if c.type_name in ev.state.enums):
        enum = ev.state.enums[enum_col.type_name]
        if enum.live:
            continue  # the cast to the live type already refused a value it does not have
        bad, _ = ev.count(inserted, f"{ident(enum_col.name)} NOT IN ({enum.labels_sql()})")
        if bad:
            raise Fails(f'invalid input value for enum {enum_col.type}', "22P02", bad)
