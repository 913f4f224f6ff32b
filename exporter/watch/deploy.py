"""The watch after a deploy (the runbook's Step 9 and "Check if new constraints impact
performance"): the mean execution time of the statements that write to the tables the
last deploy changed, before versus after it.

Two snapshots of pg_stat_statements' cumulative counters, summed per table written:
the baseline (the last poll before the exporter saw the deploy; the first poll when the
deploy is older than the exporter) and now. "Before" is the baseline's mean (total time /
calls since the statistics were reset), "after" the mean of what was added since.
Statements are attributed to tables by PostgreSQL's own parser (pglast): the target of
INSERT, UPDATE, DELETE and MERGE, also inside WITH. The tables a deploy changed are those
its migration.sql files create, alter, index or put a trigger on.

Without the extension, without its library loaded, or without the right to see other
roles' statements, the result carries an `unavailable` reason - never an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import psycopg
from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.visitors import Visitor
from psycopg import sql

from exporter.migrations.checksum import read_migration
from exporter.migrations.history import MIGRATION_FILE, Deploy

log = logging.getLogger(__name__)


# pg_stat_statements keeps 5,000 statements by default; ids of evicted ones accumulate here.
MAX_REMEMBERED_STATEMENTS = 50_000


class Unavailable(StrEnum):
    """The `reason` label of venzory_db_deploy_latency_unavailable."""

    NO_DEPLOY = "no_deploy"  # no finished migration in the history (or the history is off)
    EXTENSION_MISSING = "extension_missing"  # CREATE EXTENSION pg_stat_statements was not run in this database
    NOT_LOADED = "not_loaded"  # the extension exists but shared_preload_libraries lacks pg_stat_statements
    INSUFFICIENT_PRIVILEGE = "insufficient_privilege"  # the role sees only its own statements: grant pg_read_all_stats
    ERROR = "error"  # pg_stat_statements could not be read (the log says why)


_PROBE = """
SELECT (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
         WHERE e.extname = 'pg_stat_statements'),
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
         OR pg_has_role('pg_read_all_stats', 'MEMBER')
"""
# Only statements that may write: the server filters, pglast decides.
_STATEMENTS = """
SELECT queryid, query, calls, total_exec_time
FROM {schema}.pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query ~* '\\m(insert|update|delete|merge)\\M'
"""


class Phase(StrEnum):
    """The `phase` label of the deploy's write metrics."""

    BEFORE = "before"  # up to the baseline snapshot
    AFTER = "after"  # since it


@dataclass(frozen=True)
class Totals:
    calls: int = 0
    milliseconds: float = 0.0

    def __add__(self, other: Totals) -> Totals:
        return Totals(self.calls + other.calls, self.milliseconds + other.milliseconds)

    def __sub__(self, other: Totals) -> Totals:
        return Totals(self.calls - other.calls, self.milliseconds - other.milliseconds)

    @property
    def mean_seconds(self) -> float | None:
        return self.milliseconds / self.calls / 1000 if self.calls > 0 else None


@dataclass(frozen=True)
class TableLatency:
    table: str
    before: Totals  # cumulative up to the baseline
    after: Totals  # added since the baseline


@dataclass(frozen=True)
class DeployResult:
    deploy: Deploy | None
    tables: tuple[str, ...] = ()  # the tables the deploy changed
    latency: tuple[TableLatency, ...] = ()
    baseline_at: float | None = None  # when the "before" snapshot was taken
    unavailable: Unavailable | None = None
    detail: str = ""  # e.g. a migration.sql that could not be read or parsed


class _Targets(Visitor):
    """Tables a statement writes (INSERT/UPDATE/DELETE/MERGE) or a migration changes."""

    def __init__(self, schema: str, ddl: bool):
        super().__init__()
        self.schema, self.ddl = schema, ddl
        self.tables: set[str] = set()

    def _add(self, relation: ast.RangeVar | None) -> None:
        if relation is not None and relation.relname and relation.schemaname in (None, self.schema):
            self.tables.add(relation.relname)

    def visit_InsertStmt(self, ancestors: object, node: Any) -> None:
        self._add(node.relation)

    visit_UpdateStmt = visit_DeleteStmt = visit_MergeStmt = visit_InsertStmt

    def visit_CreateStmt(self, ancestors: object, node: Any) -> None:
        if self.ddl:
            self._add(node.relation)

    visit_AlterTableStmt = visit_IndexStmt = visit_CreateTrigStmt = visit_CreateStmt


def tables_of(text: str, schema: str, *, ddl: bool) -> set[str]:
    """The tables a SQL text writes to (ddl=False) or changes the structure of (ddl=True)."""
    targets = _Targets(schema, ddl)
    targets(parse_sql(text))
    return targets.tables


