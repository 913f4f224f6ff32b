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
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import psycopg

from exporter.checks.run import KINDS, CheckResult
from exporter.config import DatabaseConfig
from exporter.db import is_connection_error
from exporter.migrations import shadow
from exporter.migrations.deploy import Forecast, Outcome, forecast, session_query
from exporter.migrations.history import APPLIED, MODIFIED, MigrationHistory, PrismaStatus, read_folder, read_history
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
    forecast: Forecast | None = None  # `prisma migrate status` and `deploy`, predicted
    expected_unknown: str = ""  # why there is no expected schema to compare with (drift not computed)
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
        if self.forecast:
            view, deploy = self.forecast.view, self.forecast.deploy
            # A failure after an unevaluable statement counts too: deploy fails there unless that
            # statement fails first (or happens to fix the rows).
            if deploy.outcome in (Outcome.FAILS, Outcome.REFUSED) or deploy.failure:
                found.append(deploy.summary())
            if view.status == PrismaStatus.DIVERGED:
                found.append(f"history diverged from the folder (last common migration: {view.last_common or 'null'})")
            if view.baseline_unresolved:
                found.append("baseline not resolved: the schema exists but no migration of the folder is recorded")
        return found


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

    @property
    def enabled(self) -> bool:
        f = self.features
        return f.history or f.shadow or f.snapshot or f.schema_prisma

    def parts(self) -> tuple[str, ...]:
        f = self.features
        on = {HISTORY: f.history, EXPECTED_SCHEMA: f.shadow or f.snapshot,
              SCHEMA_PRISMA_PART: f.schema_prisma, PREFLIGHT: f.preflight}
        return tuple(p for p in PARTS if on[p])

    def assess(self, conn: psycopg.Connection, live: Schema, checks: Sequence[CheckResult] = ()) -> MigrationsResult:
        errors: list[tuple[str, str]] = []

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

        f, schema_name = self.features, self.database.db_schema
        history = attempt(HISTORY, lambda: read_history(conn, self.config.dir, schema_name)) if f.history else None
        if history is not None and history.folder_problem:
            # The rows are still classified, but pending/modified/missing are unknown.
            errors.append((HISTORY, history.folder_problem))
        steps = attempt(EXPECTED_SCHEMA, self._steps) if f.shadow else None
        expected, expected_unknown = None, ""
        if steps is not None:
            expected = _applied_state(steps, history)
            if expected is None:
                expected_unknown = ("the expected schema is unknown: no migration of the folder is recorded as "
                                    "applied, so drift is not computed (resolve the baseline first)")
        elif f.snapshot:
            expected = attempt(EXPECTED_SCHEMA, lambda: shadow.load_snapshot(self.config.snapshot))

        drift: list[DriftItem] = []
        if expected is not None:
            drift += diff_schemas(expected, live, MIGRATIONS)
        if f.schema_prisma:
            prisma = attempt(SCHEMA_PRISMA_PART, lambda: self._prisma.get(self.config.schema_prisma))
            if prisma is not None:
                drift += diff_schemas(prisma, live, SCHEMA_PRISMA)
        drift = acknowledge(drift, self.config.drift.acknowledge)

        predicted = None
        if f.preflight and history is not None and history.folder is not None:
            predicted = attempt(PREFLIGHT, lambda: self._forecast(conn, history, live, checks))
        return MigrationsResult(
            history, expected, tuple(drift), predicted, expected_unknown, tuple(errors), self.parts(),
            self.config.drift.max_item_series,
        )

    def _forecast(self, conn, history: MigrationHistory, live: Schema, checks: Sequence[CheckResult]) -> Forecast:
        def known(rule):
            # The runbook's constraints are the checks' own questions: where a check of this
            # poll counted exactly the rows a pending rule rejects, the table is not scanned again.
            for result in checks:
                if result.violations is not None and not result.guarded \
                        and KINDS[result.check.kind].counts_same_rows(result.check, rule):
                    return result.violations, result.groups
            return None

        result = forecast(history.rows if history.managed else None, history.folder, live, session_query(conn),
                          schema=self.database.db_schema, known=known)
        # A deploy copying files while we read: the prediction is of a folder that no longer is.
        now = read_folder(self.config.dir)
        if [(e.name, e.sql) for e in now] != [(e.name, e.sql) for e in history.folder]:
            raise ValueError(f"migrations folder {self.config.dir} changed while it was read; predicted again next poll")
        return result

    def _steps(self) -> shadow.ExpectedSteps:
        return shadow.expected_steps(
            self.config.dir, self.config.shadow_dsn,
            shadow_database=self.config.shadow_database, connect_timeout=self.database.connect_timeout,
        )


def _applied_state(steps: shadow.ExpectedSteps, history: MigrationHistory | None) -> Schema | None:
    """The Schema the applied migrations produce, as Prisma's shadow database does: drift is
    a difference from what was applied, not from migrations still pending. None when no
    migration of the folder is applied but the database has rows of another history (a
    consolidated baseline never resolved): what it should look like is then unknown, and
    reporting its whole schema as drift would be noise."""
    if history is None or not history.managed:
        return steps.final
    applied = {i.name for i in history.items if i.state in (APPLIED, MODIFIED)}
    done = [i for i, name in enumerate(steps.names) if name in applied]
    if done:
        return steps.steps[max(done)].schema
    return None if history.rows else Schema()


def _describe(error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return f"{error.filename}: not found"
    if isinstance(error, OSError):
        return f"{error.filename or ''}: {error.strerror or error}".lstrip(": ")
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8 text"
    return str(error).strip() or type(error).__name__
