"""What one poll learns about a database's Prisma migrations: history, expected schema,
drift, and the deploy prediction.

Each part fails on its own: an unreachable shadow server or a half-copied schema.prisma
is reported as that part's error while the other parts still answer. Expensive inputs
are cached by their content - the folder replay (in shadow.py), schema.prisma's parse
(here) - so a poll with nothing changed costs a few catalog reads.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import psycopg

from exporter.checks.constraints import SchemaSources, Source
from exporter.checks.run import KIND_MODULES, CheckResult
from exporter.config import DatabaseConfig
from exporter.db import is_connection_error
from exporter.migrations import shadow
from exporter.migrations.deploy import Forecast, Known, forecast, session_query
from exporter.migrations.history import MigrationHistory, MigrationState, read_folder, read_history
from exporter.schema.diff import DriftItem, DriftSource, acknowledge, diff_schemas
from exporter.schema.model import Constraint, Index, Schema
from exporter.schema.prisma import parse_prisma_schema, to_schema

log = logging.getLogger(__name__)
T = TypeVar("T")



class Part(StrEnum):
    """Parts of the assessment, as reported in errors (and the `part` label of its metric)."""

    HISTORY = "history"
    EXPECTED_SCHEMA = "expected_schema"
    SCHEMA_PRISMA = "schema_prisma"
    PREFLIGHT = "preflight"


@dataclass(frozen=True)
class MigrationsResult:
    history: MigrationHistory | None = None
    expected: Schema | None = None  # what the applied migrations should have produced
    drift: tuple[DriftItem, ...] = ()
    forecast: Forecast | None = None  # `prisma migrate status` and `deploy`, predicted
    expected_unknown: str = ""  # why there is no expected schema to compare with (drift not computed)
    errors: tuple[tuple[Part, str], ...] = ()  # (part, message)
    parts: tuple[Part, ...] = ()  # parts this database has switched on
    max_drift_series: int = 200  # cap on per-item drift series (config drift.max_item_series)

    @property
    def drift_assessed(self) -> bool:
        """Drift was looked for (an expected schema, or schema.prisma switched on): "no
        drift" and the drift counts at 0 mean something."""
        return self.expected is not None or Part.SCHEMA_PRISMA in self.parts

    def problems(self, *, allow_pending: bool = False) -> list[str]:
        """One short line per thing that is not healthy."""
        found = [f"migrations {part}: {message}" for part, message in self.errors]
        if self.history:
            for state in self.history.problem_states(allow_pending=allow_pending):
                names = ", ".join(i.name for i in self.history.by_state(state))
                found.append(f"migrations {state}: {names}")
        found += [f"drift {d.source} {d.kind} {d.object}" for d in self.drift if d.is_problem]
        if self.forecast:
            found += self.forecast.problems()
        return found


@dataclass(frozen=True)
class Inputs:
    """What a poll reads before its checks run: the history and the expected schemas."""

    history: MigrationHistory | None
    steps: shadow.ExpectedSteps | None
    expected: Schema | None  # the applied migrations' schema, or the snapshot
    source: Source | None  # MIGRATIONS or SNAPSHOT
    prisma: Schema | None
    errors: tuple[tuple[Part, str], ...]

    def pending_steps(self) -> tuple[shadow.Step, ...]:
        """The folder's steps not applied yet (none without history or folder)."""
        if self.history is None or self.steps is None or not self.history.pending_names:
            return ()
        return tuple(s for s in self.steps.steps if s.migration in self.history.pending_names)

    def sources(self) -> SchemaSources | None:
        """For exporter.checks.constraints: what the app declares now, what after the
        pending migrations, and every schema known (migrations > snapshot > schema.prisma)."""
        if self.expected is not None:
            declared, source = self.expected, self.source or Source.MIGRATIONS
        elif self.prisma is not None:
            declared, source = self.prisma, Source.SCHEMA_PRISMA
        else:
            return None
        pending = self.pending_steps()
        final = self.steps.final if pending and self.steps is not None else None
        known = tuple(s for s in (self.expected, final, self.prisma) if s is not None)
        return SchemaSources(declared, source, final=final, pending=tuple((s.migration, s.schema) for s in pending),
                             known=known)


