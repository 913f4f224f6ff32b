"""The evaluator: the virtual state, and the read-only queries that answer questions about
the rows as they will be. The statement kinds (ddl, columns, constraints, dml, do_block)
are functions of an Evaluator; walk.py sends each statement to its kind.

A statement that fails raises Fails (what PostgreSQL will raise); one whose effect or
success cannot be known raises Unknown. Every count of a table's rows reads its virtual
source, so it sees what the earlier statements did; one SELECT per question."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import psycopg
from pglast import ast

from exporter.migrations.deploy.parsing import aliased, deparse, ident, last_name, literal, strings, walk
from exporter.migrations.deploy.state import Column, State, Table
from exporter.schema.model import Constraint, Index


class Fails(Exception):
    def __init__(self, reason: str, sqlstate: str, rows: int | None = None, inspect_sql: str = ""):
        super().__init__(reason)
        self.reason, self.sqlstate, self.rows, self.inspect_sql = reason, sqlstate, rows, inspect_sql


class Unknown(Exception):
    """The statement's effect or success cannot be known."""


Query = Callable[[str], tuple[Any, ...]]
# What a check of the same poll already counted for a rule on a live table: (rows, groups) or None.
Known = Callable[[Constraint | Index], tuple[int, int | None] | None]


def no_known(rule: Constraint | Index) -> None:
    return None


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


def error_text(error: psycopg.Error) -> str:
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else type(error).__name__
    return f"{error.sqlstate} {message}" if error.sqlstate else message


