"""One poll of one database -> an immutable PollResult.

The daemon runs it on a schedule and stores the latest result per database; `verify`
runs it once per database and renders it. Both take exactly this path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg

from exporter.backups.monitor import BackupsMonitor, BackupsResult
from exporter.checks.constraints import ConstraintResult, Expectations, NotRun, Status, plan
from exporter.checks.run import CheckResult, CheckStatus, run_checks
from exporter.config import Config, DatabaseConfig
from exporter.db import ConnectionBudget, DownReason, Database, LockWatch, down_reason, is_connection_error
from exporter.migrations.monitor import MigrationsMonitor, MigrationsResult, Part
from exporter.privileges import Privileges, WriteWarning, read_privileges
from exporter.schema.catalog import introspect
from exporter.schema.diff import DriftItem
from exporter.schema.model import Schema
from exporter.watch.deploy import DeployResult, DeployWatch, Totals, Unavailable
from exporter.watch.emergencies import EmergenciesResult, EmergencyWatch, read_tables

log = logging.getLogger(__name__)
T = TypeVar("T")


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
    backups: BackupsResult | None = None  # None when the database has no backup sources
    emergencies: EmergenciesResult | None = None  # None when the emergencies watch is off
    deploy: DeployResult | None = None  # None when the deploy watch is off
    not_run: tuple[NotRun, ...] = ()  # configured checks not run: stale, or waiting for a pending migration

    @property
    def finished_at(self) -> float:
        return self.started_at + self.duration

    def healthy(self, *, allow_pending: bool = False, backup_within: float | None = None) -> bool:
        return self.up and not self.problems(allow_pending=allow_pending, backup_within=backup_within)

    def problems(self, *, allow_pending: bool = False, backup_within: float | None = None) -> list[str]:
        """One short line per thing that is not healthy (verify's exit code and summary)."""
        if not self.up:
            return [f"database unreachable: {self.error}"]
        found = [f"check {c.check.name}: {c.status}" for c in self.checks if c.is_problem]
        found += [f"constraint {c.table}.{c.name}: {c.status}: {c.detail}" for c in self.constraints if c.is_problem]
        if self.migrations:
            found += self.migrations.problems(allow_pending=allow_pending)
        if backup_within is not None and (missing := self.missing_backup(backup_within)):
            found.append(f"backup required before migrating: {missing}")
        return found

    def missing_backup(self, within: float) -> str | None:
        """verify --require-backup-within: why migrating now would break the runbook's
        "verified backup before every migration", or None. Required while migrations are
        pending - or might be: with the history off or the folder unreadable, nobody knows."""
        history = self.migrations.history if self.migrations else None
        if history is not None and history.folder_read and not history.pending_names:
            return None
        if self.backups is None:
            return "no backup source configured (databases[].backups.dumps)"
        return self.backups.missing_backup(within, self.started_at)


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
    last full scan, the watches' memory of the previous poll and the inspected dump files
    (each poll opens and closes its own session)."""

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
        self.backups = BackupsMonitor(database.backups) if database.backups.enabled else None
        watch = database.watch
        self.emergencies = EmergencyWatch(watch.emergencies) if watch.emergencies.enabled else None
        self.deploy_watch = DeployWatch(database.migrations.dir, database.db_schema) if watch.deploy.enabled else None

    def adopt(self, previous: Poller) -> None:
        """After a reload, keep what the previous poller of this database remembered
        between polls (the comparisons and counters of the watches, inspected dumps)."""
        if self.emergencies and previous.emergencies and self.emergencies.config == previous.emergencies.config:
            self.emergencies = previous.emergencies
        if self.deploy_watch and previous.deploy_watch:
            self.deploy_watch = previous.deploy_watch
        if self.backups and previous.backups and self.backups.config == previous.backups.config:
            self.backups = previous.backups

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
                backup_facts = self.backups.read_database(conn) if self.backups else None
                tables = read_tables(conn, self.database.config.db_schema) if self.emergencies else None
                statements = self._read_statements(self.deploy_watch, conn) if self.deploy_watch else None
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
        history = migrations.history if migrations else None
        last_deploy = history.last_deploy(self.database.config.watch.deploy.batch_window) if history else None
        backups = emergencies = deploy = None
        if self.backups and backup_facts:
            # Dump files are read after the session is closed: pg_restore may take a while.
            monitor, (name, archiver) = self.backups, backup_facts
            backups = self._safely("backups", lambda: monitor.inspect(name, archiver, last_deploy))
        if self.emergencies and tables is not None:
            watch, seen, drift = self.emergencies, tables, _drift_known(migrations, schema)
            emergencies = self._safely("emergencies", lambda: watch.observe(started, seen, history, drift))
        if self.deploy_watch and statements is not None:
            deploy_watch, snapshot = self.deploy_watch, statements
            deploy = self._safely("deploy watch", lambda: deploy_watch.observe(started, last_deploy, snapshot))
        return PollResult(
            self.name, True, started, time.monotonic() - clock, full, None,
            tuple(checks), expectations.constraints, migrations, schema, privileges=privileges,
            not_run=expectations.not_run, backups=backups, emergencies=emergencies, deploy=deploy,
        )

    def _safely(self, what: str, work: Callable[[], T]) -> T | None:
        """A part computed after the session: its bug must not cost the poll's result."""
        try:
            return work()
        except Exception:  # noqa: BLE001
            log.exception("%s of %s failed unexpectedly", what, self.name)
            return None

    def _read_statements(self, watch: DeployWatch, conn: psycopg.Connection) -> dict[str, Totals] | Unavailable:
        try:
            return watch.read(conn)
        except Exception as e:  # noqa: BLE001 - statistics must not take the poll down
            if is_connection_error(e):
                raise
            log.warning("pg_stat_statements of %s could not be read: %s", self.name, str(e).strip())
            return Unavailable.ERROR

    def close(self) -> None:
        """Stop polling: a poll in flight is broken off at once (shutdown, reload)."""
        self.database.close()

    def __enter__(self) -> Poller:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _drift_known(migrations: MigrationsResult | None, schema: Schema) -> tuple[DriftItem, ...] | None:
    """This poll's drift when every source of it could be computed; None otherwise (a
    source that failed once must not make its items look new on the next poll). A table
    locked while the catalog was read has its definitions taken as expected (diff.py):
    its drift is hidden for this poll only, so the poll is no baseline either."""
    if migrations is None or not migrations.drift_assessed or schema.locked:
        return None
    if any(part in (Part.EXPECTED_SCHEMA, Part.SCHEMA_PRISMA) for part, _ in migrations.errors):
        return None
    return migrations.drift
