"""Constraints and indexes, which fail on rows: ADD CONSTRAINT CHECK / UNIQUE / PRIMARY KEY /
FOREIGN KEY, CREATE [UNIQUE] INDEX, VALIDATE / DROP CONSTRAINT; and the checks an UPDATE's
or INSERT's rows must pass again (`recheck_*`). Each is counted on the rows as they will be
(a foreign key on its parent's rows as they will be), or answered by a check of the same
poll that counted the same rule on the unchanged live table (Evaluator.shared)."""

from __future__ import annotations

from dataclasses import replace

from pglast import ast
from pglast.enums import ConstrType, DropBehavior

from exporter.migrations.deploy.evaluator import Evaluator, Fails, Unknown
from exporter.migrations.deploy.parsing import aliased, columns_used, deparse, expression_node, ident
from exporter.migrations.deploy.results import SHARE, SHARE_ROW_EXCLUSIVE, Outcome, StatementResult
from exporter.migrations.deploy.state import CHECK, FOREIGN_KEY, PRIMARY_KEY, UNIQUE, Column, Constraint, Table
from exporter.schema import model

# The result of a check run on behalf of another statement (an UPDATE's, a type change's):
# only whether it raises matters.
UNUSED = StatementResult(0, 0, "", Outcome.PASSES)


def create_index(ev: Evaluator, node: ast.IndexStmt, base: StatementResult) -> StatementResult:
    table = node.relation.relname or ""
    t = ev.table(table)
    base = replace(base, table=table, lock=SHARE if not node.concurrent else "SHARE UPDATE EXCLUSIVE")
    name = node.idxname
    if name and ev.state.relation_exists(name):
        if node.if_not_exists:
            return base
        ev.exists_already(f'relation "{name}" already exists', "42P07")
    keys, plain = [], []
    for param in node.indexParams:
        if param.name:
            if param.name not in t.columns:
                ev.missing(f'column "{param.name}" does not exist', "42703")
            keys.append(ident(param.name))
            plain.append(param.name)
        else:
            keys.append(f"({ev.expression(t, param.expr)})")
    predicate = ev.expression(t, node.whereClause) if node.whereClause else None
    if name:
        ev.state.indexes[name] = (table, bool(node.unique), tuple(plain))
    if not node.unique:
        return replace(base, rows_scanned=ev.scanned(t))
    rule = model.Index(name or "", table, tuple(plain), True, predicate) if len(plain) == len(keys) else None
    return _unique(ev, t, keys, predicate, base, what=f'unique index "{name}"', nulls_fail=False, rule=rule)


def add_constraint(ev: Evaluator, t: Table, con: ast.Constraint, on_columns: tuple[str, ...], *,
                   base: StatementResult = UNUSED, new_table: bool = False) -> StatementResult:
    """ADD CONSTRAINT, or a constraint of CREATE TABLE / ADD COLUMN (`on_columns`: the column
    it is written on); on a new table nothing is counted."""
    kind = ConstrType(con.contype)
    name = con.conname or _default_name(t.name, kind, on_columns or tuple(
        s.sval or "" for s in (con.keys or con.fk_attrs or ())))
    if (t.name, name) in ev.state.constraints:
        ev.exists_already(f'constraint "{name}" for relation "{t.name}" already exists', "42710")
    if kind == ConstrType.CONSTR_CHECK:
        ev.state.constraints[(t.name, name)] = Constraint(name, t.name, CHECK, expression=deparse(con.raw_expr))
        if con.skip_validation or new_table:
            ev.expression(t, con.raw_expr)  # its columns must exist all the same
            return base
        return check(ev, t, name, con.raw_expr, base)
    if kind in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE):
        keys = on_columns or tuple(s.sval or "" for s in con.keys)
        return _add_key(ev, t, name, keys, kind == ConstrType.CONSTR_PRIMARY, base, new_table)
    if kind == ConstrType.CONSTR_FOREIGN:
        return _add_foreign_key(ev, t, con, name, on_columns, base, new_table)
    raise Unknown(f"constraint kind {kind.name} is not modelled")


