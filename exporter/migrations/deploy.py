"""Predict `prisma migrate deploy`, statement by statement, without writing anything.

Every pending `migration.sql` is parsed with PostgreSQL's own parser (pglast, a binding of
libpg_query) and its statements are walked in deploy order over a *virtual state* of the
database: the live catalog as the earlier statements leave it (tables, columns, indexes,
constraints, enum labels) and, per table, an SQL expression of its rows as they will be.

- `UPDATE t SET c = e WHERE p` becomes a layer over the table's rows with
  `CASE WHEN p THEN e ELSE c END AS c`; `DELETE FROM t WHERE p` a layer keeping
  `NOT coalesce(p, false)` (and, on its ON DELETE CASCADE / SET NULL children, a filter or
  a CASE on their keys); `INSERT ... VALUES` or `... SELECT` from one table a `UNION ALL`
  of the new rows. Every later count reads the rows as they will be, so a
  sanitize-then-constrain migration is seen to pass and its rows inserted/updated/deleted
  counted.
- A DO block whose body is plain statements and IF [NOT] EXISTS look-ups in the catalog
  (do_block.py) is walked as if its statements stood there, the condition decided on the
  catalog as the earlier statements left it.
- What makes a statement fail is counted on those rows: ADD CONSTRAINT CHECK / UNIQUE /
  PRIMARY KEY / FOREIGN KEY (the parent's rows as they will be), CREATE UNIQUE INDEX, SET NOT
  NULL, ADD COLUMN NOT NULL without a default on a table that will have rows, ALTER COLUMN
  TYPE (a value that does not convert; no assignment cast without USING), Prisma's enum
  rewrite with a row holding a dropped label, an INSERT's new rows breaking NOT NULL, a
  CHECK, a foreign or unique key, DROP of something still used, CREATE of something that
  exists, and references to what does not exist.
- What cannot be modelled (INSERT ... ON CONFLICT / RETURNING / WITH, UPDATE ... FROM,
  sub-queries on changed tables, ON DELETE SET DEFAULT, other DO blocks, functions,
  triggers, statements not known here) makes the table it touches - for a DO block, the
  whole database - `cannot_evaluate`: anything later that depends on it is
  `cannot_evaluate` too, never "passes".

The first failing statement stops the walk, as deploy stops there (the migration is
recorded failed and every later deploy is refused with P3009): later migrations are
`not_reached`. Only SELECTs run on the monitored database, on the caller's read-only
session; one query per statement that needs rows, which also counts the rows the
statement's lock must scan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import partial
from enum import StrEnum
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NoReturn

import psycopg
from pglast import ast, parse_sql
from pglast.enums import AlterTableType, ConstrType, DropBehavior, ObjectType
from pglast.parser import ParseError
from pglast.stream import RawStream

from exporter.migrations import do_block
from exporter.migrations.history import (
    FolderEntry, MigrationRow, PrismaStatus, PrismaView, baseline_commands, prisma_view,
)
from exporter.schema.model import Constraint, ConstraintKind, Index, Schema

CHECK, FOREIGN_KEY = ConstraintKind.CHECK, ConstraintKind.FOREIGN_KEY
PRIMARY_KEY, UNIQUE = ConstraintKind.PRIMARY_KEY, ConstraintKind.UNIQUE


class Outcome(StrEnum):
    """Of a statement, a migration or the whole deploy."""

    PASSES = "passes"
    FAILS = "fails"
    CANNOT_EVALUATE = "cannot_evaluate"
    NOT_REACHED = "not_reached"  # after the first failure: deploy never runs it
    REFUSED = "refused"  # deploy: a failed migration is recorded (P3009), nothing runs


# Lock modes, as PostgreSQL names them.
ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
SHARE = "SHARE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"


@dataclass(frozen=True)
class StatementResult:
    number: int  # 1-based, in the migration
    line: int  # of the statement's first token in migration.sql
    text: str  # the statement, as written (trimmed)
    outcome: Outcome
    table: str = ""  # the table it works on, if any
    reason: str = ""  # why it fails or cannot be evaluated
    sqlstate: str = ""  # the error PostgreSQL will raise, when it fails
    offending_rows: int | None = None  # rows that make it fail (None: not countable)
    inspect_sql: str = ""  # lists the offending rows on today's database, when it can
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_deleted: int = 0
    rows_lost: int = 0  # rows of a dropped table
    values_lost: int = 0  # non-null values of a dropped column
    lock: str = ""  # lock mode taken on `table` ("" for none worth saying)
    rows_scanned: int | None = None  # rows the statement reads (or rewrites) under that lock
    rewrites: bool = False  # the table is rewritten (ALTER TYPE, volatile default)


# What a statement does to the data (fields of StatementResult, labels of venzory_db_deploy_rows).
EFFECTS = ("rows_inserted", "rows_updated", "rows_deleted", "rows_lost", "values_lost")


@dataclass(frozen=True)
class MigrationPrediction:
    name: str
    outcome: Outcome
    statements: tuple[StatementResult, ...] = ()
    reason: str = ""  # for a migration that could not be read or parsed, or is unsafe
    warnings: tuple[str, ...] = ()  # COMMIT, CONCURRENTLY, ...

    @property
    def effects(self) -> dict[str, int]:
        """What the migration does to the data: EFFECTS -> total over its statements."""
        return {effect: sum(getattr(s, effect) for s in self.statements) for effect in EFFECTS}

    @property
    def failure(self) -> StatementResult | None:
        return next((s for s in self.statements if s.outcome == Outcome.FAILS), None)


@dataclass(frozen=True)
class DeployPrediction:
    outcome: Outcome  # PASSES | FAILS | CANNOT_EVALUATE | REFUSED
    migrations: tuple[MigrationPrediction, ...] = ()
    reason: str = ""  # for REFUSED, and for CANNOT_EVALUATE the first thing not evaluated

    @property
    def failing_migration(self) -> MigrationPrediction | None:
        return next((m for m in self.migrations if m.outcome == Outcome.FAILS), None)

    @property
    def failure(self) -> tuple[str, StatementResult] | None:
        m = self.failing_migration
        return (m.name, m.failure) if m and m.failure else None

    def summary(self) -> str:
        """One line: what deploy will do."""
        if self.outcome == Outcome.REFUSED:
            return f"deploy is refused: {self.reason}"
        if not self.migrations:
            return "nothing to deploy"
        failure = self.failure
        if failure:
            name, s = failure
            rows = f", {s.offending_rows} rows" if s.offending_rows else ""
            head = "will fail" if self.outcome == Outcome.FAILS else \
                "will fail unless an earlier unevaluable statement fails first:"
            return f"deploy {head} at {name} statement {s.number} (line {s.line}): {s.reason}{rows}"
        if self.outcome == Outcome.CANNOT_EVALUATE:
            return f"deploy cannot be fully evaluated: {self.reason}"
        totals = {e: sum(m.effects[e] for m in self.migrations) for e in EFFECTS}
        added = f", {totals['rows_inserted']} rows inserted" if totals["rows_inserted"] else ""
        return (f"deploy will pass: {len(self.migrations)} migrations{added}, {totals['rows_updated']} rows updated, "
                f"{totals['rows_deleted']} rows deleted")


# -- the virtual state ------------------------------------------------------------------------


@dataclass
class _Column:
    name: str
    type: str  # SQL text of the type (quoted when needed)
    type_name: str  # unquoted last component, to match enums
    nullable: bool
    default: str | None = None


@dataclass
class _Table:
    name: str
    columns: dict[str, _Column]
    source: str | None  # FROM item giving its rows as they will be, aliased as the table; None: empty
    changed: bool = False  # an earlier statement changed its rows or columns
    tainted: str = ""  # why its rows cannot be known


@dataclass
class _Constraint:
    name: str
    table: str
    kind: ConstraintKind
    columns: tuple[str, ...] = ()
    expression: str = ""  # CHECK expression
    ref_table: str = ""
    ref_columns: tuple[str, ...] = ()
    on_delete: str = "NO ACTION"


@dataclass
class _Enum:
    labels: list[str]
    live: bool  # still the live database's own type, unchanged (else: represented as text)


@dataclass
class _State:
    schema: str
    tables: dict[str, _Table]
    indexes: dict[str, tuple[str, bool, tuple[str, ...]]]  # name -> (table, unique, plain columns)
    constraints: dict[tuple[str, str], _Constraint]
    enums: dict[str, _Enum]
    other_relations: set[str] = field(default_factory=set)  # sequences, views: names taken
    catalog_unknown: str = ""  # a DO block may have changed the catalog: absence proves nothing

    def relation_exists(self, name: str) -> bool:
        return name in self.tables or name in self.indexes or name in self.other_relations

    def fks_to(self, table: str) -> list[_Constraint]:
        return [c for c in self.constraints.values() if c.kind == FOREIGN_KEY and c.ref_table == table]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _unquote(name: str) -> str:
    name = name.strip()
    return name[1:-1].replace('""', '"') if name.startswith('"') and name.endswith('"') else name


def initial_state(live: Schema, schema: str = "public") -> _State:
    tables = {}
    for t in live.tables.values():
        if t.name == "_prisma_migrations":
            continue
        columns = {
            c.name: _Column(c.name, c.type, _unquote(c.type.removesuffix("[]")), c.nullable, c.default)
            for c in t.columns.values()
        }
        tables[t.name] = _Table(t.name, columns, f"{_ident(schema)}.{_ident(t.name)} AS {_ident(t.name)}")
    indexes = {i.name: (i.table, i.unique, i.columns) for i in live.indexes.values()}
    constraints = {}
    for (table, name), c in live.constraints.items():
        expression = ""
        if c.kind == CHECK:
            expression = re.sub(r"^\s*CHECK\s*", "", c.definition, flags=re.I)
            expression = re.sub(r"\s*(NO INHERIT|NOT VALID)\s*$", "", expression, flags=re.I)
        constraints[(table, name)] = _Constraint(
            name, table, c.kind, tuple(c.columns), expression, c.ref_table or "", tuple(c.ref_columns),
            c.on_delete or "NO ACTION",
        )
    enums = {name: _Enum(list(labels), True) for name, labels in live.enums.items()}
    return _State(schema, tables, indexes, constraints, enums)


# -- parsing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Statement:
    number: int
    line: int
    text: str
    node: ast.Node


def split_statements(script: str) -> list[_Statement]:
    """The statements of a migration.sql, with their 1-based line. Raises ParseError."""
    result = []
    encoded = script.encode("utf-8")  # libpg_query's locations are byte offsets
    for number, raw in enumerate(parse_sql(script), start=1):
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(encoded)
        text = encoded[start:end].decode("utf-8", "replace")
        lead = len(text) - len(text.lstrip())
        line = encoded[: start + lead].count(b"\n") + 1
        result.append(_Statement(number, line, text.strip(), raw.stmt))
    return result


def _walk(node: object, *, into_subqueries: bool = True) -> Iterator[ast.Node]:
    if isinstance(node, (list, tuple)):
        for item in node:
            yield from _walk(item, into_subqueries=into_subqueries)
    elif isinstance(node, ast.Node):
        yield node
        if isinstance(node, ast.SubLink) and not into_subqueries:
            yield from _walk(node.testexpr, into_subqueries=False)
            return
        for attr in getattr(type(node), "__slots__", ()):
            yield from _walk(getattr(node, attr, None), into_subqueries=into_subqueries)


_TRAILING_ALIAS = re.compile(r' AS "(?:[^"]|"")+"$')


def _aliased(source: str, alias: str) -> str:
    """The FROM item under another alias."""
    return _TRAILING_ALIAS.sub(f" AS {_ident(alias)}", source)


def _sql(node: object) -> str:
    return RawStream()(node)


def _names(names: Sequence[object] | None) -> str:
    """Last component of a qualified name list (String nodes)."""
    last = names[-1] if names else None
    return (last.sval or "") if isinstance(last, ast.String) else ""


def _type_sql(type_name: ast.TypeName) -> tuple[str, str]:
    return _sql(type_name), _names(type_name.names)


class _Fails(Exception):
    def __init__(self, reason: str, sqlstate: str, rows: int | None = None, inspect_sql: str = ""):
        super().__init__(reason)
        self.reason, self.sqlstate, self.rows, self.inspect_sql = reason, sqlstate, rows, inspect_sql


class _Unknown(Exception):
    """The statement's effect or success cannot be known."""


