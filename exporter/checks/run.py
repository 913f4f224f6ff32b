"""Plan and run the checks of one database: guarded ones from the catalog, the rest with
one query per table (plus one GROUP BY per duplicate key, and one query per check that
has its own `timeout`).

A failure never hides another check: a table query that fails for a reason other than a
timeout or a lost connection is retried check by check, so each check gets its own status
and reason (the one bad rule fails alone). A lost connection propagates: the poll then
reports the database down.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from collections.abc import Iterable
from enum import StrEnum
from typing import Any, Protocol

import psycopg

from exporter.checks import duplicate, orphan, row
from exporter.checks.shape import OwnQuery, ident
from exporter.config import Check, DuplicateCheck, OrphanCheck, RowCheck
from exporter.db import LockWatch, execute_one, is_connection_error, one_row, statement_timeout
from exporter.schema.model import Constraint, Index, Schema



class KindModule(Protocol):
    """What each check kind's module (row, orphan, duplicate) answers about its checks."""

    def guard(self, check: Any, schema: Schema) -> str | None: ...
    def counts_same_rows(self, check: Any, rule: Constraint | Index) -> bool: ...
    def inspect_sql(self, check: Any) -> str: ...


# Each check kind of the config -> the module that writes its SQL and finds its guard.
KIND_MODULES: dict[str, KindModule] = {"row": row, "orphan": orphan, "duplicate": duplicate}


class CheckStatus(StrEnum):
    OK = "ok"
    VIOLATED = "violated"
    FAILED = "failed"


class FailureReason(StrEnum):
    """Why a check failed (verify's `reason`)."""

    TIMEOUT = "timeout"
    LOCK_TIMEOUT = "lock_timeout"
    YIELDED_TO_LOCK = "yielded_to_lock"
    MISSING_TABLE = "missing_table"
    MISSING_COLUMN = "missing_column"
    SQL_ERROR = "sql_error"


# Failures a retry check by check would only repeat, multiplying the wait.
_SLOW_FAILURES = (FailureReason.TIMEOUT, FailureReason.LOCK_TIMEOUT, FailureReason.YIELDED_TO_LOCK)


@dataclass(frozen=True)
class CheckResult:
    check: Check
    status: CheckStatus
    violations: int | None = None  # rows; None when the check failed
    groups: int | None = None  # duplicate checks only
    guarded_by: str | None = None  # the live constraint that answered it
    reason: FailureReason | None = None  # failed: why
    error: str | None = None  # failed: the database's message
    duration: float = 0.0  # seconds of the query that answered it (shared by a table pass)

    @property
    def is_problem(self) -> bool:
        return self.status is not CheckStatus.OK

    @property
    def guarded(self) -> bool:
        return self.guarded_by is not None

    @property
    def inspect_sql(self) -> str:
        return KIND_MODULES[self.check.kind].inspect_sql(self.check)


def _counted(check: Check, violations: int, groups: int | None, duration: float) -> CheckResult:
    status = CheckStatus.VIOLATED if violations else CheckStatus.OK
    return CheckResult(check, status, violations, groups, duration=duration)


def _failed(check: Check, reason: FailureReason, error: str, duration: float = 0.0) -> CheckResult:
    return CheckResult(check, CheckStatus.FAILED, reason=reason, error=error, duration=duration)


def _missing(check: Check, schema: Schema) -> CheckResult | None:
    """An older database without the table or a column the check names: failed, not queried."""
    if not schema.has_table(check.table):
        return _failed(check, FailureReason.MISSING_TABLE, f'table "{check.table}" does not exist')
    columns = [check.column] if isinstance(check, OrphanCheck) else []
    columns += check.columns if isinstance(check, DuplicateCheck) else []
    for column in columns:
        if not schema.has_column(check.table, column):
            return _failed(check, FailureReason.MISSING_COLUMN, f'column "{check.table}"."{column}" does not exist')
    if isinstance(check, OrphanCheck):
        ref = check.references
        if not schema.has_table(ref.table):
            return _failed(check, FailureReason.MISSING_TABLE, f'referenced table "{ref.table}" does not exist')
        if not schema.has_column(ref.table, ref.column):
            missing = f'referenced column "{ref.table}"."{ref.column}" does not exist'
            return _failed(check, FailureReason.MISSING_COLUMN, missing)
    return None


def _locked(check: Check, schema: Schema) -> CheckResult | None:
    """A table the check reads was locked when the catalog was read (a migration?): not
    queried at all - the query would only wait lock_timeout behind the lock."""
    tables = [check.table] + ([check.references.table] if isinstance(check, OrphanCheck) else [])
    for table in tables:
        if table in schema.locked:
            return _failed(check, FailureReason.LOCK_TIMEOUT, f'table "{table}" is locked by another session '
                           "(ACCESS EXCLUSIVE: a migration?); not read, retried on the next poll")
    return None


class YieldedToLock(Exception):
    """Our query was cancelled because another session (a migration?) waited on its lock."""

    def __str__(self) -> str:
        return "gave way to a session waiting for its lock (a migration?); retried on the next poll"