class DeployWatch:
    """One per database, kept across polls: the last snapshot, the deploy being watched
    and its baseline, and what each statement writes to (by queryid)."""

    def __init__(self, migrations_dir: Path | None, schema: str):
        self.dir = migrations_dir
        self.schema = schema
        self._writes: dict[int, frozenset[str]] = {}  # queryid -> tables it writes
        self._deploy: tuple[str, float] | None = None
        self._tables_for: tuple[str, ...] | None = None  # the deploy whose tables are cached
        self._tables: tuple[tuple[str, ...], str] = ((), "")
        self._baseline: tuple[float, dict[str, Totals]] | None = None
        self._previous: tuple[float, dict[str, Totals]] | None = None

    def read(self, conn: psycopg.Connection) -> dict[str, Totals] | Unavailable:
        """Per table, the totals of the statements writing to it; or why they are unknown."""
        probe = conn.execute(_PROBE).fetchone()
        assert probe is not None  # one row, always
        schema, privileged = probe
        if schema is None:
            return Unavailable.EXTENSION_MISSING
        if not privileged:
            return Unavailable.INSUFFICIENT_PRIVILEGE
        try:
            rows = conn.execute(sql.SQL(_STATEMENTS).format(schema=sql.Identifier(schema))).fetchall()
        except psycopg.errors.ObjectNotInPrerequisiteState:
            return Unavailable.NOT_LOADED
        except psycopg.errors.InsufficientPrivilege:
            return Unavailable.INSUFFICIENT_PRIVILEGE
        sums: dict[str, Totals] = {}
        for queryid, query, calls, total in rows:
            for table in self._written_by(queryid, query):
                sums[table] = sums.get(table, Totals()) + Totals(calls, total)
        return sums

    def _written_by(self, queryid: int | None, query: str) -> frozenset[str]:
        tables = self._writes.get(queryid) if queryid is not None else None
        if tables is None:
            try:
                tables = frozenset(tables_of(query, self.schema, ddl=False))
            except ParseError:
                tables = frozenset()  # a truncated text (track_activity_query_size) or a non-SQL utility
            if queryid is not None:
                if len(self._writes) >= MAX_REMEMBERED_STATEMENTS:
                    self._writes.clear()  # evicted statements' ids: parsing again costs little
                self._writes[queryid] = tables
        return tables

    def observe(self, now: float, deploy: Deploy | None, snapshot: dict[str, Totals] | Unavailable) -> DeployResult:
        previous = self._previous
        if not isinstance(snapshot, Unavailable):
            self._previous = (now, snapshot)
        if deploy is None:
            return DeployResult(None, unavailable=Unavailable.NO_DEPLOY)
        tables, detail = self._deploy_tables(deploy)
        if isinstance(snapshot, Unavailable):
            return DeployResult(deploy, tables, unavailable=snapshot, detail=detail)
        key = (deploy.name, deploy.finished_at.timestamp())
        if key != self._deploy or self._baseline is None:
            # The last snapshot before the deploy was seen; none when the exporter starts after it.
            self._deploy, self._baseline = key, previous or (now, snapshot)
        baseline_at, base = self._baseline
        if any((snapshot.get(t, Totals()) - base.get(t, Totals())).calls < 0 for t in tables):
            # pg_stat_statements was reset (or entries evicted): start again from here.
            self._baseline = (now, snapshot)
            baseline_at, base = self._baseline
        latency = tuple(TableLatency(t, base.get(t, Totals()), snapshot.get(t, Totals()) - base.get(t, Totals()))
                        for t in tables)
        return DeployResult(deploy, tables, latency, baseline_at, None, detail)

    def _deploy_tables(self, deploy: Deploy) -> tuple[tuple[str, ...], str]:
        """The tables the deploy's migrations change (cached per deploy)."""
        if self._tables_for == deploy.migrations:
            return self._tables
        found, problems = set(), []
        for name in deploy.migrations:
            if self.dir is None:
                problems.append("migrations.dir is not set: the deploy's tables are unknown")
                break
            try:
                found |= tables_of(read_migration(self.dir / name / MIGRATION_FILE), self.schema, ddl=True)
            except (OSError, UnicodeDecodeError) as e:
                problems.append(f"{name}/{MIGRATION_FILE}: {getattr(e, 'strerror', None) or e}")
            except ParseError as e:
                problems.append(f"{name}/{MIGRATION_FILE}: not parseable: {e}")
        self._tables_for, self._tables = deploy.migrations, (tuple(sorted(found)), "; ".join(problems))
        return self._tables