# -- the evaluator ----------------------------------------------------------------------------

Query = Callable[[str], tuple[Any, ...]]
# What a check of the same poll already counted for a rule on a live table: (rows, groups) or None.
Known = Callable[[Constraint | Index], tuple[int, int | None] | None]


def _no_known(rule: Constraint | Index) -> None:
    return None


class _Evaluator:
    def __init__(self, state: _State, query: Query, known: Known = _no_known):
        self.state = state
        self.query = query
        self.known = known
        self._estimates: dict[str, int] | None = None
        self._counts: dict[str, int] = {}  # rows per virtual source, counted once
        self.added_labels: dict[str, set[str]] = {}  # enum -> labels added by the current migration

    def begin_migration(self) -> None:
        # Each migration.sql is one transaction: a label it adds cannot be used before it commits.
        self.added_labels = {}

    def unsafe_label(self, node: ast.Node) -> None:
        """PostgreSQL refuses to use an enum label added in the same transaction (55P04)."""
        if not self.added_labels:
            return
        t = self.state.tables.get(_table_of(node))
        types = {c.type_name for c in t.columns.values()} if t else set(self.added_labels)
        for n in _walk(node):
            if isinstance(n, ast.A_Const) and isinstance(n.val, ast.String):
                for enum, labels in self.added_labels.items():
                    if enum in types and n.val.sval in labels:
                        raise _Fails(f'unsafe use of new value "{n.val.sval}" of enum type "{enum}" (a label must be '
                                     "committed before it is used: move this statement to a later migration)", "55P04")

    # helpers ------------------------------------------------------------------------------
    def table(self, name: str) -> _Table:
        t = self.state.tables.get(name)
        if t is None:
            self.missing(f'relation "{name}" does not exist', "42P01")
        return t

    def table_if_exists(self, name: str, missing_ok: bool) -> _Table | None:
        return self.state.tables.get(name) if missing_ok else self.table(name)

    def missing(self, reason: str, sqlstate: str) -> NoReturn:
        if self.state.catalog_unknown:
            raise _Unknown(f"{reason}, unless {self.state.catalog_unknown} created it")
        raise _Fails(reason, sqlstate)

    def exists_already(self, reason: str, sqlstate: str) -> NoReturn:
        if self.state.catalog_unknown:
            raise _Unknown(f"{reason}, unless {self.state.catalog_unknown} changed it")
        raise _Fails(reason, sqlstate)

    def shared(self, t: _Table, rule: Constraint | Index) -> tuple[int, int | None] | None:
        """A check of the same poll counted exactly these rows on the unchanged live table."""
        if t.changed or t.tainted or t.source is None:
            return None
        return self.known(rule)

    def estimate(self, t: _Table) -> int | None:
        """The planner's row estimate of a live table (the lock figure where a shared count
        answered the question without a scan); None if never analyzed."""
        if self._estimates is None:
            rows = self.query("SELECT coalesce(json_object_agg(relname, reltuples::bigint), '{}') FROM pg_class "
                              f"WHERE relnamespace = {_literal(_ident(self.state.schema))}::regnamespace "
                              "AND relkind IN ('r', 'p')")
            self._estimates = {k: int(v) for k, v in (rows[0] or {}).items() if int(v) >= 0}
        return self._estimates.get(t.name)

    def rows_of(self, t: _Table) -> int:
        if t.tainted:
            raise _Unknown(f'the rows of "{t.name}" cannot be known: {t.tainted}')
        if t.source is None:
            return 0
        if t.source not in self._counts:
            self._counts[t.source] = int(self.query(f"SELECT count(*) FROM {t.source}")[0])
        return self._counts[t.source]

    def count(self, t: _Table, condition: str, alias: str | None = None) -> tuple[int, int]:
        """(rows where condition, all rows) of the table as it will be, in one scan."""
        if t.tainted:
            raise _Unknown(f'the rows of "{t.name}" cannot be known: {t.tainted}')
        if t.source is None:
            return 0, 0
        source = _aliased(t.source, alias) if alias else t.source
        hit, total = self.query(f"SELECT count(*) FILTER (WHERE {condition}), count(*) FROM {source}")
        self._counts[t.source] = int(total)
        return int(hit), int(total)

    def expression(self, t: _Table, node: object, alias: str | None = None) -> str:
        """SQL of an expression over the table's virtual row: columns must exist, casts to
        enums that are no longer the live ones become casts to text (so are their columns).
        A sub-query may read only tables no earlier statement changed: it reads them live."""
        for n in _walk(node, into_subqueries=False):
            if isinstance(n, ast.SubLink):
                self._subquery_reads_live_rows(n)
            if isinstance(n, ast.ColumnRef):
                fields = [f.sval or "" for f in n.fields if isinstance(f, ast.String)]
                if len(fields) > 1 and fields[-2] not in (t.name, alias):
                    raise _Unknown(f"a reference to {'.'.join(fields)} is not modelled")
                if fields and fields[-1] not in t.columns:
                    self.missing(f'column "{fields[-1]}" does not exist', "42703")
        for n in _walk(node):
            if isinstance(n, ast.TypeCast):
                enum = self.state.enums.get(_names(n.typeName.names))
                if enum is not None and not enum.live:
                    n.typeName = ast.TypeName(names=(ast.String("text"),), typemod=-1)
        return _sql(node)

    def _subquery_reads_live_rows(self, sublink: ast.SubLink) -> None:
        for rv in _walk(sublink.subselect):
            if isinstance(rv, ast.RangeVar):
                other = self.state.tables.get(rv.relname or "")
                if other is None or other.changed or other.tainted or other.source is None:
                    raise _Unknown(f'a sub-query reads "{rv.relname}" as an earlier statement left it: not modelled')

    def value_type(self, column: _Column) -> str:
        enum = self.state.enums.get(column.type_name)
        return "text" if enum is not None and not enum.live else column.type

    def layer(self, t: _Table, exprs: dict[str, str], where: str | None = None, alias: str | None = None,
              inner_alias: str | None = None) -> None:
        """A new FROM item over the current rows: exprs per column (name -> SQL), reading the
        current rows under `inner_alias` (an UPDATE's `AS o`) when given."""
        if t.source is None:
            return
        select = ", ".join(f"{e} AS {_ident(n)}" for n, e in exprs.items()) or "NULL AS \"?\""
        filt = f" WHERE {where}" if where else ""
        inner = _aliased(t.source, inner_alias) if inner_alias else t.source
        t.source = f"(SELECT {select} FROM {inner}{filt}) AS {_ident(alias or t.name)}"
        t.changed = True

    def identity(self, t: _Table) -> dict[str, str]:
        return {n: _ident(n) for n in t.columns}

    def virtualize_enum(self, name: str) -> None:
        """The enum no longer matches the live type: its columns are read as text."""
        enum = self.state.enums[name]
        if not enum.live:
            return
        enum.live = False
        for t in self.state.tables.values():
            cols = [c for c in t.columns.values() if c.type_name == name]
            if cols:
                exprs = self.identity(t)
                for c in cols:
                    exprs[c.name] = f"{_ident(c.name)}::text"
                self.layer(t, exprs)

    # statements ---------------------------------------------------------------------------
    def run(self, stmt: _Statement) -> StatementResult:
        base = StatementResult(stmt.number, stmt.line, stmt.text, Outcome.PASSES)
        node = stmt.node
        handler = getattr(self, f"on_{type(node).__name__}", None)
        try:
            if handler is None:
                raise _Unknown(f"{type(node).__name__} is not modelled")
            if not isinstance(node, ast.AlterEnumStmt):
                self.unsafe_label(node)
            return handler(node, base) or base
        except _Fails as f:
            return replace(base, outcome=Outcome.FAILS, reason=f.reason, sqlstate=f.sqlstate,
                           offending_rows=f.rows, inspect_sql=f.inspect_sql, table=base.table or _table_of(node))
        except _Unknown as u:
            return replace(base, outcome=Outcome.CANNOT_EVALUATE, reason=str(u), table=_table_of(node))
        except psycopg.Error as e:
            return replace(base, outcome=Outcome.CANNOT_EVALUATE, table=_table_of(node),
                           reason=f"query failed: {_error_text(e)}")

    def on_CommentStmt(self, node: ast.Node, base: StatementResult) -> StatementResult:
        return base

    def on_VariableSetStmt(self, node: ast.Node, base: StatementResult) -> StatementResult:
        return base

    def on_TransactionStmt(self, node: ast.Node, base: StatementResult) -> StatementResult:
        return base  # named by the migration's warnings

    def on_CreateEnumStmt(self, node: ast.CreateEnumStmt, base: StatementResult) -> StatementResult:
        name = _names(node.typeName)
        if name in self.state.enums:
            self.exists_already(f'type "{name}" already exists', "42710")
        self.state.enums[name] = _Enum([v.sval for v in node.vals or ()], False)
        return base

    def on_AlterEnumStmt(self, node: ast.AlterEnumStmt, base: StatementResult) -> StatementResult:
        name = _names(node.typeName)
        enum = self.state.enums.get(name)
        if enum is None:
            self.missing(f'type "{name}" does not exist', "42704")
        if node.oldVal:  # RENAME VALUE
            if node.oldVal not in enum.labels:
                raise _Fails(f'"{node.oldVal}" is not an existing enum label', "22023")
            self.virtualize_enum(name)
            raise _Unknown("renaming an enum label changes stored values: not modelled")
        if node.newVal in enum.labels:
            if node.skipIfNewValExists:
                return base
            raise _Fails(f'enum label "{node.newVal}" already exists', "42710")
        self.virtualize_enum(name)
        enum.labels.append(node.newVal)
        self.added_labels.setdefault(name, set()).add(node.newVal)
        return base

    def on_RenameStmt(self, node: ast.RenameStmt, base: StatementResult) -> StatementResult:
        new = node.newname or ""
        if node.renameType == ObjectType.OBJECT_TYPE:
            self._rename_type(_names(node.object), new)
            return base
        table = node.relation.relname or "" if node.relation else ""
        base = replace(base, table=table, lock=ACCESS_EXCLUSIVE)
        if node.renameType == ObjectType.OBJECT_TABLE:
            self._rename_table(table, new)
        elif node.renameType == ObjectType.OBJECT_COLUMN:
            self._rename_column(self.table(table), node.subname or "", new)
        elif node.renameType == ObjectType.OBJECT_INDEX:
            self._rename_index(table, new)
            return replace(base, table=self.state.indexes[new][0])
        elif node.renameType == ObjectType.OBJECT_TABCONSTRAINT:
            self._rename_constraint(table, node.subname or "", new)
        else:
            raise _Unknown(f"RENAME of {ObjectType(node.renameType).name} is not modelled")
        return base

    def _rename_type(self, old: str, new: str) -> None:
        if old not in self.state.enums:
            self.missing(f'type "{old}" does not exist', "42704")
        if new in self.state.enums:
            self.exists_already(f'type "{new}" already exists', "42710")
        self.state.enums[new] = self.state.enums.pop(old)
        for t in self.state.tables.values():
            for col in t.columns.values():
                if col.type_name == old:
                    col.type_name, col.type = new, _ident(new)

    def _rename_table(self, old: str, new: str) -> None:
        t = self.table(old)
        if self.state.relation_exists(new):
            self.exists_already(f'relation "{new}" already exists', "42P07")
        self.state.tables[new] = self.state.tables.pop(old)
        t.name = new
        self.layer(t, self.identity(t), alias=new)
        for con in self.state.constraints.values():
            con.ref_table = new if con.ref_table == old else con.ref_table
            con.table = new if con.table == old else con.table
        self.state.constraints = {(c.table, c.name): c for c in self.state.constraints.values()}
        self.state.indexes = {n: ((new if v[0] == old else v[0]), v[1], v[2]) for n, v in self.state.indexes.items()}

    def _rename_column(self, t: _Table, old: str, new: str) -> None:
        if old not in t.columns:
            self.missing(f'column "{old}" does not exist', "42703")
        if new in t.columns:
            self.exists_already(f'column "{new}" of relation "{t.name}" already exists', "42701")
        exprs = {(new if n == old else n): _ident(n) for n in t.columns}
        col = t.columns.pop(old)
        col.name = new
        t.columns[new] = col
        t.columns = {n: t.columns[n] for n in exprs}
        self.layer(t, exprs)

    def _rename_index(self, old: str, new: str) -> None:
        if old not in self.state.indexes:
            self.missing(f'relation "{old}" does not exist', "42P01")
        if self.state.relation_exists(new):
            self.exists_already(f'relation "{new}" already exists', "42P07")
        self.state.indexes[new] = self.state.indexes.pop(old)

    def _rename_constraint(self, table: str, old: str, new: str) -> None:
        if (table, old) not in self.state.constraints:
            self.missing(f'constraint "{old}" for table "{table}" does not exist', "42704")
        con = self.state.constraints.pop((table, old))
        con.name = new
        self.state.constraints[(table, new)] = con

    def on_DropStmt(self, node: ast.DropStmt, base: StatementResult) -> StatementResult:
        names = [_names(o.names if isinstance(o, ast.TypeName) else o) for o in node.objects]
        cascade, missing_ok = node.behavior == DropBehavior.DROP_CASCADE, bool(node.missing_ok)
        if node.removeType == ObjectType.OBJECT_TYPE:
            self._drop_types(names, cascade, missing_ok)
            return base
        if node.removeType == ObjectType.OBJECT_TABLE:
            return self._drop_tables(names, cascade, missing_ok, base)
        if node.removeType == ObjectType.OBJECT_INDEX:
            return self._drop_indexes(names, missing_ok, base)
        raise _Unknown(f"DROP {ObjectType(node.removeType).name.removeprefix('OBJECT_')} is not modelled")

    def _drop_types(self, names: list[str], cascade: bool, missing_ok: bool) -> None:
        for name in names:
            if name not in self.state.enums:
                if missing_ok:
                    continue
                self.missing(f'type "{name}" does not exist', "42704")
            columns = [f"{t.name}.{c.name}" for t in self.state.tables.values()
                       for c in t.columns.values() if c.type_name == name]
            if columns and not cascade:
                raise _Fails(f'cannot drop type "{name}" because other objects depend on it '
                             f"(column {', '.join(columns)})", "2BP01")
            if columns:
                raise _Unknown("DROP TYPE ... CASCADE drops columns: not modelled")
            del self.state.enums[name]

    def _drop_tables(self, names: list[str], cascade: bool, missing_ok: bool,
                     base: StatementResult) -> StatementResult:
        lost = 0
        for name in names:
            t = self.table_if_exists(name, missing_ok)
            if t is None:
                continue
            base = replace(base, table=name, lock=ACCESS_EXCLUSIVE)
            users = [c for c in self.state.fks_to(name) if c.table != name and c.table not in names]
            if users and not cascade:
                raise _Fails(f'cannot drop table "{name}" because other objects depend on it '
                             f'(constraint {users[0].name} on table "{users[0].table}")', "2BP01")
            lost += self.rows_of(t)
            self._drop_table(name)
        return replace(base, rows_lost=lost)

    def _drop_indexes(self, names: list[str], missing_ok: bool, base: StatementResult) -> StatementResult:
        for name in names:
            if name not in self.state.indexes:
                if missing_ok:
                    continue
                self.missing(f'index "{name}" does not exist', "42704")
            table = self.state.indexes[name][0]
            if (table, name) in self.state.constraints:
                raise _Fails(f'cannot drop index "{name}" because constraint {name} on table "{table}" '
                             "requires it", "2BP01")
            del self.state.indexes[name]
            base = replace(base, table=table, lock=ACCESS_EXCLUSIVE)
        return base

    def _drop_table(self, name: str) -> None:
        del self.state.tables[name]
        self.state.indexes = {n: v for n, v in self.state.indexes.items() if v[0] != name}
        self.state.constraints = {k: c for k, c in self.state.constraints.items()
                                  if k[0] != name and c.ref_table != name}

    def on_CreateStmt(self, node: ast.CreateStmt, base: StatementResult) -> StatementResult:
        name = node.relation.relname or ""
        if self.state.relation_exists(name):
            if node.if_not_exists:
                return base
            self.exists_already(f'relation "{name}" already exists', "42P07")
        columns: dict[str, _Column] = {}
        pending: list[tuple[ast.Constraint, tuple[str, ...]]] = []
        for element in node.tableElts or ():
            if isinstance(element, ast.ColumnDef):
                column, _, others = self._column_def(element)
                columns[column.name] = column
                pending += [(con, (column.name,)) for con in others]
            elif isinstance(element, ast.Constraint):
                pending.append((element, ()))
            else:
                raise _Unknown(f"CREATE TABLE element {type(element).__name__} is not modelled")
        t = _Table(name, columns, None)
        self.state.tables[name] = t
        for con, cols in pending:
            self._add_constraint(t, con, cols, new_table=True)
        return replace(base, table=name)

    def _column_def(self, coldef: ast.ColumnDef) -> tuple[_Column, ast.Node | None, list[ast.Constraint]]:
        """A column definition: the column, its DEFAULT expression, its other constraints."""
        type_sql, type_name = _type_sql(coldef.typeName)
        self._type_exists(type_name)
        nullable, default, others = True, None, []
        for con in coldef.constraints or ():
            if con.contype in (ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY):
                nullable = False
            if con.contype == ConstrType.CONSTR_DEFAULT:
                default = con.raw_expr
            elif con.contype not in (ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_NULL):
                others.append(con)
        name = coldef.colname or ""
        column = _Column(name, type_sql, type_name, nullable, _sql(default) if default is not None else None)
        return column, default, others

    def _type_exists(self, type_name: str) -> None:
        if type_name in self.state.enums:
            return
        # Built-in types are not tracked; an unknown quoted camel-case name is one of the app's enums.
        if type_name != type_name.lower():
            self.missing(f'type "{type_name}" does not exist', "42704")

    def on_IndexStmt(self, node: ast.IndexStmt, base: StatementResult) -> StatementResult:
        table = node.relation.relname or ""
        t = self.table(table)
        base = replace(base, table=table, lock=SHARE if not node.concurrent else "SHARE UPDATE EXCLUSIVE")
        name = node.idxname
        if name and self.state.relation_exists(name):
            if node.if_not_exists:
                return base
            self.exists_already(f'relation "{name}" already exists', "42P07")
        keys, plain = [], []
        for param in node.indexParams:
            if param.name:
                if param.name not in t.columns:
                    self.missing(f'column "{param.name}" does not exist', "42703")
                keys.append(_ident(param.name))
                plain.append(param.name)
            else:
                keys.append(f"({self.expression(t, param.expr)})")
        predicate = self.expression(t, node.whereClause) if node.whereClause else None
        if name:
            self.state.indexes[name] = (table, bool(node.unique), tuple(plain))
        if not node.unique:
            return replace(base, rows_scanned=self._scan(t))
        rule = Index(name or "", table, tuple(plain), True, predicate) if len(plain) == len(keys) else None
        return self._unique(t, keys, predicate, base, what=f'unique index "{name}"', nulls_fail=False, rule=rule)

    def _scan(self, t: _Table) -> int | None:
        try:
            return self.rows_of(t)
        except _Unknown:
            return None

    def _unique(self, t: _Table, keys: list[str], predicate: str | None, base: StatementResult, *, what: str,
                nulls_fail: bool, rule: Index | None = None) -> StatementResult:
        """Duplicate keys among the rows as they will be (NULLs never clash) fail; for a
        primary key, so does a NULL."""
        if t.tainted:
            raise _Unknown(f'the rows of "{t.name}" cannot be known: {t.tainted}')
        if t.source is None:
            return replace(base, rows_scanned=0)
        answer = self.shared(t, rule) if rule is not None and not nulls_fail else None
        if answer is not None:
            if answer[0]:
                raise _Fails(f"could not create {what}: {answer[1]} duplicated keys", "23505", answer[0])
            return replace(base, rows_scanned=self.estimate(t))
        key_list = ", ".join(keys)
        where = " AND ".join([f"{k} IS NOT NULL" for k in keys] + ([f"({predicate})"] if predicate else []))
        dup_rows, groups, total = self.query(
            f"SELECT coalesce(sum(n), 0), count(*), (SELECT count(*) FROM {t.source}) FROM "
            f"(SELECT count(*) AS n FROM {t.source} WHERE {where} GROUP BY {key_list} HAVING count(*) > 1) AS d"
        )
        self._counts[t.source] = int(total)
        listing = (f"SELECT * FROM {t.source} WHERE {where} AND ({key_list}) IN "
                   f"(SELECT {key_list} FROM {t.source} WHERE {where} GROUP BY {key_list} HAVING count(*) > 1)")
        if nulls_fail:
            nulls, _ = self.count(t, " OR ".join(f"{k} IS NULL" for k in keys))
            if nulls:
                raise _Fails(f'column of primary key contains null values ({what})', "23502", nulls,
                             f"SELECT * FROM {t.source} WHERE " + " OR ".join(f"{k} IS NULL" for k in keys))
        if int(dup_rows):
            raise _Fails(f"could not create {what}: {int(groups)} duplicated keys", "23505", int(dup_rows), listing)
        return replace(base, rows_scanned=int(total))

    def on_AlterTableStmt(self, node: ast.AlterTableStmt, base: StatementResult) -> StatementResult:
        if node.objtype != ObjectType.OBJECT_TABLE:
            raise _Unknown(f"ALTER {ObjectType(node.objtype).name} is not modelled")
        table = node.relation.relname or ""
        t = self.table_if_exists(table, bool(node.missing_ok))
        if t is None:
            return base
        result = replace(base, table=table, lock=ACCESS_EXCLUSIVE)
        scanned: int | None = 0
        for cmd in node.cmds:
            result = self._alter(t, cmd, result)
            if result.rows_scanned is None or scanned is None:
                scanned = None
            else:
                scanned = max(scanned, result.rows_scanned)
            result = replace(result, rows_scanned=0)
        return replace(result, rows_scanned=scanned)

    def _alter(self, t: _Table, cmd: ast.AlterTableCmd, base: StatementResult) -> StatementResult:
        handlers: dict[AlterTableType, Callable[[_Table, ast.AlterTableCmd, StatementResult], StatementResult]] = {
            AlterTableType.AT_AddColumn: lambda t, c, b: self._add_column(
                t, c.def_, b, if_not_exists=bool(c.missing_ok)),
            AlterTableType.AT_DropColumn: lambda t, c, b: self._drop_column(
                t, c.name or "", b, missing_ok=bool(c.missing_ok), cascade=c.behavior == DropBehavior.DROP_CASCADE),
            AlterTableType.AT_AlterColumnType: lambda t, c, b: self._alter_type(t, c.name or "", c.def_, b),
            AlterTableType.AT_SetNotNull: self._set_not_null,
            AlterTableType.AT_DropNotNull: self._drop_not_null,
            AlterTableType.AT_ColumnDefault: self._set_default,
            AlterTableType.AT_AddConstraint: lambda t, c, b: self._add_constraint(t, c.def_, (), base=b),
            AlterTableType.AT_DropConstraint: self._drop_constraint,
            AlterTableType.AT_ValidateConstraint: self._validate_constraint,
        }
        handler = handlers.get(AlterTableType(cmd.subtype))
        if handler is None:
            raise _Unknown(f"ALTER TABLE {AlterTableType(cmd.subtype).name.removeprefix('AT_')} is not modelled")
        return handler(t, cmd, base)

    def _set_not_null(self, t: _Table, cmd: ast.AlterTableCmd, base: StatementResult) -> StatementResult:
        col = self._column(t, cmd.name or "")
        if not col.nullable:
            return base
        nulls, total = self.count(t, f"{_ident(col.name)} IS NULL")
        if nulls:
            raise _Fails(f'column "{col.name}" of relation "{t.name}" contains null values', "23502", nulls,
                         f"SELECT * FROM {t.source} WHERE {_ident(col.name)} IS NULL")
        col.nullable = False
        return replace(base, rows_scanned=total)

    def _drop_not_null(self, t: _Table, cmd: ast.AlterTableCmd, base: StatementResult) -> StatementResult:
        col = self._column(t, cmd.name or "")
        pk = [c for c in self.state.constraints.values() if c.table == t.name and c.kind == PRIMARY_KEY]
        if any(col.name in c.columns for c in pk):
            raise _Fails(f'column "{col.name}" is in a primary key', "42P16")
        col.nullable = True
        return base

    def _set_default(self, t: _Table, cmd: ast.AlterTableCmd, base: StatementResult) -> StatementResult:
        col = self._column(t, cmd.name or "")
        col.default = _sql(cmd.def_) if cmd.def_ is not None else None
        return base

    def _drop_constraint(self, t: _Table, cmd: ast.AlterTableCmd, base: StatementResult) -> StatementResult:
        key = (t.name, cmd.name or "")
        con = self.state.constraints.get(key)
        if con is None:
            if cmd.missing_ok:
                return base
            self.missing(f'constraint "{cmd.name}" of relation "{t.name}" does not exist', "42704")
        if con.kind in (PRIMARY_KEY, UNIQUE):
            users = [f for f in self.state.fks_to(t.name) if set(f.ref_columns) == set(con.columns)]
            if users and cmd.behavior != DropBehavior.DROP_CASCADE:
                raise _Fails(f'cannot drop constraint {con.name} on table "{t.name}" because constraint '
                             f'{users[0].name} on table "{users[0].table}" depends on it', "2BP01")
            self.state.indexes.pop(con.name, None)
        del self.state.constraints[key]
        return base

    def _validate_constraint(self, t: _Table, cmd: ast.AlterTableCmd, base: StatementResult) -> StatementResult:
        con = self.state.constraints.get((t.name, cmd.name or ""))
        if con is None:
            self.missing(f'constraint "{cmd.name}" of relation "{t.name}" does not exist', "42704")
        if con.kind == CHECK:
            return self._check(t, con.name, _expression_node(con.expression), base)
        if con.kind == FOREIGN_KEY:
            return self._foreign_key(t, con, base)
        return base

    def _column(self, t: _Table, name: str) -> _Column:
        col = t.columns.get(name)
        if col is None:
            self.missing(f'column "{name}" of relation "{t.name}" does not exist', "42703")
        return col

    def _add_column(self, t: _Table, coldef: ast.ColumnDef, base: StatementResult, *,
                    if_not_exists: bool) -> StatementResult:
        name = coldef.colname
        if name in t.columns:
            if if_not_exists:
                return base
            self.exists_already(f'column "{name}" of relation "{t.name}" already exists', "42701")
        column, default, others = self._column_def(coldef)
        not_null = not column.nullable
        volatile = default is not None and _volatile(default)
        rows = None
        if not_null and default is None:
            rows = self.rows_of(t)
            if rows:
                raise _Fails(f'column "{name}" of relation "{t.name}" contains null values '
                             f"(added NOT NULL without a default to a table of {rows} rows)", "23502", rows,
                             f"SELECT * FROM {t.source}")
        if not_null and default is not None and isinstance(default, ast.A_Const) and default.isnull:
            rows = self.rows_of(t)
            if rows:
                raise _Fails(f'column "{name}" of relation "{t.name}" contains null values', "23502", rows)
        exprs = self.identity(t)
        value_type = self.value_type(column)
        exprs[name] = f"({_sql(default)})::{value_type}" if default is not None else f"NULL::{value_type}"
        t.columns[name] = column
        self.layer(t, exprs)
        for con in others:
            self._add_constraint(t, con, (name,), base=base)
        if volatile:
            return replace(base, rows_scanned=self._scan(t), rewrites=True)
        return replace(base, rows_scanned=rows if rows is not None else 0)

    def _drop_column(self, t: _Table, name: str, base: StatementResult, *, missing_ok: bool,
                     cascade: bool) -> StatementResult:
        if name not in t.columns:
            if missing_ok:
                return base
            self.missing(f'column "{name}" of relation "{t.name}" does not exist', "42703")
        users = [c for c in self.state.fks_to(t.name) if name in c.ref_columns and c.table != t.name]
        if users and not cascade:
            raise _Fails(f'cannot drop column {name} of table "{t.name}" because other objects depend on it '
                         f'(constraint {users[0].name} on table "{users[0].table}")', "2BP01")
        lost, total = self.count(t, f"{_ident(name)} IS NOT NULL")
        del t.columns[name]
        self.layer(t, self.identity(t))
        self.state.constraints = {k: c for k, c in self.state.constraints.items()
                                  if not (c.table == t.name and name in c.columns)
                                  and not (c.ref_table == t.name and name in c.ref_columns)}
        self.state.indexes = {n: v for n, v in self.state.indexes.items() if not (v[0] == t.name and name in v[2])}
        return replace(base, values_lost=lost, rows_scanned=0)

    def _alter_type(self, t: _Table, name: str, coldef: ast.ColumnDef, base: StatementResult) -> StatementResult:
        col = self._column(t, name)
        type_sql, type_name = _type_sql(coldef.typeName)
        self._type_exists(type_name)
        using = coldef.raw_default
        target = self.state.enums.get(type_name)
        if target is not None and not target.live:
            # Prisma's enum rewrite: USING (c::text::"E_new"); a value that is not a label fails.
            if using is None and self.state.enums.get(col.type_name) is None:
                raise _Fails(f'column "{name}" cannot be cast automatically to type {type_sql}', "42804")
            source_text = self.expression(t, using) if using is not None else _ident(name)
            value = f"({source_text})::text"
            labels = ", ".join(_literal(label) for label in target.labels)
            bad, total = self.count(t, f"{value} IS NOT NULL AND {value} NOT IN ({labels or 'NULL'})")
            if bad:
                raise _Fails(f'invalid input value for enum {type_sql}: {bad} rows hold a value it does not have',
                             "22P02", bad, f"SELECT * FROM {t.source} WHERE {value} NOT IN ({labels or 'NULL'})")
            new_value = value
        else:
            if using is None and not self._assignment_cast(col, type_sql):
                raise _Fails(f'column "{name}" cannot be cast automatically to type {type_sql}', "42804")
            source_text = self.expression(t, using) if using is not None else _ident(name)
            new_value = f"({source_text})::{type_sql}"
            if t.tainted:
                raise _Unknown(f'the rows of "{t.name}" cannot be known: {t.tainted}')
            total = 0
            if t.source is not None:
                try:
                    converted, total = self.query(f"SELECT count({new_value}), count(*) FROM {t.source}")
                except psycopg.errors.DataError as e:  # a value does not convert: the deploy fails the same way
                    raise _Fails(_error_text(e), e.sqlstate or "22000", None,
                                 f"SELECT * FROM {t.source}") from None
        if col.default is not None and "::" in col.default and col.type_name != type_name:
            virtual_target = target is not None and not target.live
            if virtual_target or not self._assignment_cast(col, type_sql):
                raise _Fails(f'default for column "{name}" cannot be cast automatically to type {type_sql} '
                             "(drop the default before changing the type)", "42804")
        exprs = self.identity(t)
        exprs[name] = new_value
        col.type, col.type_name = type_sql, type_name
        self.layer(t, exprs)
        self._recheck_after_type_change(t, name)
        return replace(base, rows_scanned=int(total), rewrites=True)

    def _recheck_after_type_change(self, t: _Table, column: str) -> None:
        """PostgreSQL re-creates the CHECK constraints on a column whose type changed, from
        their text: an operator that does not exist for the new type fails the statement, and
        the rows are checked again."""
        for con in list(self.state.constraints.values()):
            if con.table != t.name or con.kind != CHECK or not con.expression:
                continue
            node = _expression_node(con.expression)
            if column not in _columns_used(node):
                continue
            try:
                self._check(t, con.name, node, StatementResult(0, 0, "", Outcome.PASSES))
            except psycopg.Error as e:
                if not (e.sqlstate or "").startswith("42"):  # 42883 no such operator, 42804 datatype mismatch
                    raise
                raise _Fails(f'constraint "{con.name}": {_error_text(e)}', e.sqlstate or "42000") from None

    def _assignment_cast(self, col: _Column, type_sql: str) -> bool:
        """Whether PostgreSQL converts the column to the type without USING."""
        if col.type_name.lower() == _unquote(type_sql.split("(")[0]).lower():
            return True
        source_enum = self.state.enums.get(col.type_name)
        if source_enum is not None and not source_enum.live:
            raise _Unknown(f"cast from the new enum {col.type_name} is not modelled")
        return self._assignable(col.type, type_sql)

    def _assignable(self, source_type: str, target_type: str) -> bool:
        """Whether PostgreSQL stores a value of the one type in a column of the other (an
        assignment or implicit cast, or any type into a string type)."""
        row = self.query(
            "SELECT s.oid = t.oid OR t.typcategory = 'S' OR EXISTS (SELECT 1 FROM pg_cast "
            "WHERE castsource = s.oid AND casttarget = t.oid AND castcontext IN ('a', 'i')) "
            f"FROM (SELECT {_literal(source_type)}::regtype::oid AS oid) AS s0 "
            "JOIN pg_type s ON s.oid = s0.oid "
            f"JOIN pg_type t ON t.oid = {_literal(target_type)}::regtype::oid"
        )
        return bool(row[0])

    def _add_constraint(self, t: _Table, con: ast.Constraint, columns: tuple[str, ...], *,
                        base: StatementResult | None = None, new_table: bool = False) -> StatementResult:
        base = base or StatementResult(0, 0, "", Outcome.PASSES)
        kind = ConstrType(con.contype)
        name = con.conname or _default_name(t.name, kind, columns or tuple(
            s.sval or "" for s in (con.keys or con.fk_attrs or ())))
        if (t.name, name) in self.state.constraints:
            self.exists_already(f'constraint "{name}" for relation "{t.name}" already exists', "42710")
        if kind == ConstrType.CONSTR_CHECK:
            return self._add_check(t, con, name, base, new_table)
        if kind in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE):
            keys = columns or tuple(s.sval or "" for s in con.keys)
            return self._add_key(t, name, keys, kind == ConstrType.CONSTR_PRIMARY, base, new_table)
        if kind == ConstrType.CONSTR_FOREIGN:
            return self._add_foreign_key(t, con, name, columns, base, new_table)
        raise _Unknown(f"constraint kind {kind.name} is not modelled")

    def _add_check(self, t: _Table, con: ast.Constraint, name: str, base: StatementResult,
                   new_table: bool) -> StatementResult:
        self.state.constraints[(t.name, name)] = _Constraint(name, t.name, CHECK, expression=_sql(con.raw_expr))
        if con.skip_validation or new_table:
            self.expression(t, con.raw_expr)  # its columns must exist all the same
            return base
        return self._check(t, name, con.raw_expr, base)

    def _add_key(self, t: _Table, name: str, keys: tuple[str, ...], primary: bool, base: StatementResult,
                 new_table: bool) -> StatementResult:
        for k in keys:
            self._column(t, k)
        if self.state.relation_exists(name):
            self.exists_already(f'relation "{name}" already exists', "42P07")
        if primary and any(c.table == t.name and c.kind == PRIMARY_KEY for c in self.state.constraints.values()):
            raise _Fails(f'multiple primary keys for table "{t.name}" are not allowed', "42P16")
        self.state.constraints[(t.name, name)] = _Constraint(name, t.name, PRIMARY_KEY if primary else UNIQUE, keys)
        self.state.indexes[name] = (t.name, True, keys)
        if primary:
            for k in keys:
                t.columns[k].nullable = False
        if new_table:
            return base
        return self._unique(t, [_ident(k) for k in keys], None, base, what=f'constraint "{name}"', nulls_fail=primary)

    def _add_foreign_key(self, t: _Table, con: ast.Constraint, name: str, columns: tuple[str, ...],
                         base: StatementResult, new_table: bool) -> StatementResult:
        cols = columns or tuple(s.sval or "" for s in con.fk_attrs)
        parent_name = con.pktable.relname or ""
        parent = self.table(parent_name) if parent_name != t.name else t
        ref = tuple(s.sval or "" for s in con.pk_attrs or ()) or self._primary_key(parent)
        for c in cols:
            self._column(t, c)
        for c in ref:
            self._column(parent, c)
        keyed = any(v[0] == parent.name and v[1] and set(v[2]) == set(ref) for v in self.state.indexes.values())
        if not keyed and not self.state.catalog_unknown:
            raise _Fails(f'there is no unique constraint matching given keys for referenced table "{parent.name}"',
                         "42830")
        actions = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
        fk = _Constraint(name, t.name, FOREIGN_KEY, cols, ref_table=parent.name, ref_columns=ref,
                         on_delete=actions.get(con.fk_del_action or "a", "NO ACTION"))
        self.state.constraints[(t.name, name)] = fk
        if con.skip_validation or new_table:
            return replace(base, lock=SHARE_ROW_EXCLUSIVE)
        return replace(self._foreign_key(t, fk, base), lock=SHARE_ROW_EXCLUSIVE)

    def _primary_key(self, t: _Table) -> tuple[str, ...]:
        pk = [c for c in self.state.constraints.values() if c.table == t.name and c.kind == PRIMARY_KEY]
        if not pk:
            raise _Fails(f'there is no primary key for referenced table "{t.name}"', "42830")
        return pk[0].columns

    def _check(self, t: _Table, name: str, expr_node: object, base: StatementResult) -> StatementResult:
        expression = self.expression(t, expr_node)
        answer = self.shared(t, Constraint(name, t.name, CHECK, definition=f"CHECK ({expression})"))
        if answer is not None:
            bad, total = answer[0], self.estimate(t)
        else:
            bad, total = self.count(t, f"NOT ({expression})")
        if bad:
            raise _Fails(f'check constraint "{name}" of relation "{t.name}" is violated by some row', "23514", bad,
                         f"SELECT * FROM {t.source} WHERE NOT ({expression})")
        return replace(base, rows_scanned=total)

    def _foreign_key(self, t: _Table, fk: _Constraint, base: StatementResult) -> StatementResult:
        parent = self.state.tables[fk.ref_table]
        if parent.tainted:
            raise _Unknown(f'the rows of "{parent.name}" cannot be known: {parent.tainted}')
        if not parent.changed:
            answer = self.shared(t, Constraint(fk.name, t.name, FOREIGN_KEY, fk.columns, ref_table=fk.ref_table,
                                               ref_columns=fk.ref_columns))
            if answer is not None:
                if answer[0]:
                    raise _Fails(f'insert or update on table "{t.name}" violates foreign key constraint "{fk.name}" '
                                 f"({answer[0]} rows reference no {fk.ref_table} row)", "23503", answer[0])
                return replace(base, rows_scanned=self.estimate(t))
        present = " AND ".join(f"{_ident(c)} IS NOT NULL" for c in fk.columns)
        if parent.source is None:
            match = "false"
        else:
            joined = " AND ".join(f"parent.{_ident(p)} = child_key.{_ident(c)}"
                                  for c, p in zip(fk.columns, fk.ref_columns))
            inner = _aliased(parent.source, "parent")
            match = f"EXISTS (SELECT 1 FROM {inner} WHERE {joined})"
        child = _aliased(t.source, "child_key") if t.source else None
        if child is None:
            return replace(base, rows_scanned=0)
        hit, total = self.query(f"SELECT count(*) FILTER (WHERE {present} AND NOT {match}), count(*) FROM {child}")
        if hit:
            raise _Fails(f'insert or update on table "{t.name}" violates foreign key constraint "{fk.name}" '
                         f"({hit} rows reference no {fk.ref_table} row)", "23503", int(hit),
                         f"SELECT * FROM {child} WHERE {present} AND NOT {match}")
        return replace(base, rows_scanned=int(total))

    def _dml_target(self, relation: ast.RangeVar, where: object, unmodelled: str) -> tuple[_Table, str | None, str]:
        """The table an UPDATE/DELETE changes, its alias, and its WHERE as a condition on the
        virtual rows; a FROM/USING/WITH (`unmodelled`) or an expression that cannot be
        modelled leaves the table's rows unknown from here on."""
        table = relation.relname or ""
        if unmodelled:
            self._taint(table, unmodelled)
        t = self.table(table)
        alias = relation.alias.aliasname if relation.alias else None
        try:
            condition = f"coalesce(({self.expression(t, where, alias)}), false)" if where is not None else "true"
        except _Unknown as u:
            self._taint(table, str(u))
            raise
        return t, alias, condition

    def on_UpdateStmt(self, node: ast.UpdateStmt, base: StatementResult) -> StatementResult:
        base = replace(base, table=node.relation.relname or "", lock=ROW_EXCLUSIVE)
        unmodelled = "UPDATE ... FROM is not modelled" if node.fromClause or node.withClause else ""
        t, alias, where = self._dml_target(node.relation, node.whereClause, unmodelled)
        try:
            exprs = self.identity(t)
            updated_columns = []
            for target in node.targetList:
                if target.name not in t.columns:
                    self.missing(f'column "{target.name}" of relation "{t.name}" does not exist', "42703")
                if target.indirection:
                    raise _Unknown("UPDATE of a part of a column is not modelled")
                col = t.columns[target.name]
                new_value = f"({self.expression(t, target.val, alias)})::{self.value_type(col)}"
                exprs[col.name] = f"CASE WHEN {where} THEN {new_value} ELSE {_ident(col.name)} END"
                updated_columns.append(col)
        except _Unknown as u:
            self._taint(t.name, str(u))
            raise
        updated, total = self.count(t, where, alias)
        self.layer(t, exprs, inner_alias=alias)
        if updated:
            self._recheck(t, updated_columns)
        return replace(base, rows_updated=updated, rows_scanned=total)

    def _recheck(self, t: _Table, updated: list[_Column]) -> None:
        """The constraints an UPDATE must keep, on the rows as they will be."""
        names = {c.name for c in updated}
        self._recheck_not_null(t, [c for c in updated if not c.nullable])
        unused = StatementResult(0, 0, "", Outcome.PASSES)
        for con in list(self.state.constraints.values()):
            if con.table != t.name:
                continue
            if con.kind == CHECK and con.expression:
                self._recheck_check(t, con, names)
            elif con.kind == FOREIGN_KEY and names & set(con.columns):
                self._foreign_key(t, con, unused)
        self._recheck_unique(t, names, "could not create")
        for fk in self.state.fks_to(t.name):
            if names & set(fk.ref_columns):
                self._taint(fk.table, f'an UPDATE of "{t.name}" key columns cascades: not modelled')

    def _recheck_unique(self, t: _Table, changed: set[str], verb: str) -> None:
        """Unique keys and indexes over the changed columns, on every row as it will be."""
        keys = [(f'constraint "{c.name}"', c.columns) for c in self.state.constraints.values()
                if c.table == t.name and c.kind in (PRIMARY_KEY, UNIQUE)]
        keys += [(f'unique index "{name}"', cols) for name, (table, unique, cols) in self.state.indexes.items()
                 if table == t.name and unique and (t.name, name) not in self.state.constraints]
        unused = StatementResult(0, 0, "", Outcome.PASSES)
        for what, cols in keys:
            if not changed & set(cols):
                continue
            try:
                self._unique(t, [_ident(c) for c in cols], None, unused, what=what, nulls_fail=False)
            except _Fails as f:
                raise _Fails(f.reason.replace("could not create", verb, 1), f.sqlstate, f.rows, f.inspect_sql) from None

    def _recheck_not_null(self, t: _Table, columns: list[_Column]) -> None:
        for col in columns:
            nulls, _ = self.count(t, f"{_ident(col.name)} IS NULL")
            if nulls:
                raise _Fails(f'null value in column "{col.name}" of relation "{t.name}" violates not-null '
                             "constraint", "23502", nulls)

    def _recheck_check(self, t: _Table, con: _Constraint, updated: set[str]) -> None:
        node = _expression_node(con.expression)
        if not updated & _columns_used(node):
            return
        expression = self.expression(t, node)
        bad, _ = self.count(t, f"NOT ({expression})")
        if bad:
            raise _Fails(f'new row for relation "{t.name}" violates check constraint "{con.name}"', "23514", bad,
                         f"SELECT * FROM {t.source} WHERE NOT ({expression})")

    def on_DeleteStmt(self, node: ast.DeleteStmt, base: StatementResult) -> StatementResult:
        base = replace(base, table=node.relation.relname or "", lock=ROW_EXCLUSIVE)
        unmodelled = "DELETE ... USING is not modelled" if node.usingClause or node.withClause else ""
        t, alias, condition = self._dml_target(node.relation, node.whereClause, unmodelled)
        deleted, total = self.count(t, condition, alias)
        if deleted:
            try:
                if alias and self.state.fks_to(t.name):
                    raise _Unknown("a DELETE with an alias on a table others reference is not modelled")
                self._children_of_deleted(t, condition, t.source or "", t.name)
            except _Unknown as u:
                self._taint(t.name, str(u))
                raise
        self.layer(t, self.identity(t), where=f"NOT {condition}", inner_alias=alias)
        return replace(base, rows_deleted=deleted, rows_scanned=total)

    def _children_of_deleted(self, t: _Table, condition: str, deleted: str, parent: str, depth: int = 0,
                             ancestors: frozenset[str] = frozenset()) -> None:
        """Rows of other tables referencing the deleted rows (those of `deleted`, aliased
        `parent`, where `condition`): RESTRICT / NO ACTION fails the DELETE, CASCADE deletes
        them (and their own children, down the chain), SET NULL empties their key columns (a
        NOT NULL or CHECK on them is checked); SET DEFAULT and cycles are not modelled."""
        for fk in self.state.fks_to(t.name):
            child = self.state.tables.get(fk.table)
            if child is None or child.source is None:
                continue
            if child.tainted:
                raise _Unknown(f'the rows of "{child.name}" cannot be known: {child.tainted}')
            alias = f"referencing_{depth}"
            joined = " AND ".join(f"{_ident(parent)}.{_ident(p)} = {alias}.{_ident(c)}"
                                  for c, p in zip(fk.columns, fk.ref_columns))
            referencing = f"EXISTS (SELECT 1 FROM {deleted} WHERE {condition} AND {joined})"
            rows = _aliased(child.source, alias)
            hit = int(self.query(f"SELECT count(*) FROM {rows} WHERE {referencing}")[0])
            if not hit:
                continue
            if fk.on_delete in ("NO ACTION", "RESTRICT"):
                raise _Fails(f'update or delete on table "{t.name}" violates foreign key constraint "{fk.name}" '
                             f'on table "{fk.table}" ({hit} rows still reference deleted rows)', "23503", hit)
            if fk.on_delete not in ("CASCADE", "SET NULL") or child.name == t.name or child.name in ancestors:
                self._taint(fk.table, f'ON DELETE {fk.on_delete} from a DELETE on "{t.name}" is not modelled')
                raise _Unknown(f'ON DELETE {fk.on_delete} of "{fk.table}" from a DELETE on "{t.name}" is not modelled')
            if fk.on_delete == "CASCADE":
                self._children_of_deleted(child, referencing, rows, alias, depth + 1, ancestors | {t.name})
                self.layer(child, self.identity(child), where=f"NOT {referencing}", inner_alias=alias)
                continue
            exprs = self.identity(child)
            for c in fk.columns:
                exprs[c] = f"CASE WHEN {referencing} THEN NULL ELSE {_ident(c)} END"
            self.layer(child, exprs, inner_alias=alias)
            self._recheck(child, [child.columns[c] for c in fk.columns])

    def on_InsertStmt(self, node: ast.InsertStmt, base: StatementResult) -> StatementResult:
        """INSERT ... VALUES, or ... SELECT from one table: the new rows are checked as
        PostgreSQL checks them (NOT NULL, CHECK - NOT VALID ones too -, foreign keys, unique
        keys against every row), then joined to the table's rows for every later statement."""
        table = node.relation.relname or ""
        try:
            return self._insert(self.table(table), node, replace(base, table=table, lock=ROW_EXCLUSIVE))
        except _Unknown as u:
            self._taint(table, str(u))
            raise
        except psycopg.Error as e:
            self._taint(table, f"an INSERT could not be evaluated: {_error_text(e)}")
            raise

    def _insert(self, t: _Table, node: ast.InsertStmt, base: StatementResult) -> StatementResult:
        if node.onConflictClause or node.returningClause or node.withClause or node.override:
            raise _Unknown("INSERT ... ON CONFLICT / RETURNING / WITH / OVERRIDING is not modelled")
        inserted = _Table(t.name, t.columns, self._inserted_rows(t, node), changed=True)
        try:
            count = int(self.query(f"SELECT count(*), count(ROW({', '.join(map(_ident, t.columns))})::text) "
                                   f"FROM {inserted.source}")[0])
        except psycopg.errors.DataError as e:  # a value that does not convert fails the INSERT the same way
            raise _Fails(_error_text(e), e.sqlstate or "22000") from None
        if not count:
            return base
        self._check_new_rows(t, inserted)
        old = t.source
        columns = ", ".join(map(_ident, t.columns))
        t.source = inserted.source if old is None else \
            f"(SELECT {columns} FROM {old} UNION ALL SELECT {columns} FROM {inserted.source}) AS {_ident(t.name)}"
        t.changed = True
        unused = StatementResult(0, 0, "", Outcome.PASSES)
        for fk in [c for c in self.state.constraints.values() if c.table == t.name and c.kind == FOREIGN_KEY]:
            self._foreign_key(inserted, fk, unused)  # after the new rows joined: they may reference each other
        self._recheck_unique(t, set(t.columns), "duplicate key value violates")
        return replace(base, rows_inserted=count, rows_scanned=0)

    def _inserted_rows(self, t: _Table, node: ast.InsertStmt) -> str:
        """The new rows as a FROM item aliased as the table: every column, in its order."""
        targets = [c.name or "" for c in node.cols or ()] or list(t.columns)
        if any(c.indirection for c in node.cols or ()):
            raise _Unknown("INSERT into a part of a column is not modelled")
        for name in targets:
            self._column(t, name)
        select = node.selectStmt
        if not isinstance(select, ast.SelectStmt) or select.op or select.withClause:
            raise _Unknown("INSERT from this query is not modelled")
        rows = [list(v) for v in select.valuesLists] if select.valuesLists else \
            [[target.val for target in select.targetList or ()]]
        mismatch = next((len(values) - len(targets) for values in rows if len(values) != len(targets)), 0)
        if mismatch:
            more, fewer = ("expressions", "target columns") if mismatch > 0 else ("target columns", "expressions")
            raise _Fails(f"INSERT has more {more} than {fewer}", "42601")
        source, alias = self._insert_source(select)
        reads = source or _Table("", {}, None)  # VALUES read no table: a column reference is not modelled
        typed: list[tuple[_Column, str]] = []
        selects = [self._new_row(t, dict(zip(targets, values)), reads, alias, typed) for values in rows]
        if source is not None and source.source is None:  # an empty table: no row
            nothing = ", ".join(f"NULL::{self.value_type(c)} AS {_ident(c.name)}" for c in t.columns.values())
            return f"(SELECT {nothing} WHERE false) AS {_ident(t.name)}"
        read_from = (_aliased(source.source, alias) if alias else source.source) if source and source.source else None
        self._assignment_of(typed, read_from)
        if source is None:
            return f"({' UNION ALL '.join(selects)}) AS {_ident(t.name)}"
        where = f" WHERE {self.expression(source, select.whereClause, alias)}" if select.whereClause else ""
        return f"({selects[0]} FROM {read_from}{where}) AS {_ident(t.name)}"

    def _new_row(self, t: _Table, given: dict[str, ast.Node], reads: _Table, alias: str | None,
                 typed: list[tuple[_Column, str]]) -> str:
        """SELECT of one new row: every column, given or its default; values that are not
        untyped literals are added to `typed`, to be checked for assignment."""
        exprs = []
        for col in t.columns.values():
            value = given.get(col.name)
            if value is None or isinstance(value, ast.SetToDefault):
                sql = self.expression(t, _expression_node(col.default)) if col.default else "NULL"
            else:
                sql = self.expression(reads, value, alias)
                if not (isinstance(value, ast.A_Const) and (value.isnull or isinstance(value.val, ast.String))):
                    typed.append((col, sql))
            exprs.append(f"({sql})::{self.value_type(col)} AS {_ident(col.name)}")
        return "SELECT " + ", ".join(exprs)

    def _assignment_of(self, typed: list[tuple[_Column, str]], read_from: str | None) -> None:
        """An INSERT's typed values must be assignable to their columns (42804 otherwise):
        the rows are built with explicit casts, which allow more."""
        if not typed:
            return
        types = ", ".join(f"pg_typeof({sql})::text" for _, sql in typed)
        joined = f" LEFT JOIN {read_from} ON true" if read_from else ""
        (found,) = self.query(f"SELECT ARRAY[{types}] FROM (SELECT 1) AS one{joined} LIMIT 1")
        for (col, _), value_type in zip(typed, found):
            if value_type != "unknown" and not self._assignable(value_type, self.value_type(col)):
                raise _Fails(f'column "{col.name}" is of type {col.type} but expression is of type {value_type}',
                             "42804")

    def _insert_source(self, select: ast.SelectStmt) -> tuple[_Table | None, str | None]:
        """The one table an INSERT ... SELECT reads (None for VALUES or no FROM), and its alias."""
        if select.valuesLists or not select.fromClause:
            return None, None
        clauses = (select.groupClause, select.havingClause, select.distinctClause, select.sortClause,
                   select.limitCount, select.limitOffset, select.windowClause)
        rv = select.fromClause[0]
        if any(clauses) or len(select.fromClause) > 1 or not isinstance(rv, ast.RangeVar):
            raise _Unknown("INSERT ... SELECT other than from one table with a WHERE is not modelled")
        source = self.table(rv.relname or "")
        if source.tainted:
            raise _Unknown(f'the rows of "{source.name}" cannot be known: {source.tainted}')
        return source, rv.alias.aliasname if rv.alias else None

    def _check_new_rows(self, t: _Table, inserted: _Table) -> None:
        """What PostgreSQL checks on each new row before the keys: NOT NULL, CHECK, enum labels."""
        self._recheck_not_null(inserted, [c for c in t.columns.values() if not c.nullable])
        for con in list(self.state.constraints.values()):
            if con.table == t.name and con.kind == CHECK and con.expression:
                self._recheck_check(inserted, con, set(t.columns))
        for enum_col in (c for c in t.columns.values() if c.type_name in self.state.enums):
            enum = self.state.enums[enum_col.type_name]
            if enum.live:
                continue  # the cast to the live type already refused a value it does not have
            labels = ", ".join(_literal(label) for label in enum.labels) or "NULL"
            bad, _ = self.count(inserted, f"{_ident(enum_col.name)} NOT IN ({labels})")
            if bad:
                raise _Fails(f'invalid input value for enum {enum_col.type}', "22P02", bad)

    def on_DoStmt(self, node: ast.DoStmt, base: StatementResult) -> StatementResult:
        """A body of plain statements and IF branches on catalog look-ups (do_block.py) is
        walked as if its statements stood here; anything else may change any table or the
        schema, so every table's rows and the absence of anything become unknown."""
        try:
            if self.state.catalog_unknown:
                raise do_block.NotModelled(f"the catalog is unknown after {self.state.catalog_unknown}")
            done: list[StatementResult] = []
            self._run_steps(do_block.parse(node, base.text), base, done)
        except (do_block.NotModelled, psycopg.Error) as e:
            reason = f"a DO block (statement {base.number})"
            for t in self.state.tables.values():
                t.tainted = t.tainted or f"{reason} may change any table"
            self.state.catalog_unknown = self.state.catalog_unknown or reason
            what = _error_text(e) if isinstance(e, psycopg.Error) else str(e)
            raise _Unknown(f"a DO block is not modelled ({what}): it may change any table or the schema") from None
        return _combined(base, done)

    def _run_steps(self, steps: Sequence[do_block.Step], base: StatementResult, done: list[StatementResult]) -> bool:
        """Runs a DO block's steps; False once a RETURN or a failing statement ends the block."""
        for step in steps:
            if isinstance(step, do_block.Return):
                return False
            if isinstance(step, do_block.If):
                lookup = partial(do_block.exists, self.state, query=self.query, literal=_literal)
                body = next(b for cond, b in step.branches
                            if cond is None or do_block.decide(cond, lookup, self.state.schema))
                if not self._run_steps(body, base, done):
                    return False
                continue
            result = self.run(_Statement(base.number, base.line, step.text, step.node))
            if result.outcome == Outcome.CANNOT_EVALUATE:
                raise do_block.NotModelled(f"{step.text[:60]!r}: {result.reason}")
            done.append(result)
            if result.outcome == Outcome.FAILS:
                return False
        return True

    def on_CreateTrigStmt(self, node: ast.CreateTrigStmt, base: StatementResult) -> StatementResult:
        self._taint(node.relation.relname, "a trigger runs on later changes: not modelled")
        raise _Unknown("CREATE TRIGGER is not modelled")

    def on_CreateFunctionStmt(self, node: ast.Node, base: StatementResult) -> StatementResult:
        raise _Unknown("CREATE FUNCTION is not modelled")

    def on_CreateExtensionStmt(self, node: ast.Node, base: StatementResult) -> StatementResult:
        raise _Unknown("CREATE EXTENSION is not modelled")

    def on_CreateSeqStmt(self, node: ast.CreateSeqStmt, base: StatementResult) -> StatementResult:
        name = node.sequence.relname
        if self.state.relation_exists(name) and not node.if_not_exists:
            self.exists_already(f'relation "{name}" already exists', "42P07")
        self.state.other_relations.add(name)
        return base

    def _taint(self, table: str, reason: str) -> None:
        t = self.state.tables.get(table)
        if t is not None and not t.tainted:
            t.tainted = reason


