"""What one poll learns about a database's Prisma migrations: history, expected schema,
drift, and the pending-migration preflight.

Each part fails on its own: an unreachable shadow server or a half-copied schema.prisma
is reported as that part's error while the other parts still answer. Expensive inputs
are cached by their content - the folder replay (in shadow.py), schema.prisma's parse
(here) - so a poll with nothing changed costs a few catalog reads.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import psycopg

from exporter.checks.constraints import SchemaSources
from exporter.checks.run import KINDS, CheckResult
from exporter.config import DatabaseConfig
from exporter.db import is_connection_error
from exporter.migrations import shadow
from exporter.migrations.history import APPLIED, MODIFIED, MigrationHistory, read_history
from exporter.migrations.preflight import BLOCKED, OK, PlannedCount, PreflightItem, plan_preflight, run_planned
from exporter.schema.diff import MIGRATIONS, SCHEMA_PRISMA, DriftItem, acknowledge, diff_schemas
from exporter.schema.model import Schema
from exporter.schema.prisma import parse_prisma_schema, to_schema

log = logging.getLogger(__name__)

# Parts of the assessment, as reported in errors (and the `part` label of its metric).
HISTORY, EXPECTED_SCHEMA, SCHEMA_PRISMA_PART, PREFLIGHT = "history", "expected_schema", "schema_prisma", "preflight"
PARTS = (HISTORY, EXPECTED_SCHEMA, SCHEMA_PRISMA_PART, PREFLIGHT)


@dataclass(frozen=True)
class MigrationsResult:
    history: MigrationHistory | None = None
    expected: Schema | None = None  # what the applied migrations should have produced
    drift: tuple[DriftItem, ...] = ()
    preflight: tuple[PreflightItem, ...] = ()
    errors: tuple[tuple[str, str], ...] = ()  # (part, message)
    parts: tuple[str, ...] = ()  # parts this database has switched on
    max_drift_series: int = 200  # cap on per-item drift series (config drift.max_item_series)

    def problems(self, *, allow_pending: bool = False) -> list[str]:
        found = [f"migrations {part}: {message}" for part, message in self.errors]
        if self.history:
            counts = self.history.counts
            for state in ("failed", "modified", "missing_from_folder") + (() if allow_pending else ("pending",)):
                if counts.get(state):
                    names = ", ".join(i.name for i in self.history.by_state(state))
                    found.append(f"migrations {state}: {names}")
        found += [f"drift {d.source} {d.kind} {d.object}" for d in self.drift if not d.acknowledged]
        found += [f"preflight {p.migration}: {p.table}.{p.constraint} blocked by {p.blocked_rows} rows"
                  for p in self.preflight if p.status == BLOCKED]
        return found


SNAPSHOT = "snapshot"  # the source of an expected schema loaded from a snapshot file


@dataclass(frozen=True)
class Inputs:
    """What a poll reads before its checks run: the history and the expected schemas."""

    history: MigrationHistory | None
    steps: shadow.ExpectedSteps | None
    expected: Schema | None  # the applied migrations' schema, or the snapshot
    source: str | None  # MIGRATIONS or SNAPSHOT
    prisma: Schema | None
    errors: tuple[tuple[str, str], ...]

    def sources(self) -> SchemaSources | None:
        """For exporter.checks.constraints: what the app declares now, what after the
        pending migrations, and every schema known (migrations > snapshot > schema.prisma)."""
        declared, source = (self.expected, self.source) if self.expected is not None else (self.prisma, SCHEMA_PRISMA)
        if declared is None:
            return None
        pending = self.history is not None and self.history.pending_names and self.steps is not None
        final = self.steps.final if pending else None
        known = tuple(s for s in (self.expected, final, self.prisma) if s is not None)
        steps = tuple((s.migration, s.schema) for s in self.steps.steps
                      if s.migration in self.history.pending_names) if pending else ()
        return SchemaSources(declared, source, final=final, pending=steps, known=known)


class _ContentCache:
    """The last value derived from a file, recomputed when the file's bytes change."""

    def __init__(self, derive):
        self._derive = derive
        self._key: str | None = None
        self._value = None

    def get(self, path: Path):
        data = path.read_bytes()
        key = hashlib.sha256(data).hexdigest()
        if key != self._key:
            self._value, self._key = self._derive(data), key
        return self._value


def _prisma_schema(data: bytes) -> Schema:
    return to_schema(parse_prisma_schema(data.decode("utf-8")))


