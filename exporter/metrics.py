"""The poll metric contract, in one file: PollResult -> Prometheus metric families.

Families are built once per completed poll and kept with it (`Store`), so a scrape only
serialises what is there: it never waits for a poll and never touches a database.
Every name and label here is documented in docs/metrics.md; alerts and dashboards build
on them - add, never rename.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.migrations.deploy import Forecast, Outcome
from exporter.migrations.history import APPLIED, PrismaStatus
from exporter.migrations.monitor import MigrationsResult
from exporter.poll import PollResult
from exporter.schema.diff import KINDS as DRIFT_KINDS, MIGRATIONS, SCHEMA_PRISMA

CACHED = " Cached: from the last completed poll (see venzory_db_last_poll_timestamp_seconds)."


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc + CACHED, labels=labels)


def families_for(result: PollResult) -> list[Metric]:
    db = result.database
    up = _gauge("venzory_db_up", "1 if the last poll reached the database and read its catalog, else 0.", ["database"])
    up.add_metric([db], 1 if result.up else 0)
    last = _gauge("venzory_db_last_poll_timestamp_seconds", "Unix time the last poll finished.", ["database"])
    last.add_metric([db], result.finished_at)
    duration = _gauge("venzory_db_poll_duration_seconds", "Wall time of the last poll.", ["database"])
    duration.add_metric([db], result.duration)
    full = _gauge("venzory_db_poll_full_scan", "1 if the last poll read every table, ignoring guards.", ["database"])
    full.add_metric([db], 1 if result.full_scan else 0)
    families = [up, last, duration, full]
    if not result.up:
        reason = _gauge("venzory_db_down_reason", "1 for the reason the last poll found the database down "
                        "(absent while it is up).", ["database", "reason"])
        reason.add_metric([db, result.down_reason or "error"], 1)
        # No stale values: while the database is down its data series are absent,
        # and the check and constraint series say nothing rather than something old.
        return families + [reason]

    violations = _gauge(
        "venzory_db_check_violations",
        "Rows violating the check (for duplicate checks: rows involved in duplicate groups).",
        ["database", "check", "table", "category", "severity"],
    )
    groups = _gauge("venzory_db_duplicate_groups", "Groups of duplicate rows.", ["database", "check", "table"])
    success = _gauge("venzory_db_check_success", "1 if the check ran, 0 if it failed.", ["database", "check"])
    check_duration = _gauge(
        "venzory_db_check_duration_seconds",
        "Duration of the query that answered the check (checks of one table share one query).",
        ["database", "check"],
    )
    guarded = _gauge(
        "venzory_db_check_guarded",
        "1 if the check was answered from the catalog: a validated constraint makes violations impossible.",
        ["database", "check"],
    )
    for r in result.checks:
        c = r.check
        success.add_metric([db, c.name], 0 if r.status == "failed" else 1)
        check_duration.add_metric([db, c.name], r.duration)
        guarded.add_metric([db, c.name], 1 if r.guarded else 0)
        if r.violations is not None:
            violations.add_metric([db, c.name, c.table, c.category, c.severity], r.violations)
        if r.groups is not None:
            groups.add_metric([db, c.name, c.table], r.groups)

    labels = ["database", "table", "constraint", "kind", "severity"]
    present = _gauge("venzory_db_constraint_present", "1 if the expected constraint or index exists.", labels)
    valid = _gauge("venzory_db_constraint_valid", "1 if the expected constraint exists and is validated.", labels)
    for c in result.constraints:
        values = [db, c.table, c.name, c.kind, "critical" if c.critical else "warning"]
        present.add_metric(values, 1 if c.present else 0)
        valid.add_metric(values, 1 if c.valid else 0)
    families += [violations, groups, success, check_duration, guarded, present, valid]
    if result.privileges is not None:
        can_write = _gauge("venzory_db_role_can_write",
                           "1 if the exporter's role could write to the monitored schema (superuser, CREATE on it, "
                           "or INSERT/UPDATE/DELETE/TRUNCATE on a table of it), else 0.", ["database"])
        can_write.add_metric([db], 1 if result.privileges.can_write else 0)
        families.append(can_write)
    if result.migrations:
        families += _migration_families(db, result.migrations)
    return families


def _migration_families(db: str, m: MigrationsResult) -> list[Metric]:
    ok = _gauge(
        "venzory_db_migrations_part_success",
        "1 if this part of the migrations assessment could be computed (history, expected_schema, "
        "schema_prisma, preflight (the deploy prediction)), 0 if its input was unreadable or unreachable.",
        ["database", "part"],
    )
    failed_parts = {part for part, _ in m.errors}
    for part in m.parts:
        ok.add_metric([db, part], 0 if part in failed_parts else 1)
    families = [ok]
    if m.history:
        states = _gauge("venzory_db_migrations", "Migrations per state.", ["database", "state"])
        for state, count in m.history.counts.items():
            if count is not None:  # unknown while the folder is unreadable: absent, not 0
                states.add_metric([db, state], count)
        info = _gauge("venzory_db_migration_info", "1 for each migration that is not plainly applied.",
                      ["database", "migration", "state"])
        for item in m.history.items:
            if item.state != APPLIED:
                info.add_metric([db, item.name, item.state], 1)
        families += [states, info]
        if m.history.last_finished_at:
            last = _gauge("venzory_db_last_migration_finished_timestamp_seconds",
                          "Unix time the most recent migration finished.", ["database"])
            last.add_metric([db], m.history.last_finished_at.timestamp())
            families.append(last)
    if m.forecast:
        families += _forecast_families(db, m.forecast)
    if m.expected is not None or "schema_prisma" in m.parts:
        families += _drift_families(db, m.drift, m.max_drift_series)
    return families


DEPLOY_OUTCOMES = tuple(o.value for o in (Outcome.PASSES, Outcome.FAILS, Outcome.CANNOT_EVALUATE, Outcome.REFUSED))


def _forecast_families(db: str, f: Forecast) -> list[Metric]:
    deploy = f.deploy
    outcome = _gauge("venzory_db_deploy_prediction",
                     "1 for what `prisma migrate deploy` of the pending migrations is predicted to do (passes, fails, "
                     "cannot_evaluate, refused), 0 for the others; from the last poll.", ["database", "outcome"])
    for value in DEPLOY_OUTCOMES:
        outcome.add_metric([db, value], 1 if deploy.outcome.value == value else 0)
    status = _gauge("venzory_db_prisma_status",
                    "1 for what `prisma migrate status` says of the history (up_to_date, pending, failed, diverged).",
                    ["database", "status"])
    for value in PrismaStatus:
        status.add_metric([db, value.value], 1 if f.view.status == value else 0)
    baseline = _gauge("venzory_db_migration_baseline_unresolved",
                      "1 if the schema exists but no migration of the folder is recorded as applied.", ["database"])
    baseline.add_metric([db], 1 if f.view.baseline_unresolved else 0)
    failing = _gauge("venzory_db_deploy_failing_rows",
                     "Rows that make the first failing statement of the deploy fail (0 when the failure is not about "
                     "rows); present only while the deploy is predicted to fail.",
                     ["database", "migration", "statement", "table"])
    if deploy.failure:
        name, s = deploy.failure
        failing.add_metric([db, name, str(s.number), s.table], s.offending_rows or 0)
    effects = _gauge("venzory_db_deploy_rows",
                     "What the deploy will do to the data, per pending migration: rows_updated, rows_deleted, "
                     "rows_lost (DROP TABLE), values_lost (non-null values of a DROP COLUMN).",
                     ["database", "migration", "effect"])
    locks = _gauge("venzory_db_deploy_lock_rows",
                   "Rows a statement of a pending migration scans or rewrites while it holds its lock.",
                   ["database", "migration", "statement", "table", "lock"])
    for m in deploy.migrations:
        if m.outcome == Outcome.NOT_REACHED:
            continue
        for effect, n in m.effects.items():
            effects.add_metric([db, m.name, effect], n)
        for s in m.statements:
            if s.lock and s.rows_scanned is not None:
                locks.add_metric([db, m.name, str(s.number), s.table, s.lock], s.rows_scanned)
    return [outcome, status, baseline, failing, effects, locks]


def _drift_families(db: str, drift, cap: int) -> list[Metric]:
    counts = _gauge("venzory_db_schema_drift_items", "Schema drift items.", ["database", "source", "kind", "acknowledged"])
    items = _gauge("venzory_db_schema_drift_item",
                   "1 per schema drift item (capped by drift.max_item_series; the counts are never capped).",
                   ["database", "source", "kind", "object", "acknowledged"])
    tally: dict[tuple[str, str, str], int] = {}
    for source in (MIGRATIONS, SCHEMA_PRISMA):
        for kind in DRIFT_KINDS:
            for acknowledged in ("false", "true"):
                tally[(source, kind, acknowledged)] = 0
    for i, d in enumerate(drift):
        acknowledged = "true" if d.acknowledged else "false"
        tally[(d.source, d.kind, acknowledged)] += 1
        if i < cap:
            items.add_metric([db, d.source, d.kind, d.object, acknowledged], 1)
    for (source, kind, acknowledged), n in tally.items():
        counts.add_metric([db, source, kind, acknowledged], n)
    return [counts, items]


class Store(Collector):
    """The latest poll of each database with its metric families, and the poll counters.

    Written by the scheduler's threads, read by scrapes and /readyz: replacing one dict
    entry under a lock is all the coordination needed. It outlives config reloads, so
    the counters are never reset by one.
    """

    def __init__(self, databases: Iterable[str]):
        self.databases = list(databases)
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[PollResult, list[Metric]]] = {}
        self._merged: list[Metric] = []
        self._skipped = {name: 0 for name in self.databases}
        self._was_ready = False
        self._rendered: dict[str, bytes] = {}  # content type -> the merged families' bytes
        self.live = _LiveCounters(self)

    def put(self, result: PollResult) -> None:
        entry = (result, families_for(result))
        with self._lock:
            if result.database not in self.databases:
                return  # a database a reload removed
            self._latest[result.database] = entry
            self._merged = _merge(families for _, families in self._latest.values())
            self._rendered = {}

    def set_databases(self, databases: Iterable[str]) -> None:
        """After a reload: the series of removed databases go, the others stay as they are
        until their next poll, and the counters of the databases kept keep counting."""
        with self._lock:
            self.databases = list(databases)
            self._latest = {name: entry for name, entry in self._latest.items() if name in self.databases}
            self._skipped = {name: self._skipped.get(name, 0) for name in self.databases}
            self._merged = _merge(families for _, families in self._latest.values())
            self._rendered = {}

    def latest(self, database: str) -> PollResult | None:
        with self._lock:
            entry = self._latest.get(database)
        return entry[0] if entry else None

    def count_skipped(self, database: str) -> None:
        with self._lock:
            self._skipped[database] = self._skipped.get(database, 0) + 1

    def ready(self) -> bool:
        """Every database has completed a poll (up or down). Once ready, a reload does not
        make it unready: a database it adds shows in /metrics after its first poll."""
        with self._lock:
            self._was_ready = self._was_ready or all(name in self._latest for name in self.databases)
            return self._was_ready

    def collect(self) -> Iterable[Metric]:
        """Everything: the live counters and the last polls' families."""
        yield from self.live.collect()
        with self._lock:
            merged = self._merged
        yield from merged

    def rendered(self, encoder: Callable, content_type: str) -> bytes:
        """The last polls' families in one exposition format (`content_type` names it),
        rendered once per poll and format: a scrape copies bytes instead of formatting
        hundreds of samples, the bulk of /metrics (docs/performance.md)."""
        with self._lock:
            merged, cache = self._merged, self._rendered
        text = cache.get(content_type)
        if text is None:
            text = encoder(_Families(merged))
            # OpenMetrics ends with "# EOF": the live part, rendered after it, ends the body.
            text = text.removesuffix(b"# EOF\n")
            with self._lock:
                if self._merged is merged:
                    self._rendered[content_type] = text
        return text


class _LiveCounters(Collector):
    """What changes between polls: build info and the skipped-poll counters."""

    def __init__(self, store: Store):
        self.store = store

    def collect(self) -> Iterable[Metric]:
        with self.store._lock:
            skipped = dict(self.store._skipped)
        info = GaugeMetricFamily("venzory_db_exporter_build_info", "Version of the exporter.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        polls_skipped = CounterMetricFamily(
            "venzory_db_polls_skipped",
            "Polls not started because the previous poll of the database was still running.",
            labels=["database"],
        )
        for name, count in skipped.items():
            polls_skipped.add_metric([name], count)
        yield polls_skipped


class _Families:
    """A fixed list of families, in the shape prometheus_client's encoders render."""

    def __init__(self, families: list[Metric]):
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


def _merge(per_database: Iterable[list[Metric]]) -> list[Metric]:
    """One family per metric name across databases: one HELP/TYPE block each."""
    merged: dict[str, Metric] = {}
    for families in per_database:
        for family in families:
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(family.name, family.documentation, family.type)
            target.samples.extend(family.samples)
    return list(merged.values())