_VOLATILE = {"random", "gen_random_uuid", "uuid_generate_v4", "clock_timestamp", "nextval", "timeofday"}


_LOCK_ORDER = ("", ROW_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE, ACCESS_EXCLUSIVE)


def _combined(base: StatementResult, parts: Sequence[StatementResult]) -> StatementResult:
    """A DO block's result from its statements': their effects added up, the strongest lock
    (on its table), the failure of the last one if it failed; numbered as the DO statement."""
    effects = {e: sum(getattr(p, e) for p in parts) for e in EFFECTS}
    scanned = [p.rows_scanned for p in parts if p.rows_scanned is not None]
    result = replace(base, **effects, rewrites=any(p.rewrites for p in parts),
                     rows_scanned=max(scanned, default=0) if len(scanned) == len(parts) else None)
    locked = max(parts, key=lambda p: _LOCK_ORDER.index(p.lock) if p.lock in _LOCK_ORDER else 0, default=None)
    if locked is not None:
        result = replace(result, table=locked.table, lock=locked.lock)
    if parts and parts[-1].outcome == Outcome.FAILS:
        f = parts[-1]
        result = replace(result, outcome=Outcome.FAILS, table=f.table, reason=f.reason, sqlstate=f.sqlstate,
                         offending_rows=f.offending_rows, inspect_sql=f.inspect_sql)
    return result