class Evaluator:
    def __init__(self, state: State, query: Query, known: Known = no_known):
        self.state = state
        self.query = query
        self.known = known
        self._estimates: dict[str, int] | None = None
        self._counts: dict[str, int] = {}  # rows per virtual source, counted once
        self.added_labels: dict[str, set[str]] = {}  # enum -> labels added by the current migration

    def begin_migration(self) -> None:
        # Each migration.sql is one transaction: a label it adds cannot be used before it commits.
        self.added_labels = {}

    # what exists ----------------------------------------------------------------------------
    def table(self, name: str) -> Table:
        t = self.state.tables.get(name)
        if t is None:
            self.missing(f'relation "{name}" does not exist', "42P01")
        return t

    def table_if_exists(self, name: str, missing_ok: bool) -> Table | None:
        return self.state.tables.get(name) if missing_ok else self.table(name)

    def column(self, t: Table, name: str) -> Column:
        col = t.columns.get(name)
        if col is None:
            self.missing(f'column "{name}" of relation "{t.name}" does not exist', "42703")
        return col

    def missing(self, reason: str, sqlstate: str) -> NoReturn:
        if self.state.catalog_unknown:
            raise Unknown(f"{reason}, unless {self.state.catalog_unknown} created it")
        raise Fails(reason, sqlstate)

    def missing_unless(self, if_exists: bool, reason: str, sqlstate: str) -> None:
        """A DROP / ALTER names what does not exist: skipped under IF EXISTS, else it fails."""
        if not if_exists:
            self.missing(reason, sqlstate)

    def exists_already(self, reason: str, sqlstate: str) -> NoReturn:
        if self.state.catalog_unknown:
            raise Unknown(f"{reason}, unless {self.state.catalog_unknown} changed it")
        raise Fails(reason, sqlstate)

    # the rows as they will be ---------------------------------------------------------------
    def require_rows(self, t: Table) -> None:
        if t.tainted:
            raise Unknown(f'the rows of "{t.name}" cannot be known: {t.tainted}')

    def taint(self, table: str, reason: str) -> None:
        t = self.state.tables.get(table)
        if t is not None and not t.tainted:
            t.tainted = reason

    @contextmanager
    def tainting(self, table: str) -> Iterator[None]:
        """What leaves a change unknown leaves the table's rows unknown from here on."""
        try:
            yield
        except Unknown as u:
            self.taint(table, str(u))
            raise

    def shared(self, t: Table, rule: Constraint | Index) -> tuple[int, int | None] | None:
        """A check of the same poll counted exactly these rows on the unchanged live table."""
        if t.changed or t.tainted or t.source is None:
            return None
        return self.known(rule)

    def estimate(self, t: Table) -> int | None:
        """The planner's row estimate of a live table (the lock figure where a shared count
        answered the question without a scan); None if never analyzed."""
        if self._estimates is None:
            rows = self.query("SELECT coalesce(json_object_agg(relname, reltuples::bigint), '{}') FROM pg_class "
                              f"WHERE relnamespace = {literal(ident(self.state.schema))}::regnamespace "
                              "AND relkind IN ('r', 'p')")
            self._estimates = {k: int(v) for k, v in (rows[0] or {}).items() if int(v) >= 0}
        return self._estimates.get(t.name)

    def rows_of(self, t: Table) -> int:
        self.require_rows(t)
        if t.source is None:
            return 0
        if t.source not in self._counts:
            self._counts[t.source] = int(self.query(f"SELECT count(*) FROM {t.source}")[0])
        return self._counts[t.source]

    def scanned(self, t: Table) -> int | None:
        """The rows a statement reads under its lock; None when they cannot be known."""
        try:
            return self.rows_of(t)
        except Unknown:
            return None

    def count(self, t: Table, condition: str, alias: str | None = None) -> tuple[int, int]:
        """(rows where condition, all rows) of the table as it will be, in one scan."""
        self.require_rows(t)
        if t.source is None:
            return 0, 0
        source = aliased(t.source, alias) if alias else t.source
        hit, total = self.query(f"SELECT count(*) FILTER (WHERE {condition}), count(*) FROM {source}")
        self._counts[t.source] = int(total)
        return int(hit), int(total)

    def remember_count(self, t: Table, total: int) -> None:
        """A query that also counted all of the table's rows: later questions reuse it."""
        if t.source is not None:
            self._counts[t.source] = int(total)

    def expression(self, t: Table, node: object, alias: str | None = None) -> str:
        """SQL of an expression over the table's virtual row: columns must exist, casts to
        enums that are no longer the live ones become casts to text (so are their columns).
        A sub-query may read only tables no earlier statement changed: it reads them live."""
        for n in walk(node, into_subqueries=False):
            if isinstance(n, ast.SubLink):
                self._subquery_reads_live_rows(n)
            if isinstance(n, ast.ColumnRef):
                fields = strings(n.fields)
                if len(fields) > 1 and fields[-2] not in (t.name, alias):
                    raise Unknown(f"a reference to {'.'.join(fields)} is not modelled")
                if fields and fields[-1] not in t.columns:
                    self.missing(f'column "{fields[-1]}" does not exist', "42703")
        for n in walk(node):
            if isinstance(n, ast.TypeCast):
                enum = self.state.enums.get(last_name(n.typeName.names))
                if enum is not None and not enum.live:
                    n.typeName = ast.TypeName(names=(ast.String("text"),), typemod=-1)
        return deparse(node)

    def _subquery_reads_live_rows(self, sublink: ast.SubLink) -> None:
        for rv in walk(sublink.subselect):
            if isinstance(rv, ast.RangeVar):
                other = self.state.tables.get(rv.relname or "")
                if other is None or other.changed or other.tainted or other.source is None:
                    raise Unknown(f'a sub-query reads "{rv.relname}" as an earlier statement left it: not modelled')

    def value_type(self, column: Column) -> str:
        enum = self.state.enums.get(column.type_name)
        return "text" if enum is not None and not enum.live else column.type

    def layer(self, t: Table, exprs: dict[str, str], where: str | None = None, alias: str | None = None,
              inner_alias: str | None = None) -> None:
        """A new FROM item over the current rows: exprs per column (name -> SQL), reading the
        current rows under `inner_alias` (an UPDATE's `AS o`) when given."""
        if t.source is None:
            return
        select = ", ".join(f"{e} AS {ident(n)}" for n, e in exprs.items()) or "NULL AS \"?\""
        filt = f" WHERE {where}" if where else ""
        inner = aliased(t.source, inner_alias) if inner_alias else t.source
        t.source = f"(SELECT {select} FROM {inner}{filt}) AS {ident(alias or t.name)}"
        t.changed = True

    def identity(self, t: Table) -> dict[str, str]:
        return {n: ident(n) for n in t.columns}

    # types ----------------------------------------------------------------------------------
    def assignable(self, source_type: str, target_type: str) -> bool:
        """Whether PostgreSQL stores a value of the one type in a column of the other (an
        assignment or implicit cast, or any type into a string type)."""
        row = self.query(
            "SELECT s.oid = t.oid OR t.typcategory = 'S' OR EXISTS (SELECT 1 FROM pg_cast "
            "WHERE castsource = s.oid AND casttarget = t.oid AND castcontext IN ('a', 'i')) "
            f"FROM (SELECT {literal(source_type)}::regtype::oid AS oid) AS s0 "
            "JOIN pg_type s ON s.oid = s0.oid "
            f"JOIN pg_type t ON t.oid = {literal(target_type)}::regtype::oid"
        )
        return bool(row[0])