def _default_name(table: str, kind: ConstrType, columns: tuple[str, ...]) -> str:
    """The name PostgreSQL gives a constraint written without one."""
    if kind == ConstrType.CONSTR_PRIMARY:
        return f"{table}_pkey"
    suffix = {ConstrType.CONSTR_UNIQUE: "key", ConstrType.CONSTR_FOREIGN: "fkey",
              ConstrType.CONSTR_CHECK: "check"}.get(kind, "con")
    return "_".join((table, *columns, suffix))


def _add_key(ev: Evaluator, t: Table, name: str, keys: tuple[str, ...], primary: bool, base: StatementResult,
             new_table: bool) -> StatementResult:
    for k in keys:
        ev.column(t, k)
    if ev.state.relation_exists(name):
        ev.exists_already(f'relation "{name}" already exists', "42P07")
    if primary and ev.state.primary_key(t.name) is not None:
        raise Fails(f'multiple primary keys for table "{t.name}" are not allowed', "42P16")
    ev.state.constraints[(t.name, name)] = Constraint(name, t.name, PRIMARY_KEY if primary else UNIQUE, keys)
    ev.state.indexes[name] = (t.name, True, keys)
    if primary:
        for k in keys:
            t.columns[k].nullable = False
    if new_table:
        return base
    return _unique(ev, t, [ident(k) for k in keys], None, base, what=f'constraint "{name}"', nulls_fail=primary)


def _add_foreign_key(ev: Evaluator, t: Table, con: ast.Constraint, name: str, on_columns: tuple[str, ...],
                     base: StatementResult, new_table: bool) -> StatementResult:
    cols = on_columns or tuple(s.sval or "" for s in con.fk_attrs)
    parent_name = con.pktable.relname or ""
    parent = ev.table(parent_name) if parent_name != t.name else t
    ref = tuple(s.sval or "" for s in con.pk_attrs or ()) or _primary_key_of(ev, parent)
    for c in cols:
        ev.column(t, c)
    for c in ref:
        ev.column(parent, c)
    keyed = any(v[0] == parent.name and v[1] and set(v[2]) == set(ref) for v in ev.state.indexes.values())
    if not keyed and not ev.state.catalog_unknown:
        raise Fails(f'there is no unique constraint matching given keys for referenced table "{parent.name}"',
                    "42830")
    actions = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
    fk = Constraint(name, t.name, FOREIGN_KEY, cols, ref_table=parent.name, ref_columns=ref,
                    on_delete=actions.get(con.fk_del_action or "a", "NO ACTION"))
    ev.state.constraints[(t.name, name)] = fk
    if con.skip_validation or new_table:
        return replace(base, lock=SHARE_ROW_EXCLUSIVE)
    return replace(foreign_key(ev, t, fk, base), lock=SHARE_ROW_EXCLUSIVE)


def _primary_key_of(ev: Evaluator, t: Table) -> tuple[str, ...]:
    pk = ev.state.primary_key(t.name)
    if pk is None:
        raise Fails(f'there is no primary key for referenced table "{t.name}"', "42830")
    return pk.columns


def drop_constraint(ev: Evaluator, t: Table, cmd: ast.AlterTableCmd, base: StatementResult) -> StatementResult:
    key = (t.name, cmd.name or "")
    con = ev.state.constraints.get(key)
    if con is None:
        ev.missing_unless(bool(cmd.missing_ok), f'constraint "{cmd.name}" of relation "{t.name}" does not exist',
                          "42704")
        return base
    if con.kind in (PRIMARY_KEY, UNIQUE):
        users = [f for f in ev.state.fks_to(t.name) if set(f.ref_columns) == set(con.columns)]
        if users and cmd.behavior != DropBehavior.DROP_CASCADE:
            raise Fails(f'cannot drop constraint {con.name} on table "{t.name}" because constraint '
                        f'{users[0].name} on table "{users[0].table}" depends on it', "2BP01")
        ev.state.indexes.pop(con.name, None)
    del ev.state.constraints[key]
    return base