def _expression_node(expression: str) -> ast.Node:
    """An expression's AST (e.g. a CHECK constraint's text from the catalog)."""
    select = parse_sql(f"SELECT {expression}")[0].stmt
    assert isinstance(select, ast.SelectStmt) and select.targetList
    value = select.targetList[0].val
    assert isinstance(value, ast.Node)
    return value


def _columns_used(node: object) -> set[str]:
    return {f.sval or "" for n in _walk(node) if isinstance(n, ast.ColumnRef) for f in n.fields
            if isinstance(f, ast.String)}


def _volatile(node: object) -> bool:
    return any(isinstance(n, ast.FuncCall) and _names(n.funcname).lower() in _VOLATILE for n in _walk(node))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _default_name(table: str, kind: ConstrType, columns: tuple[str, ...]) -> str:
    suffix = {ConstrType.CONSTR_PRIMARY: "pkey", ConstrType.CONSTR_UNIQUE: "key",
              ConstrType.CONSTR_FOREIGN: "fkey", ConstrType.CONSTR_CHECK: "check"}.get(kind, "con")
    if kind == ConstrType.CONSTR_PRIMARY:
        return f"{table}_pkey"
    return "_".join((table, *columns, suffix))


def _table_of(node: object) -> str:
    relation = getattr(node, "relation", None)
    return getattr(relation, "relname", "") or ""


