"""Objects that come and go: CREATE TABLE / TYPE / SEQUENCE, enum labels, RENAME, DROP.
They fail on the catalog as the earlier statements left it (what exists, what depends on
it); only a DROP TABLE reads rows, to say how many are lost."""

from __future__ import annotations

from dataclasses import replace

from pglast import ast
from pglast.enums import DropBehavior, ObjectType

from exporter.migrations.deploy import columns, constraints
from exporter.migrations.deploy.evaluator import Evaluator, Fails, Unknown
from exporter.migrations.deploy.parsing import ident, last_name, table_of, walk
from exporter.migrations.deploy.results import ACCESS_EXCLUSIVE, StatementResult
from exporter.migrations.deploy.state import Column, EnumType, Table


def create_table(ev: Evaluator, node: ast.CreateStmt, base: StatementResult) -> StatementResult:
    name = node.relation.relname or ""
    if ev.state.relation_exists(name):
        if node.if_not_exists:
            return base
        ev.exists_already(f'relation "{name}" already exists', "42P07")
    cols: dict[str, Column] = {}
    pending: list[tuple[ast.Constraint, tuple[str, ...]]] = []
    for element in node.tableElts or ():
        if isinstance(element, ast.ColumnDef):
            column, _, others = columns.column_def(ev, element)
            cols[column.name] = column
            pending += [(con, (column.name,)) for con in others]
        elif isinstance(element, ast.Constraint):
            pending.append((element, ()))
        else:
            raise Unknown(f"CREATE TABLE element {type(element).__name__} is not modelled")
    t = Table(name, cols, None)
    ev.state.tables[name] = t
    for con, on_columns in pending:
        constraints.add_constraint(ev, t, con, on_columns, new_table=True)
    return replace(base, table=name)


def create_sequence(ev: Evaluator, node: ast.CreateSeqStmt, base: StatementResult) -> StatementResult:
    name = node.sequence.relname
    if ev.state.relation_exists(name) and not node.if_not_exists:
        ev.exists_already(f'relation "{name}" already exists', "42P07")
    ev.state.other_relations.add(name)
    return base


def create_trigger(ev: Evaluator, node: ast.CreateTrigStmt, base: StatementResult) -> StatementResult:
    ev.taint(node.relation.relname, "a trigger runs on later changes: not modelled")
    raise Unknown("CREATE TRIGGER is not modelled")


# -- enums ------------------------------------------------------------------------------------


def create_enum(ev: Evaluator, node: ast.CreateEnumStmt, base: StatementResult) -> StatementResult:
    name = last_name(node.typeName)
    if name in ev.state.enums:
        ev.exists_already(f'type "{name}" already exists', "42710")
    ev.state.enums[name] = EnumType([v.sval for v in node.vals or ()], False)
    return base


def alter_enum(ev: Evaluator, node: ast.AlterEnumStmt, base: StatementResult) -> StatementResult:
    name = last_name(node.typeName)
    enum = ev.state.enums.get(name)
    if enum is None:
        ev.missing(f'type "{name}" does not exist', "42704")
    if node.oldVal:  # RENAME VALUE
        if node.oldVal not in enum.labels:
            raise Fails(f'"{node.oldVal}" is not an existing enum label', "22023")
        _virtualize_enum(ev, name)
        raise Unknown("renaming an enum label changes stored values: not modelled")
    if node.newVal in enum.labels:
        if node.skipIfNewValExists:
            return base
        raise Fails(f'enum label "{node.newVal}" already exists', "42710")
    _virtualize_enum(ev, name)
    enum.labels.append(node.newVal)
    ev.added_labels.setdefault(name, set()).add(node.newVal)
    return base


def unsafe_label(ev: Evaluator, node: ast.Node) -> None:
    """PostgreSQL refuses to use an enum label added in the same transaction (55P04)."""
    if not ev.added_labels:
        return
    t = ev.state.tables.get(table_of(node))
    types = {c.type_name for c in t.columns.values()} if t else set(ev.added_labels)
    for n in walk(node):
        if isinstance(n, ast.A_Const) and isinstance(n.val, ast.String):
            for enum, labels in ev.added_labels.items():
                if enum in types and n.val.sval in labels:
                    raise Fails(f'unsafe use of new value "{n.val.sval}" of enum type "{enum}" (a label must be '
                                "committed before it is used: move this statement to a later migration)", "55P04")


def _virtualize_enum(ev: Evaluator, name: str) -> None:
    """The enum no longer matches the live type: its columns are read as text."""
    enum = ev.state.enums[name]
    if not enum.live:
        return
    enum.live = False
    for t in ev.state.tables.values():
        cols = [c for c in t.columns.values() if c.type_name == name]
        if cols:
            exprs = ev.identity(t)
            for c in cols:
                exprs[c.name] = f"{ident(c.name)}::text"
            ev.layer(t, exprs)


# -- RENAME -----------------------------------------------------------------------------------


def rename(ev: Evaluator, node: ast.RenameStmt, base: StatementResult) -> StatementResult:
    new = node.newname or ""
    if node.renameType == ObjectType.OBJECT_TYPE:
        _rename_type(ev, last_name(node.object), new)
        return base
    table = node.relation.relname or "" if node.relation else ""
    base = replace(base, table=table, lock=ACCESS_EXCLUSIVE)
    if node.renameType == ObjectType.OBJECT_TABLE:
        _rename_table(ev, table, new)
    elif node.renameType == ObjectType.OBJECT_COLUMN:
        _rename_column(ev, ev.table(table), node.subname or "", new)
    elif node.renameType == ObjectType.OBJECT_INDEX:
        _rename_index(ev, table, new)
        return replace(base, table=ev.state.indexes[new][0])
    elif node.renameType == ObjectType.OBJECT_TABCONSTRAINT:
        _rename_constraint(ev, table, node.subname or "", new)
    else:
        raise Unknown(f"RENAME of {ObjectType(node.renameType).name} is not modelled")
    return base