class MigrationsMonitor:
    def __init__(self, database: DatabaseConfig):
        self.database = database
        self.config = database.migrations
        self.features = self.config.features
        self._prisma = _ContentCache(_prisma_schema)
        self._logged: dict[str, str] = {}

    @property
    def enabled(self) -> bool:
        f = self.features
        return f.history or f.shadow or f.snapshot or f.schema_prisma

    def parts(self) -> tuple[str, ...]:
        f = self.features
        on = {HISTORY: f.history, EXPECTED_SCHEMA: f.shadow or f.snapshot,
              SCHEMA_PRISMA_PART: f.schema_prisma, PREFLIGHT: f.preflight}
        return tuple(p for p in PARTS if on[p])

    def prepare(self, conn: psycopg.Connection) -> "Inputs":
        """History, the expected schema and schema.prisma: what the checks need to know
        before they run (exporter.checks.constraints derives expectations from them)."""
        errors: list[tuple[str, str]] = []
        attempt = self._attempt(errors)
        f, schema_name = self.features, self.database.db_schema
        history = attempt(HISTORY, lambda: read_history(conn, self.config.dir, schema_name)) if f.history else None
        if history is not None and history.folder_problem:
            # The rows are still classified, but pending/modified/missing are unknown.
            errors.append((HISTORY, history.folder_problem))
        steps = attempt(EXPECTED_SCHEMA, self._steps) if f.shadow else None
        expected = source = None
        if steps is not None:
            expected, source = _applied_state(steps, history), MIGRATIONS
        elif f.snapshot:
            expected = attempt(EXPECTED_SCHEMA, lambda: shadow.load_snapshot(self.config.snapshot))
            source = SNAPSHOT if expected is not None else None
        prisma = attempt(SCHEMA_PRISMA_PART, lambda: self._prisma.get(self.config.schema_prisma)) \
            if f.schema_prisma else None
        self._log(errors)
        return Inputs(history, steps, expected, source, prisma, tuple(errors))

    def assess(self, conn: psycopg.Connection, live: Schema, checks: Sequence[CheckResult] = (),
               inputs: "Inputs | None" = None) -> MigrationsResult:
        inputs = inputs or self.prepare(conn)
        errors = list(inputs.errors)
        attempt = self._attempt(errors)
        history, steps, expected = inputs.history, inputs.steps, inputs.expected

        drift: list[DriftItem] = []
        if expected is not None:
            drift += diff_schemas(expected, live, MIGRATIONS)
        if inputs.prisma is not None:
            prisma_drift = diff_schemas(inputs.prisma, live, SCHEMA_PRISMA)
            if steps is not None and history is not None and history.pending_names:
                # What the pending migrations will change is not drift: they are reported.
                after = {(d.kind, d.object) for d in diff_schemas(inputs.prisma, steps.final, SCHEMA_PRISMA)}
                before = {(d.kind, d.object) for d in diff_schemas(inputs.prisma, expected, SCHEMA_PRISMA)}
                prisma_drift = [d for d in prisma_drift if (d.kind, d.object) in after
                                or (d.kind, d.object) not in before]
            drift += prisma_drift
        drift = acknowledge(drift, self.config.drift.acknowledge)

        checked: tuple[PreflightItem, ...] = ()
        if steps is not None and history is not None and history.pending_names:
            pending = [n for n in history.pending_names if n in steps.names]
            schema_name = self.database.db_schema
            checked = attempt(PREFLIGHT, lambda: _preflight(conn, live, steps, pending, schema_name, checks)) or ()
        return MigrationsResult(
            history, expected, tuple(drift), tuple(checked), tuple(errors), self.parts(),
            self.config.drift.max_item_series,
        )

    def _attempt(self, errors: list[tuple[str, str]]):
        def attempt(part: str, work):
            try:
                return work()
            except Exception as e:  # noqa: BLE001 - one part failing must not hide the others
                if is_connection_error(e) and part in (HISTORY, PREFLIGHT):
                    raise  # the monitored database itself is gone: the poll reports it down
                if not isinstance(e, (OSError, ValueError, shadow.ShadowError, psycopg.Error)):
                    log.exception("migrations %s of %s failed unexpectedly", part, self.database.name)
                errors.append((part, _describe(e)))
                return None
        return attempt

    def _log(self, errors: list[tuple[str, str]]) -> None:
        """Each input problem is logged once when it appears or changes (a poll a minute
        must not repeat it); the metric and verify carry it on every poll."""
        current = dict(errors)
        for part, message in current.items():
            if self._logged.get(part) != message:
                log.warning("migrations %s of %s: %s (the other checks still run)", part, self.database.name, message)
        self._logged = current

    def _steps(self) -> shadow.ExpectedSteps:
        return shadow.expected_steps(
            self.config.dir, self.config.shadow_dsn,
            shadow_database=self.config.shadow_database, connect_timeout=self.database.connect_timeout,
        )


def _preflight(conn, live: Schema, steps, pending, schema: str, checks: Sequence[CheckResult]) -> tuple[PreflightItem, ...]:
    """The preflight, where a check of this same poll already counted the same rows (the
    runbook's constraints are the checks' own questions) taking its number instead of
    scanning the table again."""
    items = []
    for plan in plan_preflight(live, steps, pending, schema=schema):
        answer = _answered_by_check(plan, checks)
        items.append(answer or run_planned(conn, [plan])[0])
    return tuple(items)


def _answered_by_check(plan: PlannedCount, checks: Sequence[CheckResult]) -> PreflightItem | None:
    if plan.count_sql is None or plan.addition is None or plan.addition.rule is None:
        return None
    for result in checks:
        if result.violations is not None and KINDS[result.check.kind].counts_same_rows(result.check, plan.addition.rule):
            return replace(
                plan.item, status=BLOCKED if result.violations else OK, blocked_rows=result.violations,
                duplicate_groups=result.groups, reason=f"counted by check {result.check.name}",
            )
    return None


def _applied_state(steps: shadow.ExpectedSteps, history: MigrationHistory | None) -> Schema:
    """The Schema the applied migrations produce, as Prisma's shadow database does: drift is
    a difference from what was applied, not from migrations still pending."""
    if history is None or not history.managed:
        return steps.final
    applied = {i.name for i in history.items if i.state in (APPLIED, MODIFIED)}
    done = [i for i, name in enumerate(steps.names) if name in applied]
    return steps.steps[max(done)].schema if done else Schema()


def _describe(error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return f"{error.filename}: not found"
    if isinstance(error, OSError):
        return f"{error.filename or ''}: {error.strerror or error}".lstrip(": ")
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8 text"
    return str(error).strip() or type(error).__name__