def _error_text(error: psycopg.Error) -> str:
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else type(error).__name__
    return f"{error.sqlstate} {message}" if error.sqlstate else message


# -- one deploy -------------------------------------------------------------------------------

# Statements PostgreSQL refuses inside the implicit transaction of a multi-statement script.
_OUTSIDE_TRANSACTION = re.compile(r"^\s*(VACUUM|CREATE\s+DATABASE|DROP\s+DATABASE|ALTER\s+SYSTEM)\b", re.I)


def migration_warnings(statements: Sequence[_Statement]) -> list[str]:
    """Why a migration is unsafe to run the way deploy runs it (one implicit transaction)."""
    warnings = []
    control = [f"{s.number} (line {s.line})" for s in statements if isinstance(s.node, ast.TransactionStmt)]
    if control:
        warnings.append(f"BEGIN/COMMIT inside the migration (statement {', '.join(control)}): a failure after a COMMIT "
                        "leaves the statements before it applied, while deploy records the migration as failed")
    for s in statements:
        if isinstance(s.node, ast.IndexStmt) and s.node.concurrent and len(statements) > 1:
            warnings.append(f"statement {s.number} (line {s.line}): CREATE INDEX CONCURRENTLY cannot run inside the "
                            "transaction block deploy runs a multi-statement migration in")
    return warnings