def _rename_type(ev: Evaluator, old: str, new: str) -> None:
    if old not in ev.state.enums:
        ev.missing(f'type "{old}" does not exist', "42704")
    if new in ev.state.enums:
        ev.exists_already(f'type "{new}" already exists', "42710")
    ev.state.enums[new] = ev.state.enums.pop(old)
    for t in ev.state.tables.values():
        for col in t.columns.values():
            if col.type_name == old:
                col.type_name, col.type = new, ident(new)


def _rename_table(ev: Evaluator, old: str, new: str) -> None:
    t = ev.table(old)
    state = ev.state
    if state.relation_exists(new):
        ev.exists_already(f'relation "{new}" already exists', "42P07")
    state.tables[new] = state.tables.pop(old)
    t.name = new
    ev.layer(t, ev.identity(t), alias=new)
    for con in state.constraints.values():
        con.ref_table = new if con.ref_table == old else con.ref_table
        con.table = new if con.table == old else con.table
    state.constraints = {(c.table, c.name): c for c in state.constraints.values()}
    state.indexes = {n: ((new if v[0] == old else v[0]), v[1], v[2]) for n, v in state.indexes.items()}


def _rename_column(ev: Evaluator, t: Table, old: str, new: str) -> None:
    if old not in t.columns:
        ev.missing(f'column "{old}" does not exist', "42703")
    if new in t.columns:
        ev.exists_already(f'column "{new}" of relation "{t.name}" already exists', "42701")
    exprs = {(new if n == old else n): ident(n) for n in t.columns}
    col = t.columns.pop(old)
    col.name = new
    t.columns[new] = col
    t.columns = {n: t.columns[n] for n in exprs}
    ev.layer(t, exprs)


def _rename_index(ev: Evaluator, old: str, new: str) -> None:
    if old not in ev.state.indexes:
        ev.missing(f'relation "{old}" does not exist', "42P01")
    if ev.state.relation_exists(new):
        ev.exists_already(f'relation "{new}" already exists', "42P07")
    ev.state.indexes[new] = ev.state.indexes.pop(old)


def _rename_constraint(ev: Evaluator, table: str, old: str, new: str) -> None:
    if (table, old) not in ev.state.constraints:
        ev.missing(f'constraint "{old}" for table "{table}" does not exist', "42704")
    con = ev.state.constraints.pop((table, old))
    con.name = new
    ev.state.constraints[(table, new)] = con


# -- DROP -------------------------------------------------------------------------------------


def drop(ev: Evaluator, node: ast.DropStmt, base: StatementResult) -> StatementResult:
    names = [last_name(o.names if isinstance(o, ast.TypeName) else o) for o in node.objects]
    cascade, missing_ok = node.behavior == DropBehavior.DROP_CASCADE, bool(node.missing_ok)
    if node.removeType == ObjectType.OBJECT_TYPE:
        _drop_types(ev, names, cascade, missing_ok)
        return base
    if node.removeType == ObjectType.OBJECT_TABLE:
        return _drop_tables(ev, names, cascade, missing_ok, base)
    if node.removeType == ObjectType.OBJECT_INDEX:
        return _drop_indexes(ev, names, missing_ok, base)
    raise Unknown(f"DROP {ObjectType(node.removeType).name.removeprefix('OBJECT_')} is not modelled")


def _drop_types(ev: Evaluator, names: list[str], cascade: bool, missing_ok: bool) -> None:
    for name in names:
        if name not in ev.state.enums:
            ev.missing_unless(missing_ok, f'type "{name}" does not exist', "42704")
            continue
        users = [f"{t.name}.{c.name}" for t in ev.state.tables.values()
                 for c in t.columns.values() if c.type_name == name]
        if users and not cascade:
            raise Fails(f'cannot drop type "{name}" because other objects depend on it '
                        f"(column {', '.join(users)})", "2BP01")
        if users:
            raise Unknown("DROP TYPE ... CASCADE drops columns: not modelled")
        del ev.state.enums[name]


def _drop_tables(ev: Evaluator, names: list[str], cascade: bool, missing_ok: bool,
                 base: StatementResult) -> StatementResult:
    state = ev.state
    lost = 0
    for name in names:
        t = ev.table_if_exists(name, missing_ok)
        if t is None:
            continue
        base = replace(base, table=name, lock=ACCESS_EXCLUSIVE)
        users = [c for c in state.fks_to(name) if c.table != name and c.table not in names]
        if users and not cascade:
            raise Fails(f'cannot drop table "{name}" because other objects depend on it '
                        f'(constraint {users[0].name} on table "{users[0].table}")', "2BP01")
        lost += ev.rows_of(t)
        del state.tables[name]
        state.indexes = {n: v for n, v in state.indexes.items() if v[0] != name}
        state.constraints = {k: c for k, c in state.constraints.items() if k[0] != name and c.ref_table != name}
    return replace(base, rows_lost=lost)


def _drop_indexes(ev: Evaluator, names: list[str], missing_ok: bool, base: StatementResult) -> StatementResult:
    for name in names:
        if name not in ev.state.indexes:
            ev.missing_unless(missing_ok, f'index "{name}" does not exist', "42704")
            continue
        table = ev.state.indexes[name][0]
        if (table, name) in ev.state.constraints:
            raise Fails(f'cannot drop index "{name}" because constraint {name} on table "{table}" '
                        "requires it", "2BP01")
        del ev.state.indexes[name]
        base = replace(base, table=table, lock=ACCESS_EXCLUSIVE)
    return base