def _reason(error: Exception) -> FailureReason:
    if isinstance(error, YieldedToLock):
        return FailureReason.YIELDED_TO_LOCK
    if isinstance(error, psycopg.errors.QueryCanceled):
        return FailureReason.TIMEOUT
    if isinstance(error, psycopg.errors.LockNotAvailable):
        return FailureReason.LOCK_TIMEOUT
    if isinstance(error, psycopg.errors.UndefinedTable):
        return FailureReason.MISSING_TABLE
    if isinstance(error, psycopg.errors.UndefinedColumn):
        return FailureReason.MISSING_COLUMN
    return FailureReason.SQL_ERROR


def _message(error: Exception) -> str:
    diag = getattr(error, "diag", None)
    return (diag and diag.message_primary) or str(error).strip() or type(error).__name__


def _query(
    conn: psycopg.Connection, sql: str, watch: LockWatch | None, timeout: float | None = None
) -> tuple[tuple[Any, ...], float]:
    started = time.monotonic()
    if timeout is not None:
        with statement_timeout(conn, timeout):
            return _query(conn, sql, watch)[0], time.monotonic() - started
    if watch is None:
        row_ = one_row(execute_one(conn, sql))
    else:
        with watch.watching(conn) as outcome:
            try:
                row_ = one_row(execute_one(conn, sql))
            except psycopg.errors.QueryCanceled:
                if outcome.cancelled:
                    raise YieldedToLock() from None
                raise
    return row_, time.monotonic() - started


def table_pass_sql(table: str, checks: list[Check], schema: Schema) -> str:
    """One pass over `table` with one filtered count per check."""
    counts, joins = [], []
    for i, check in enumerate(checks):
        if isinstance(check, OrphanCheck):
            probe = orphan.probe(check, f"p{i}", schema)
        elif isinstance(check, RowCheck):
            probe = row.probe(check)
        else:
            raise ValueError(f"{check.name}: a {check.kind} check has a query of its own")
        counts.append(f"count(*) FILTER (WHERE {probe.condition})")
        if probe.join:
            joins.append(probe.join)
    return f"SELECT {', '.join(counts)} FROM {ident(table)} t {' '.join(joins)}".rstrip()


def _run_table(conn: psycopg.Connection, table: str, checks: list[Check], schema: Schema,
               watch: LockWatch | None, timeout: float | None = None) -> list[CheckResult]:
    try:
        counts, duration = _query(conn, table_pass_sql(table, checks, schema), watch, timeout)
    except (psycopg.Error, YieldedToLock) as e:
        if is_connection_error(e):
            raise
        reason = _reason(e)
        if len(checks) == 1 or reason in _SLOW_FAILURES:
            return [_failed(c, reason, _message(e)) for c in checks]
        return [r for c in checks for r in _run_table(conn, table, [c], schema, watch)]
    return [_counted(c, n, None, duration) for c, n in zip(checks, counts)]


def _run_own(conn: psycopg.Connection, check: Check, probe: OwnQuery, watch: LockWatch | None) -> CheckResult:
    try:
        (violations, groups), duration = _query(conn, probe.sql, watch, check.timeout)
    except (psycopg.Error, YieldedToLock) as e:
        if is_connection_error(e):
            raise
        return _failed(check, _reason(e), _message(e))
    return _counted(check, violations, groups, duration)


def run_checks(
    conn: psycopg.Connection,
    checks: Iterable[Check],
    schema: Schema,
    *,
    use_guards: bool,
    watch: LockWatch | None = None,
    always_guarded: frozenset[str] = frozenset(),
) -> list[CheckResult]:
    """Results in the order of `checks`. With `watch`, a query that blocks another
    session gives way (see LockWatch). Checks named in `always_guarded` (the derived ones:
    their guard is the very constraint they stand for) are answered from the catalog even
    when `use_guards` is off."""
    results: dict[str, CheckResult] = {}
    by_table: dict[str, list[Check]] = {}
    alone: list[Check] = []  # row and orphan checks with their own timeout
    own: list[tuple[Check, OwnQuery]] = []
    ordered = list(checks)
    for check in ordered:
        kind = KIND_MODULES[check.kind]
        missing = _missing(check, schema) or _locked(check, schema)
        if missing:
            results[check.name] = missing
            continue
        guarded_by = kind.guard(check, schema) if use_guards or check.name in always_guarded else None
        if guarded_by:
            groups = 0 if check.kind == "duplicate" else None
            results[check.name] = CheckResult(check, CheckStatus.OK, 0, groups, guarded_by)
        elif isinstance(check, DuplicateCheck):
            own.append((check, duplicate.probe(check)))
        elif check.timeout is not None:
            alone.append(check)
        else:
            by_table.setdefault(check.table, []).append(check)
    for table, table_checks in by_table.items():
        for result in _run_table(conn, table, table_checks, schema, watch):
            results[result.check.name] = result
    for check in alone:
        results[check.name] = _run_table(conn, check.table, [check], schema, watch, check.timeout)[0]
    for check, probe in own:
        results[check.name] = _run_own(conn, check, probe, watch)
    return [results[c.name] for c in ordered]