def predict_deploy(
    scripts: Sequence[tuple[str, str | None]],
    live: Schema,
    query: Query,
    *,
    schema: str = "public",
    refused: str = "",
    known: Known = _no_known,
) -> DeployPrediction:
    """What `prisma migrate deploy` will do. `scripts`: (name, migration.sql text, or None
    when it could not be read) of the migrations it will apply, in order; `live`: the
    database's Schema; `query`: runs one read-only SELECT and returns its single row;
    `refused`: why deploy will not run at all (a failed migration is recorded: P3009)."""
    if refused:
        return DeployPrediction(Outcome.REFUSED, tuple(
            MigrationPrediction(name, Outcome.NOT_REACHED) for name, _ in scripts), refused)
    evaluator = _Evaluator(initial_state(live, schema), query, known)
    results: list[MigrationPrediction] = []
    failed = False
    first_unknown = ""
    for name, text in scripts:
        if failed:
            # Deploy never runs it; what is wrong with it is still said (bad input is named).
            results.append(MigrationPrediction(name, Outcome.NOT_REACHED, reason=_read_problem(text)))
            continue
        prediction = _predict_migration(evaluator, name, text)
        results.append(prediction)
        if prediction.outcome == Outcome.FAILS:
            failed = True
        elif prediction.outcome == Outcome.CANNOT_EVALUATE and not first_unknown:
            first_unknown = f"{name}: {prediction.reason}"
    if failed and not first_unknown:
        outcome = Outcome.FAILS
    elif first_unknown:
        outcome = Outcome.CANNOT_EVALUATE
    else:
        outcome = Outcome.PASSES
    return DeployPrediction(outcome, tuple(results), first_unknown)


