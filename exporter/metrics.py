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
from exporter.backups.monitor import BackupsResult
from exporter.migrations.history import APPLIED
from exporter.migrations.monitor import MigrationsResult
from exporter.poll import PollResult
from exporter.schema.diff import KINDS as DRIFT_KINDS, MIGRATIONS, SCHEMA_PRISMA
from exporter.watch.deploy import DeployResult
from exporter.watch.emergencies import EmergenciesResult

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
    if result.backups:
        families += _backup_families(db, result.backups)
    if result.emergencies:
        families += _emergency_families(db, result.emergencies)
    if result.deploy:
        families += _deploy_families(db, result.deploy)
    return families


def _backup_families(db: str, b: BackupsResult) -> list[Metric]:
    families = []
    if b.sources:
        files = _gauge("venzory_db_backup_files", "Newest dump files of the source inspected, by status "
                       "(complete, incomplete, wrong_database, unreadable).", ["database", "source", "status"])
        newest = _gauge("venzory_db_backup_newest_complete_timestamp_seconds",
                        "Unix time the newest complete dump of this database was taken (absent: none).",
                        ["database", "source"])
        size = _gauge("venzory_db_backup_newest_complete_size_bytes", "Size of the newest complete dump of this database.",
                      ["database", "source"])
        for source in b.sources:
            for status, n in source.counts().items():
                files.add_metric([db, source.name, str(status)], n)
            if (dump := source.newest_complete) is not None:
                newest.add_metric([db, source.name], dump.taken_at)
                size.add_metric([db, source.name], dump.size)
        families += [files, newest, size]
        if (before := b.before_last_deploy) is not None:
            start, dump = before
            age = _gauge("venzory_db_backup_before_last_deploy_age_seconds",
                         "Age, when the last deploy started, of the newest complete dump taken before it (+Inf: none).",
                         ["database"])
            age.add_metric([db], start - dump.taken_at if dump else float("inf"))
            families.append(age)
    if b.archiver is not None:
        a = b.archiver
        enabled = _gauge("venzory_db_wal_archiving_enabled", "1 if archive_mode is on or always.", ["database"])
        enabled.add_metric([db], 1 if a.enabled else 0)
        archived = CounterMetricFamily("venzory_db_wal_archived", "WAL files archived (pg_stat_archiver.archived_count)."
                                       + CACHED, labels=["database"])
        archived.add_metric([db], a.archived)
        failed = CounterMetricFamily("venzory_db_wal_archive_failed", "Failed attempts to archive a WAL file "
                                     "(pg_stat_archiver.failed_count)." + CACHED, labels=["database"])
        failed.add_metric([db], a.failed)
        families += [enabled, archived, failed]
        for name, doc, value in (
            ("venzory_db_wal_last_archived_timestamp_seconds", "Unix time the last WAL file was archived.", a.last_archived_at),
            ("venzory_db_wal_last_archive_failure_timestamp_seconds", "Unix time the last archiving attempt failed.",
             a.last_failed_at),
        ):
            if value is not None:
                g = _gauge(name, doc, ["database"])
                g.add_metric([db], value)
                families.append(g)
    return families


def _emergency_families(db: str, e: EmergenciesResult) -> list[Metric]:
    deletes = CounterMetricFamily("venzory_db_table_mass_deletes", "Polls that found the table's live-row estimate "
                                  "fallen by more than the configured fraction since the previous poll." + CACHED,
                                  labels=["database", "table"])
    lost = CounterMetricFamily("venzory_db_table_rows_lost", "Rows gone from the table in those mass deletes." + CACHED,
                               labels=["database", "table"])
    for table in e.tables:
        deletes.add_metric([db, table], e.mass_deletes_total.get(table, 0))
        lost.add_metric([db, table], e.rows_lost_total.get(table, 0))
    rewrites = CounterMetricFamily("venzory_db_migration_history_rewrites", "Polls that found _prisma_migrations "
                                   "recreated, or applied migrations replaced or removed, since the previous poll "
                                   "(migrate reset)." + CACHED, labels=["database"])
    rewrites.add_metric([db], e.history_rewrites_total)
    families = [deletes, lost, rewrites]
    if e.drift_watched:
        appeared = CounterMetricFamily("venzory_db_schema_drift_appeared", "Drift items that appeared between two polls "
                                       "(schema changed without a migration)." + CACHED, labels=["database"])
        appeared.add_metric([db], e.drift_appeared_total)
        when = _gauge("venzory_db_schema_drift_appeared_timestamp_seconds",
                      "Unix time an unacknowledged drift item still present was first seen (only items that appeared "
                      "while the exporter watched).", ["database", "source", "kind", "object"])
        for a in e.drift_appeared:
            when.add_metric([db, a.item.source, a.item.kind, a.item.object], a.appeared_at)
        families += [appeared, when]
    return families


def _deploy_families(db: str, d: DeployResult) -> list[Metric]:
    families = []
    if d.deploy is not None:
        info = _gauge("venzory_db_last_deploy_info", "1, labelled with the last migration of the last deploy.",
                      ["database", "migration"])
        info.add_metric([db, d.deploy.name], 1)
        families.append(info)
    if d.unavailable is not None:
        reason = _gauge("venzory_db_deploy_latency_unavailable", "1 for why the write latency of the last deploy's "
                        "tables is unknown (absent while it is known).", ["database", "reason"])
        reason.add_metric([db, str(d.unavailable)], 1)
        return families + [reason]
    calls = _gauge("venzory_db_deploy_write_calls", "Calls of the statements writing to a table the last deploy changed: "
                   "before (up to the baseline) and after it.", ["database", "table", "phase"])
    mean = _gauge("venzory_db_deploy_write_mean_seconds", "Mean execution time of those statements, before and after "
                  "the last deploy (absent without calls).", ["database", "table", "phase"])
    for t in d.latency:
        for phase, totals in (("before", t.before), ("after", t.after)):
            calls.add_metric([db, t.table, phase], totals.calls)
            if totals.mean_seconds is not None:
                mean.add_metric([db, t.table, phase], totals.mean_seconds)
    baseline = _gauge("venzory_db_deploy_baseline_timestamp_seconds", "Unix time of the pg_stat_statements snapshot "
                      "that separates before from after.", ["database"])
    baseline.add_metric([db], d.baseline_at)
    return families + [calls, mean, baseline]


def _migration_families(db: str, m: MigrationsResult) -> list[Metric]:
    ok = _gauge(
        "venzory_db_migrations_part_success",
        "1 if this part of the migrations assessment could be computed (history, expected_schema, "
        "schema_prisma, preflight), 0 if its input was unreadable or unreachable.",
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
    if m.preflight:
        blocked = _gauge("venzory_db_migration_blocked_rows",
                         "Live rows that would make a pending migration fail on this constraint (0: it would pass).",
                         ["database", "migration", "table", "constraint"])
        unknown = _gauge("venzory_db_migration_preflight_unevaluable",
                         "1 for a pending constraint that cannot be evaluated on the live database yet.",
                         ["database", "migration", "table", "constraint"])
        for p in m.preflight:
            target = blocked if p.blocked_rows is not None else unknown
            target.add_metric([db, p.migration, p.table, p.constraint], p.blocked_rows if p.blocked_rows is not None else 1)
        families += [blocked, unknown]
    if m.expected is not None or "schema_prisma" in m.parts:
        families += _drift_families(db, m.drift, m.max_drift_series)
    return families


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
