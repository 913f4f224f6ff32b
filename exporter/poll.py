"""One poll of one database -> an immutable PollResult.

The daemon runs it on a schedule and stores the latest result per database; `verify`
runs it once per database and renders it. Both take exactly this path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from exporter.checks.constraints import ConstraintResult, Expectations, NotRun, Status, plan
from exporter.checks.run import CheckResult, CheckStatus, run_checks
from exporter.config import Config, DatabaseConfig
from exporter.db import ConnectionBudget, DownReason, Database, LockWatch, down_reason, is_connection_error
from exporter.migrations.monitor import MigrationsMonitor, MigrationsResult
from exporter.privileges import Privileges, WriteWarning, read_privileges
from exporter.schema.catalog import introspect
from exporter.schema.model import Schema

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PollResult:
    database: str
    up: bool
    started_at: float  # unix time
    duration: float  # seconds
    full_scan: bool = False  # guards were ignored: every table was read
    error: str | None = None  # why the database is down
    checks: tuple[CheckResult, ...] = ()
    constraints: tuple[ConstraintResult, ...] = ()
    migrations: MigrationsResult | None = None  # None when the database has no migrations feature
    schema: Schema | None = field(default=None, repr=False, compare=False)
    down_reason: DownReason | None = None  # why the database is down
    privileges: Privileges | None = None  # whether the exporter's role could write (exporter.privileges)
    not_run: tuple[NotRun, ...] = ()  # configured checks not run: stale, or waiting for a pending migration

    @property
    def finished_at(self) -> float:
        return self.started_at + self.duration

    def healthy(self, *, allow_pending: bool = False) -> bool:
        return self.up and not self.problems(allow_pending=allow_pending)

    def problems(self, *, allow_pending: bool = False) -> list[str]:
        """One short line per thing that is not healthy (verify's exit code and summary)."""
        if not self.up:
            return [f"database unreachable: {self.error}"]
        found = [f"check {c.check.name}: {c.status}" for c in self.checks if c.is_problem]
        found += [f"constraint {c.table}.{c.name}: {c.status}: {c.detail}" for c in self.constraints if c.is_problem]
        if self.migrations:
            found += self.migrations.problems(allow_pending=allow_pending)
        return found


class CheckLog:
    """Logs each check's failures and status changes once, with the reason: a check that
    starts failing (or fails for a new reason) is a warning, any other change of status
    is info; a check that stays as it was is not logged again (debug only)."""

    def __init__(self, database: str):
        self.database = database
        self._last: dict[str, tuple[str, str | None]] = {}

    def observe(self, results: Sequence[CheckResult]) -> None:
        for result in results:
            name, now = result.check.name, (result.status, result.reason)
            before = self._last.get(name)
            self._last[name] = now
            if now == before:
                log.debug("check %s on %s: still %s", name, self.database, result.status)
            elif result.status is CheckStatus.FAILED:
                log.warning("check %s on %s failed (%s): %s", name, self.database, result.reason, result.error)
            elif before is not None or result.status is CheckStatus.VIOLATED:
                log.info("check %s on %s: %s -> %s (%s rows)", name, self.database,
                         before[0] if before else "unknown", result.status, result.violations)


class ConfigWarning:
    """Logs stale config and missing constraints once when they appear or change (the metric
    and verify carry them on every poll)."""

    def __init__(self, database: str):
        self.database = database
        self._seen: frozenset[str] = frozenset()

    def observe(self, expectations: Expectations) -> None:
        lines = {f"check {n.check.name} not run ({n.status}): {n.why}" for n in expectations.not_run}
        lines |= {f"constraint {c.table}.{c.name} ({c.source}): {c.status}: {c.detail}"
                  for c in expectations.constraints if c.status == Status.STALE or c.is_problem}
        for line in sorted(lines - self._seen):
            log.warning("database %s: %s", self.database, line)
        self._seen = frozenset(lines)


class Poller:
    """Polls one database. Keeps only what must survive between polls: the time of the
    last full scan (each poll opens and closes its own session)."""

    def __init__(self, config: Config, database: DatabaseConfig, budget: ConnectionBudget | None = None):
        self.config = config
        self.database = Database(database, budget)
        self.lock_watch = LockWatch(self.database, database.yield_to_locks_after)
        self.checks = config.checks_for(database)
        self.last_full_scan: float | None = None
        self.write_warning = WriteWarning(database.name)
        self.check_log = CheckLog(database.name)
        self.config_warning = ConfigWarning(database.name)
        monitor = MigrationsMonitor(database)
        self.migrations = monitor if monitor.enabled else None

    @property
    def name(self) -> str:
        return self.database.name

    def full_scan_due(self, now: float) -> bool:
        interval = self.database.config.full_scan_interval
        return self.last_full_scan is None or now - self.last_full_scan >= interval

    def poll(self, *, full_scan: bool | None = None) -> PollResult:
        started, clock = time.time(), time.monotonic()
        full = self.full_scan_due(started) if full_scan is None else full_scan
        try:
            with self.database.connection() as conn:
                schema = introspect(conn, self.database.config.db_schema)
                inputs = self.migrations.prepare(conn) if self.migrations else None
                expectations = plan(self.checks, self.config.constraints, schema, inputs.sources() if inputs else None)
                checks = run_checks(conn, expectations.checks, schema, use_guards=not full, watch=self.lock_watch,
                                    always_guarded=expectations.derived)
                migrations = self.migrations.assess(conn, schema, checks, inputs) if self.migrations else None
                privileges = read_privileges(conn, self.database.config.db_schema)
        except Exception as e:  # noqa: BLE001 - a poll must never kill the scheduler
            reason = down_reason(e)
            if self.database.closed:
                log.debug("poll of %s broken off (stop or reload): %s", self.name, e)
            elif reason == DownReason.ERROR and not is_connection_error(e):
                log.exception("poll of %s failed unexpectedly", self.name)
            else:
                log.warning("database %s is down (%s): %s", self.name, reason, str(e).strip())
            return PollResult(self.name, False, started, time.monotonic() - clock, full, str(e).strip(),
                              down_reason=reason)
        if full:
            self.last_full_scan = started
        self.write_warning.observe(privileges)
        self.check_log.observe(checks)
        self.config_warning.observe(expectations)
        return PollResult(
            self.name, True, started, time.monotonic() - clock, full, None,
            tuple(checks), expectations.constraints, migrations, schema, privileges=privileges,
            not_run=expectations.not_run,
        )

    def close(self) -> None:
        """Stop polling: a poll in flight is broken off at once (shutdown, reload)."""
        self.database.close()

    def __enter__(self) -> Poller:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