def _read_problem(text: str | None) -> str:
    """Why a migration cannot be read or parsed ("" when it can), with its warnings."""
    if text is None:
        return "migration.sql could not be read"
    try:
        return "; ".join(migration_warnings(split_statements(text)))
    except ParseError as e:
        return f"unparsable migration.sql: {e.args[0]}"


def _predict_migration(evaluator: _Evaluator, name: str, text: str | None) -> MigrationPrediction:
    if text is None:
        return MigrationPrediction(name, Outcome.CANNOT_EVALUATE, reason="migration.sql could not be read")
    try:
        statements = split_statements(text)
    except ParseError as e:
        location = e.args[1] if len(e.args) > 1 and isinstance(e.args[1], int) else None  # 1-based char offset
        line = text[: max(location - 1, 0)].count("\n") + 1 if location else None
        where = f" at line {line}" if line else ""
        # PostgreSQL rejects the whole script before running any of it: deploy fails here.
        fail = StatementResult(1, line or 1, "", Outcome.FAILS, reason=f"syntax error{where}: {e.args[0]}",
                               sqlstate="42601")
        return MigrationPrediction(name, Outcome.FAILS, (fail,), reason=f"unparsable migration.sql{where}: {e.args[0]}")
    warnings = migration_warnings(statements)
    done: list[StatementResult] = []
    unknown = ""
    multi = len(statements) > 1
    evaluator.begin_migration()
    for stmt in statements:
        if multi and isinstance(stmt.node, ast.IndexStmt) and stmt.node.concurrent:
            result = StatementResult(stmt.number, stmt.line, stmt.text, Outcome.FAILS, table=_table_of(stmt.node),
                                     reason="CREATE INDEX CONCURRENTLY cannot run inside a transaction block",
                                     sqlstate="25001")
        else:
            result = evaluator.run(stmt)
        done.append(result)
        if result.outcome == Outcome.FAILS:
            return MigrationPrediction(name, Outcome.FAILS, tuple(done), warnings=tuple(warnings))
        if result.outcome == Outcome.CANNOT_EVALUATE and not unknown:
            unknown = f"statement {stmt.number} (line {stmt.line}): {result.reason}"
    outcome = Outcome.CANNOT_EVALUATE if unknown else Outcome.PASSES
    return MigrationPrediction(name, outcome, tuple(done), reason=unknown, warnings=tuple(warnings))