def validate_constraint(ev: Evaluator, t: Table, cmd: ast.AlterTableCmd, base: StatementResult) -> StatementResult:
    con = ev.state.constraints.get((t.name, cmd.name or ""))
    if con is None:
        ev.missing(f'constraint "{cmd.name}" of relation "{t.name}" does not exist', "42704")
    if con.kind == CHECK:
        return check(ev, t, con.name, expression_node(con.expression), base)
    if con.kind == FOREIGN_KEY:
        return foreign_key(ev, t, con, base)
    return base


# -- counted on the rows as they will be --------------------------------------------------------


def check(ev: Evaluator, t: Table, name: str, expr_node: object, base: StatementResult) -> StatementResult:
    """A CHECK constraint: a row for which it is false fails it."""
    expression = ev.expression(t, expr_node)
    answer = ev.shared(t, model.Constraint(name, t.name, CHECK, definition=f"CHECK ({expression})"))
    if answer is not None:
        bad, total = answer[0], ev.estimate(t)
    else:
        bad, total = ev.count(t, f"NOT ({expression})")
    if bad:
        raise Fails(f'check constraint "{name}" of relation "{t.name}" is violated by some row', "23514", bad,
                    f"SELECT * FROM {t.source} WHERE NOT ({expression})")
    return replace(base, rows_scanned=total)


def foreign_key(ev: Evaluator, t: Table, fk: Constraint, base: StatementResult) -> StatementResult:
    """A foreign key: a row whose non-null key has no row in the parent fails it."""
    parent = ev.state.tables[fk.ref_table]
    ev.require_rows(parent)

    def violated(rows: int, inspect_sql: str = "") -> Fails:
        return Fails(f'insert or update on table "{t.name}" violates foreign key constraint "{fk.name}" '
                     f"({rows} rows reference no {fk.ref_table} row)", "23503", rows, inspect_sql)

    if not parent.changed:
        answer = ev.shared(t, model.Constraint(fk.name, t.name, FOREIGN_KEY, fk.columns, ref_table=fk.ref_table,
                                               ref_columns=fk.ref_columns))
        if answer is not None:
            if answer[0]:
                raise violated(answer[0])
            return replace(base, rows_scanned=ev.estimate(t))
    if t.source is None:
        return replace(base, rows_scanned=0)
    child = aliased(t.source, "child_key")
    present = " AND ".join(f"{ident(c)} IS NOT NULL" for c in fk.columns)
    match = "false" if parent.source is None else \
        f"EXISTS (SELECT 1 FROM {aliased(parent.source, 'parent')} WHERE {join_condition(fk, 'parent', 'child_key')})"
    hit, total = ev.query(f"SELECT count(*) FILTER (WHERE {present} AND NOT {match}), count(*) FROM {child}")
    if hit:
        raise violated(int(hit), f"SELECT * FROM {child} WHERE {present} AND NOT {match}")
    return replace(base, rows_scanned=int(total))


def join_condition(fk: Constraint, parent: str, child: str) -> str:
    """The join condition of a foreign key: parent's referenced columns = child's key columns."""
    return " AND ".join(f"{parent}.{ident(p)} = {child}.{ident(c)}" for c, p in zip(fk.columns, fk.ref_columns))


