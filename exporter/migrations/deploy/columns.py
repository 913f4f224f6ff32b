"""ALTER TABLE, and the columns it changes: ADD / DROP COLUMN, ALTER COLUMN TYPE, SET / DROP
NOT NULL, SET / DROP DEFAULT (its constraint commands are constraints.py's). A column's
rows change as a layer over the table's rows: an added column its default, a new type
its cast."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import psycopg
from pglast import ast
from pglast.enums import AlterTableType, ConstrType, DropBehavior, ObjectType

from exporter.migrations.deploy import constraints
from exporter.migrations.deploy.evaluator import Evaluator, Fails, Unknown, error_text
from exporter.migrations.deploy.parsing import (
    columns_used, deparse, expression_node, ident, is_volatile, type_sql, unquote,
)
from exporter.migrations.deploy.results import ACCESS_EXCLUSIVE, StatementResult
from exporter.migrations.deploy.state import CHECK, Column, Table


def alter_table(ev: Evaluator, node: ast.AlterTableStmt, base: StatementResult) -> StatementResult:
    if node.objtype != ObjectType.OBJECT_TABLE:
        raise Unknown(f"ALTER {ObjectType(node.objtype).name} is not modelled")
    table = node.relation.relname or ""
    t = ev.table_if_exists(table, bool(node.missing_ok))
    if t is None:
        return base
    result = replace(base, table=table, lock=ACCESS_EXCLUSIVE)
    scanned: int | None = 0  # the most any one command reads; None once one cannot be known
    for cmd in node.cmds:
        handler = _COMMANDS.get(AlterTableType(cmd.subtype))
        if handler is None:
            raise Unknown(f"ALTER TABLE {AlterTableType(cmd.subtype).name.removeprefix('AT_')} is not modelled")
        result = handler(ev, t, cmd, result)
        if result.rows_scanned is None or scanned is None:
            scanned = None
        else:
            scanned = max(scanned, result.rows_scanned)
        result = replace(result, rows_scanned=0)
    return replace(result, rows_scanned=scanned)


def column_def(ev: Evaluator, coldef: ast.ColumnDef) -> tuple[Column, ast.Node | None, list[ast.Constraint]]:
    """A column definition (CREATE TABLE, ADD COLUMN): the column, its DEFAULT expression,
    its other constraints."""
    sql_type, type_name = type_sql(coldef.typeName)
    _type_exists(ev, type_name)
    nullable, default, others = True, None, []
    for con in coldef.constraints or ():
        if con.contype in (ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY):
            nullable = False
        if con.contype == ConstrType.CONSTR_DEFAULT:
            default = con.raw_expr
        elif con.contype not in (ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_NULL):
            others.append(con)
    name = coldef.colname or ""
    column = Column(name, sql_type, type_name, nullable, deparse(default) if default is not None else None)
    return column, default, others


def _type_exists(ev: Evaluator, type_name: str) -> None:
    if type_name in ev.state.enums:
        return
    # Built-in types are not tracked; an unknown quoted camel-case name is one of the app's enums.
    if type_name != type_name.lower():
        ev.missing(f'type "{type_name}" does not exist', "42704")


def _add_column(ev: Evaluator, t: Table, cmd: ast.AlterTableCmd, base: StatementResult) -> StatementResult:
    coldef = cmd.def_
    name = coldef.colname
    if name in t.columns:
        if cmd.missing_ok:  # ADD COLUMN IF NOT EXISTS
            return base
        ev.exists_already(f'column "{name}" of relation "{t.name}" already exists', "42701")
    column, default, others = column_def(ev, coldef)
    not_null = not column.nullable
    rows = None
    if not_null and default is None:
        rows = ev.rows_of(t)
        if rows:
            raise Fails(f'column "{name}" of relation "{t.name}" contains null values '
                        f"(added NOT NULL without a default to a table of {rows} rows)", "23502", rows,
                        f"SELECT * FROM {t.source}")
    if not_null and default is not None and isinstance(default, ast.A_Const) and default.isnull:
        rows = ev.rows_of(t)
        if rows:
            raise Fails(f'column "{name}" of relation "{t.name}" contains null values', "23502", rows)
    exprs = ev.identity(t)
    value_type = ev.value_type(column)
    exprs[name] = f"({deparse(default)})::{value_type}" if default is not None else f"NULL::{value_type}"
    t.columns[name] = column
    ev.layer(t, exprs)
    for con in others:
        constraints.add_constraint(ev, t, con, (name,), base=base)
    if default is not None and is_volatile(default):  # every row gets its own value: a rewrite
        return replace(base, rows_scanned=ev.scanned(t), rewrites=True)
    return replace(base, rows_scanned=rows if rows is not None else 0)


def _drop_column(ev: Evaluator, t: Table, cmd: ast.AlterTableCmd, base: StatementResult) -> StatementResult:
    name = cmd.name or ""
    state = ev.state
    if name not in t.columns:
        ev.missing_unless(bool(cmd.missing_ok), f'column "{name}" of relation "{t.name}" does not exist', "42703")
        return base
    users = [c for c in state.fks_to(t.name) if name in c.ref_columns and c.table != t.name]
    if users and cmd.behavior != DropBehavior.DROP_CASCADE:
        raise Fails(f'cannot drop column {name} of table "{t.name}" because other objects depend on it '
                    f'(constraint {users[0].name} on table "{users[0].table}")', "2BP01")
    lost, total = ev.count(t, f"{ident(name)} IS NOT NULL")
    del t.columns[name]
    ev.layer(t, ev.identity(t))
    state.constraints = {k: c for k, c in state.constraints.items()
                         if not (c.table == t.name and name in c.columns)
                         and not (c.ref_table == t.name and name in c.ref_columns)}
    state.indexes = {n: v for n, v in state.indexes.items() if not (v[0] == t.name and name in v[2])}
    return replace(base, values_lost=lost, rows_scanned=0)


def _set_not_null(ev: Evaluator, t: Table, cmd: ast.AlterTableCmd, base: StatementResult) -> StatementResult:
    col = ev.column(t, cmd.name or "")
    if not col.nullable:
        return base
    nulls, total = ev.count(t, f"{ident(col.name)} IS NULL")
    if nulls:
        raise Fails(f'column "{col.name}" of relation "{t.name}" contains null values', "23502", nulls,
                    f"SELECT * FROM {t.source} WHERE {ident(col.name)} IS NULL")
    col.nullable = False
    return replace(base, rows_scanned=total)


def _drop_not_null(ev: Evaluator, t: Table, cmd: ast.AlterTableCmd, base: StatementResult) -> StatementResult:
    col = ev.column(t, cmd.name or "")
    pk = ev.state.primary_key(t.name)
    if pk is not None and col.name in pk.columns:
        raise Fails(f'column "{col.name}" is in a primary key', "42P16")
    col.nullable = True
    return base


def _set_default(ev: Evaluator, t: Table, cmd: ast.AlterTableCmd, base: StatementResult) -> StatementResult:
    col = ev.column(t, cmd.name or "")
    col.default = deparse(cmd.def_) if cmd.def_ is not None else None
    return base


# -- ALTER COLUMN TYPE ------------------------------------------------------------------------


def _alter_type(ev: Evaluator, t: Table, cmd: ast.AlterTableCmd, base: StatementResult) -> StatementResult:
    name = cmd.name or ""
    col = ev.column(t, name)
    sql_type, type_name = type_sql(cmd.def_.typeName)
    _type_exists(ev, type_name)
    using = cmd.def_.raw_default
    target = ev.state.enums.get(type_name)
    if target is not None and not target.live:
        # Prisma's enum rewrite: USING (c::text::"E_new"); a value that is not a label fails.
        if using is None and ev.state.enums.get(col.type_name) is None:
            raise Fails(f'column "{name}" cannot be cast automatically to type {sql_type}', "42804")
        source_text = ev.expression(t, using) if using is not None else ident(name)
        value = f"({source_text})::text"
        labels = target.labels_sql()
        bad, total = ev.count(t, f"{value} IS NOT NULL AND {value} NOT IN ({labels})")
        if bad:
            raise Fails(f'invalid input value for enum {sql_type}: {bad} rows hold a value it does not have',
                        "22P02", bad, f"SELECT * FROM {t.source} WHERE {value} NOT IN ({labels})")
        new_value = value
    else:
        if using is None and not _assignment_cast(ev, col, sql_type):
            raise Fails(f'column "{name}" cannot be cast automatically to type {sql_type}', "42804")
        source_text = ev.expression(t, using) if using is not None else ident(name)
        new_value = f"({source_text})::{sql_type}"
        ev.require_rows(t)
        total = 0
        if t.source is not None:
            try:
                _, total = ev.query(f"SELECT count({new_value}), count(*) FROM {t.source}")
            except psycopg.errors.DataError as e:  # a value does not convert: the deploy fails the same way
                raise Fails(error_text(e), e.sqlstate or "22000", None, f"SELECT * FROM {t.source}") from None
    if col.default is not None and "::" in col.default and col.type_name != type_name:
        virtual_target = target is not None and not target.live
        if virtual_target or not _assignment_cast(ev, col, sql_type):
            raise Fails(f'default for column "{name}" cannot be cast automatically to type {sql_type} '
                        "(drop the default before changing the type)", "42804")
    exprs = ev.identity(t)
    exprs[name] = new_value
    col.type, col.type_name = sql_type, type_name
    ev.layer(t, exprs)
    _recheck_after_type_change(ev, t, name)
    return replace(base, rows_scanned=int(total), rewrites=True)


def _recheck_after_type_change(ev: Evaluator, t: Table, column: str) -> None:
    """PostgreSQL re-creates the CHECK constraints on a column whose type changed, from
    their text: an operator that does not exist for the new type fails the statement, and
    the rows are checked again."""
    for con in list(ev.state.constraints.values()):
        if con.table != t.name or con.kind != CHECK or not con.expression:
            continue
        node = expression_node(con.expression)
        if column not in columns_used(node):
            continue
        try:
            constraints.check(ev, t, con.name, node, constraints.UNUSED)
        except psycopg.Error as e:
            if not (e.sqlstate or "").startswith("42"):  # 42883 no such operator, 42804 datatype mismatch
                raise
            raise Fails(f'constraint "{con.name}": {error_text(e)}', e.sqlstate or "42000") from None


def _assignment_cast(ev: Evaluator, col: Column, sql_type: str) -> bool:
    """Whether PostgreSQL converts the column to the type without USING."""
    if col.type_name.lower() == unquote(sql_type.split("(")[0]).lower():
        return True
    source_enum = ev.state.enums.get(col.type_name)
    if source_enum is not None and not source_enum.live:
        raise Unknown(f"cast from the new enum {col.type_name} is not modelled")
    return ev.assignable(col.type, sql_type)


_COMMANDS: dict[AlterTableType, Callable[[Evaluator, Table, ast.AlterTableCmd, StatementResult], StatementResult]] = {
    AlterTableType.AT_AddColumn: _add_column,
    AlterTableType.AT_DropColumn: _drop_column,
    AlterTableType.AT_AlterColumnType: _alter_type,
    AlterTableType.AT_SetNotNull: _set_not_null,
    AlterTableType.AT_DropNotNull: _drop_not_null,
    AlterTableType.AT_ColumnDefault: _set_default,
    AlterTableType.AT_AddConstraint: lambda ev, t, cmd, base: constraints.add_constraint(
        ev, t, cmd.def_, (), base=base),
    AlterTableType.AT_DropConstraint: constraints.drop_constraint,
    AlterTableType.AT_ValidateConstraint: constraints.validate_constraint,
}