class _ContentCache(Generic[T]):
    """The last value derived from a file, recomputed when the file's bytes change."""

    def __init__(self, derive: Callable[[bytes], T]):
        self._derive = derive
        self._key: str | None = None
        self._value: T | None = None

    def get(self, path: Path) -> T:
        data = path.read_bytes()
        key = hashlib.sha256(data).hexdigest()
        if self._value is None or key != self._key:
            self._value, self._key = self._derive(data), key
        return self._value


def _prisma_schema(data: bytes) -> Schema:
    return to_schema(parse_prisma_schema(data.decode("utf-8")))


class _Attempts:
    """Runs each part of an assessment, keeping a part's failure as its error so that
    one part failing does not hide the others."""

    def __init__(self, database: str):
        self.database = database
        self.errors: list[tuple[Part, str]] = []

    def __call__(self, part: Part, work: Callable[[], T]) -> T | None:
        try:
            return work()
        except Exception as e:  # noqa: BLE001 - one part failing must not hide the others
            if is_connection_error(e) and part in (Part.HISTORY, Part.PREFLIGHT):
                raise  # the monitored database itself is gone: the poll reports it down
            if not isinstance(e, (OSError, ValueError, shadow.ShadowError, psycopg.Error)):
                log.exception("migrations %s of %s failed unexpectedly", part, self.database)
            self.errors.append((part, _describe(e)))
            return None