def _unique(ev: Evaluator, t: Table, keys: list[str], predicate: str | None, base: StatementResult, *, what: str,
            nulls_fail: bool, rule: model.Index | None = None) -> StatementResult:
    """Duplicate keys among the rows as they will be (NULLs never clash) fail; for a
    primary key, so does a NULL."""
    ev.require_rows(t)
    if t.source is None:
        return replace(base, rows_scanned=0)
    answer = ev.shared(t, rule) if rule is not None and not nulls_fail else None
    if answer is not None:
        if answer[0]:
            raise Fails(f"could not create {what}: {answer[1]} duplicated keys", "23505", answer[0])
        return replace(base, rows_scanned=ev.estimate(t))
    key_list = ", ".join(keys)
    where = " AND ".join([f"{k} IS NOT NULL" for k in keys] + ([f"({predicate})"] if predicate else []))
    dup_rows, groups, total = ev.query(
        f"SELECT coalesce(sum(n), 0), count(*), (SELECT count(*) FROM {t.source}) FROM "
        f"(SELECT count(*) AS n FROM {t.source} WHERE {where} GROUP BY {key_list} HAVING count(*) > 1) AS d"
    )
    ev.remember_count(t, int(total))
    listing = (f"SELECT * FROM {t.source} WHERE {where} AND ({key_list}) IN "
               f"(SELECT {key_list} FROM {t.source} WHERE {where} GROUP BY {key_list} HAVING count(*) > 1)")
    if nulls_fail:
        nulls, _ = ev.count(t, " OR ".join(f"{k} IS NULL" for k in keys))
        if nulls:
            raise Fails(f'column of primary key contains null values ({what})', "23502", nulls,
                        f"SELECT * FROM {t.source} WHERE " + " OR ".join(f"{k} IS NULL" for k in keys))
    if int(dup_rows):
        raise Fails(f"could not create {what}: {int(groups)} duplicated keys", "23505", int(dup_rows), listing)
    return replace(base, rows_scanned=int(total))


# -- what changed rows must pass again ------------------------------------------------------------


def recheck_updated(ev: Evaluator, t: Table, updated: list[Column]) -> None:
    """The constraints an UPDATE (or an ON DELETE SET NULL) must keep, on the rows as they will be."""
    names = {c.name for c in updated}
    recheck_not_null(ev, t, [c for c in updated if not c.nullable])
    for con in list(ev.state.constraints.values()):
        if con.table != t.name:
            continue
        if con.kind == CHECK and con.expression:
            recheck_check(ev, t, con, names)
        elif con.kind == FOREIGN_KEY and names & set(con.columns):
            foreign_key(ev, t, con, UNUSED)
    recheck_unique(ev, t, names, "could not create")
    for fk in ev.state.fks_to(t.name):
        if names & set(fk.ref_columns):
            ev.taint(fk.table, f'an UPDATE of "{t.name}" key columns cascades: not modelled')


def recheck_unique(ev: Evaluator, t: Table, changed: set[str], verb: str) -> None:
    """Unique keys and indexes over the changed columns, on every row as it will be."""
    keys = [(f'constraint "{c.name}"', c.columns) for c in ev.state.constraints.values()
            if c.table == t.name and c.kind in (PRIMARY_KEY, UNIQUE)]
    keys += [(f'unique index "{name}"', cols) for name, (table, unique, cols) in ev.state.indexes.items()
             if table == t.name and unique and (t.name, name) not in ev.state.constraints]
    for what, cols in keys:
        if not changed & set(cols):
            continue
        try:
            _unique(ev, t, [ident(c) for c in cols], None, UNUSED, what=what, nulls_fail=False)
        except Fails as f:
            raise Fails(f.reason.replace("could not create", verb, 1), f.sqlstate, f.rows, f.inspect_sql) from None


def recheck_not_null(ev: Evaluator, t: Table, columns: list[Column]) -> None:
    for col in columns:
        nulls, _ = ev.count(t, f"{ident(col.name)} IS NULL")
        if nulls:
            raise Fails(f'null value in column "{col.name}" of relation "{t.name}" violates not-null '
                        "constraint", "23502", nulls)


def recheck_check(ev: Evaluator, t: Table, con: Constraint, updated: set[str]) -> None:
    node = expression_node(con.expression)
    if not updated & columns_used(node):
        return
    expression = ev.expression(t, node)
    bad, _ = ev.count(t, f"NOT ({expression})")
    if bad:
        raise Fails(f'new row for relation "{t.name}" violates check constraint "{con.name}"', "23514", bad,
                    f"SELECT * FROM {t.source} WHERE NOT ({expression})")