def session_query(conn: psycopg.Connection) -> Query:
    """A Query on the monitored database's read-only session. On an autocommit session (the
    poll's) each SELECT stands alone; inside a transaction each gets a savepoint, so one
    failing does not abort the next."""

    def run(sql: str) -> tuple[Any, ...]:
        if conn.autocommit:
            row = conn.execute(sql).fetchone()
        else:
            with conn.transaction():
                row = conn.execute(sql).fetchone()
        return tuple(row) if row is not None else ()

    return run


def statements_of(predictions: Iterable[MigrationPrediction]) -> Iterator[tuple[str, StatementResult]]:
    for m in predictions:
        for s in m.statements:
            yield m.name, s


# -- the whole forecast: history as Prisma sees it, then the deploy ----------------------------


@dataclass(frozen=True)
class Forecast:
    view: PrismaView
    deploy: DeployPrediction
    commands: tuple[str, ...]  # `prisma migrate resolve` commands that fix the history

    def problems(self) -> list[str]:
        """One line per thing that makes verify fail."""
        found = []
        # A failure after an unevaluable statement counts too: deploy fails there unless that
        # statement fails first (or happens to fix the rows).
        if self.deploy.outcome in (Outcome.FAILS, Outcome.REFUSED) or self.deploy.failure:
            found.append(self.deploy.summary())
        if self.view.status == PrismaStatus.DIVERGED:
            found.append(f"history diverged from the folder (last common migration: {self.view.last_common or 'null'})")
        if self.view.baseline_unresolved:
            found.append("baseline not resolved: the schema exists but no migration of the folder is recorded")
        return found


def forecast(
    rows: Sequence[MigrationRow] | None, folder: Sequence[FolderEntry], live: Schema, query: Query,
    *, schema: str = "public", known: Known = _no_known,
) -> Forecast:
    """`prisma migrate status` and `deploy` as they will go on this database. `rows`: its
    `_prisma_migrations` (None: no such table); `folder`: the migrations folder as read."""
    has_tables = any(name != "_prisma_migrations" for name in live.tables)
    view = prisma_view(rows, [e.name for e in folder], has_tables=has_tables)
    refused = view.deploy_refused
    if rows is None and has_tables:
        refused = ("P3005: the database schema is not empty and has no _prisma_migrations table: "
                   "baseline it (prisma migrate resolve --applied <baseline>) before deploying")
    texts = {e.name: e.sql for e in folder}
    scripts = [(name, texts[name]) for name in view.not_applied]
    prediction = predict_deploy(scripts, live, query, schema=schema, refused=refused, known=known)
    commands = view.commands
    if view.baseline_unresolved:
        commands += baseline_commands(_already_present(scripts, live, schema))
    return Forecast(view, prediction, commands)


def _already_present(scripts: Sequence[tuple[str, str | None]], live: Schema, schema: str) -> list[str]:
    """The leading migrations whose first statement creates something the database already
    has: a baseline (or its successors) applied some other way, to be marked applied."""
    present = []
    for name, text in scripts:
        try:
            first = split_statements(text or "")[:1]
        except ParseError:
            break
        if not first:
            break
        result = _Evaluator(initial_state(live, schema), _no_query).run(first[0])
        if result.outcome != Outcome.FAILS or result.sqlstate not in ("42710", "42P07", "42701"):
            break
        present.append(name)
    return present


def _no_query(sql: str) -> tuple[Any, ...]:
    raise _Unknown("rows are not read for this")