class MigrationsMonitor:
    def __init__(self, database: DatabaseConfig):
        self.database = database
        self.config = database.migrations
        self.features = self.config.features
        self._prisma = _ContentCache(_prisma_schema)
        self._logged: dict[Part, str] = {}

    @property
    def enabled(self) -> bool:
        f = self.features
        return f.history or f.shadow or f.snapshot or f.schema_prisma

    def parts(self) -> tuple[Part, ...]:
        f = self.features
        on = {Part.HISTORY: f.history, Part.EXPECTED_SCHEMA: f.shadow or f.snapshot,
              Part.SCHEMA_PRISMA: f.schema_prisma, Part.PREFLIGHT: f.preflight}
        return tuple(p for p in Part if on[p])

    def prepare(self, conn: psycopg.Connection) -> Inputs:
        """History, the expected schema and schema.prisma: what the checks need to know
        before they run (exporter.checks.constraints derives expectations from them)."""
        attempt = _Attempts(self.database.name)
        errors = attempt.errors
        f, schema_name = self.features, self.database.db_schema
        cfg = self.config
        history = attempt(Part.HISTORY, lambda: read_history(conn, cfg.dir, schema_name)) if f.history else None
        if history is not None and history.folder_problem:
            # The rows are still classified, but pending/modified/missing are unknown.
            errors.append((Part.HISTORY, history.folder_problem))
        steps = None
        if cfg.dir is not None and cfg.shadow_dsn is not None:  # features.shadow
            folder, shadow_dsn = cfg.dir, cfg.shadow_dsn
            steps = attempt(Part.EXPECTED_SCHEMA, lambda: self._steps(folder, shadow_dsn))
        expected, source = None, None
        if steps is not None:
            # None when no migration of the folder is recorded as applied: see expected_unknown.
            expected, source = _applied_state(steps, history), Source.MIGRATIONS
        elif (snapshot := cfg.snapshot) is not None:  # features.snapshot
            expected = attempt(Part.EXPECTED_SCHEMA, lambda: shadow.load_snapshot(snapshot))
            source = Source.SNAPSHOT
        prisma = None
        if (path := cfg.schema_prisma) is not None:  # features.schema_prisma
            prisma = attempt(Part.SCHEMA_PRISMA, lambda: self._prisma.get(path))
        self._log(errors)
        return Inputs(history, steps, expected, source, prisma, tuple(errors))

    def assess(self, conn: psycopg.Connection, live: Schema, checks: Sequence[CheckResult] = (),
               inputs: Inputs | None = None) -> MigrationsResult:
        inputs = inputs or self.prepare(conn)
        attempt = _Attempts(self.database.name)
        attempt.errors.extend(inputs.errors)
        history, steps, expected = inputs.history, inputs.steps, inputs.expected
        drift = self._drift(live, inputs)
        expected_unknown = ""
        if steps is not None and expected is None:
            expected_unknown = ("the expected schema is unknown: no migration of the folder is recorded as "
                                "applied, so drift is not computed (resolve the baseline first)")
        predicted = None
        if self.features.preflight and history is not None and history.folder is not None:
            known_history = history
            predicted = attempt(Part.PREFLIGHT, lambda: self._forecast(conn, known_history, live, checks))
        return MigrationsResult(
            history, expected, tuple(drift), predicted, expected_unknown, tuple(attempt.errors), self.parts(),
            self.config.drift.max_item_series,
        )

    def _drift(self, live: Schema, inputs: Inputs) -> list[DriftItem]:
        drift: list[DriftItem] = []
        if inputs.expected is not None:
            drift += diff_schemas(inputs.expected, live, DriftSource.MIGRATIONS)
        if inputs.prisma is not None:
            prisma_drift = diff_schemas(inputs.prisma, live, DriftSource.SCHEMA_PRISMA)
            if inputs.pending_steps():
                # What the pending migrations will change is not drift: they are reported.
                assert inputs.steps is not None and inputs.expected is not None
                source = DriftSource.SCHEMA_PRISMA
                after = {(d.kind, d.object) for d in diff_schemas(inputs.prisma, inputs.steps.final, source)}
                before = {(d.kind, d.object) for d in diff_schemas(inputs.prisma, inputs.expected, source)}
                prisma_drift = [d for d in prisma_drift if (d.kind, d.object) in after
                                or (d.kind, d.object) not in before]
            drift += prisma_drift
        return acknowledge(drift, self.config.drift.acknowledge)

    def _log(self, errors: list[tuple[Part, str]]) -> None:
        """Each input problem is logged once when it appears or changes (a poll a minute
        must not repeat it); the metric and verify carry it on every poll."""
        current = dict(errors)
        for part, message in current.items():
            if self._logged.get(part) != message:
                log.warning("migrations %s of %s: %s (the other checks still run)", part, self.database.name, message)
        self._logged = current

    def _forecast(self, conn: psycopg.Connection, history: MigrationHistory, live: Schema,
                  checks: Sequence[CheckResult]) -> Forecast:
        folder = history.folder or ()
        result = forecast(history.rows if history.managed else None, folder, live, session_query(conn),
                          schema=self.database.db_schema, known=_known_from(checks))
        # A deploy copying files while we read: the prediction is of a folder that no longer is.
        if self.config.dir is not None:
            now = read_folder(self.config.dir)
            if [(e.name, e.sql) for e in now] != [(e.name, e.sql) for e in folder]:
                raise ValueError(f"migrations folder {self.config.dir} changed while it was read; "
                                 "predicted again next poll")
        return result

    def _steps(self, folder: Path, shadow_dsn: str) -> shadow.ExpectedSteps:
        return shadow.expected_steps(
            folder, shadow_dsn,
            shadow_database=self.config.shadow_database, connect_timeout=self.database.connect_timeout,
        )


def _known_from(checks: Sequence[CheckResult]) -> Known:
    """The runbook's constraints are the checks' own questions: where a check of this poll
    counted exactly the rows a pending rule rejects, the table is not scanned again."""

    def known(rule: Constraint | Index) -> tuple[int, int | None] | None:
        for result in checks:
            kind = KIND_MODULES[result.check.kind]
            if result.violations is not None and not result.guarded and kind.counts_same_rows(result.check, rule):
                return result.violations, result.groups
        return None

    return known


def _applied_state(steps: shadow.ExpectedSteps, history: MigrationHistory | None) -> Schema | None:
    """The Schema the applied migrations produce, as Prisma's shadow database does: drift is
    a difference from what was applied, not from migrations still pending. None when no
    migration of the folder is applied but the database has rows of another history (a
    consolidated baseline never resolved): what it should look like is then unknown, and
    reporting its whole schema as drift would be noise."""
    if history is None or not history.managed:
        return steps.final
    applied = {i.name for i in history.items if i.state in (MigrationState.APPLIED, MigrationState.MODIFIED)}
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
