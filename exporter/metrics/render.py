"""PollResult -> Prometheus metric families: a pure renderer of the metric contract
(exporter.metrics.contract; docs/metrics.md).

While a database is down its data series are absent: the check and constraint series say
nothing rather than something old.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric

from exporter.backups.monitor import BackupsResult
from exporter.checks.constraints import Status
from exporter.db import DownReason
from exporter.metrics import contract as m
from exporter.migrations.history import MigrationHistory, PrismaStatus
from exporter.migrations.monitor import MigrationsResult
from exporter.migrations.deploy import Forecast, Outcome
from exporter.poll import PollResult
from exporter.schema.diff import DriftItem, DriftKind, DriftSource
from exporter.watch.deploy import DeployResult, Phase
from exporter.watch.emergencies import EmergenciesResult


def families_for(result: PollResult) -> list[Metric]:
    db = result.database
    up, last, duration, full = m.UP.family(), m.LAST_POLL.family(), m.POLL_DURATION.family(), m.FULL_SCAN.family()
    up.add_metric([db], 1 if result.up else 0)
    last.add_metric([db], result.finished_at)
    duration.add_metric([db], result.duration)
    full.add_metric([db], 1 if result.full_scan else 0)
    families: list[Metric] = [up, last, duration, full]
    if not result.up:
        reason = m.DOWN_REASON.family()
        reason.add_metric([db, result.down_reason or DownReason.ERROR], 1)
        return families + [reason]
    families += _check_families(result)
    families += _constraint_families(result)
    if result.privileges is not None:
        can_write = m.ROLE_CAN_WRITE.family()
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


def _check_families(result: PollResult) -> list[Metric]:
    db = result.database
    violations, groups = m.CHECK_VIOLATIONS.family(), m.DUPLICATE_GROUPS.family()
    success, duration, guarded = m.CHECK_SUCCESS.family(), m.CHECK_DURATION.family(), m.CHECK_GUARDED.family()
    for r in result.checks:
        c = r.check
        success.add_metric([db, c.name], 0 if r.status == "failed" else 1)
        duration.add_metric([db, c.name], r.duration)
        guarded.add_metric([db, c.name], 1 if r.guarded else 0)
        if r.violations is not None:
            violations.add_metric([db, c.name, c.table, c.category, c.severity], r.violations)
        if r.groups is not None:
            groups.add_metric([db, c.name, c.table], r.groups)
    return [violations, groups, success, duration, guarded]


def _constraint_families(result: PollResult) -> list[Metric]:
    db = result.database
    present, valid, status = m.CONSTRAINT_PRESENT.family(), m.CONSTRAINT_VALID.family(), m.CONSTRAINT_STATUS.family()
    stale = m.CONFIG_STALE.family()
    for c in result.constraints:
        values = [db, c.table, c.name, c.kind, "critical" if c.critical else "warning"]
        status.add_metric(values + [c.status, c.actual or "", c.source], 1)
        if c.status is Status.STALE:
            stale.add_metric([db, c.name, c.table], 1)
        elif c.status is not Status.PENDING:  # expected now: present/valid (the alerts' series)
            present.add_metric(values, 1 if c.present else 0)
            valid.add_metric(values, 1 if c.valid else 0)
    for n in result.not_run:
        if n.status is Status.STALE:
            stale.add_metric([db, n.check.name, n.check.table], 1)
    return [present, valid, status, stale]


def _migration_families(db: str, migrations: MigrationsResult) -> list[Metric]:
    ok = m.MIGRATIONS_PART_SUCCESS.family()
    failed_parts = {part for part, _ in migrations.errors}
    for part in migrations.parts:
        ok.add_metric([db, part], 0 if part in failed_parts else 1)
    families: list[Metric] = [ok]
    if migrations.history:
        families += _history_families(db, migrations.history)
    if migrations.forecast:
        families += _forecast_families(db, migrations.forecast)
    if migrations.drift_assessed:
        families += _drift_families(db, migrations.drift, migrations.max_drift_series)
    return families


def _history_families(db: str, history: MigrationHistory) -> list[Metric]:
    states, info = m.MIGRATIONS.family(), m.MIGRATION_INFO.family()
    for state, count in history.counts.items():
        if count is not None:  # unknown while the folder is unreadable: absent, not 0
            states.add_metric([db, state], count)
    for item in history.not_applied:
        info.add_metric([db, item.name, item.state], 1)
    if not history.last_finished_at:
        return [states, info]
    last = m.LAST_MIGRATION_FINISHED.family()
    last.add_metric([db], history.last_finished_at.timestamp())
    return [states, info, last]


DEPLOY_OUTCOMES = (Outcome.PASSES, Outcome.FAILS, Outcome.CANNOT_EVALUATE, Outcome.REFUSED)


def _forecast_families(db: str, f: Forecast) -> list[Metric]:
    deploy = f.deploy
    outcome, status, baseline = m.DEPLOY_PREDICTION.family(), m.PRISMA_STATUS.family(), m.BASELINE_UNRESOLVED.family()
    for value in DEPLOY_OUTCOMES:
        outcome.add_metric([db, value], 1 if deploy.outcome == value else 0)
    for state in PrismaStatus:
        status.add_metric([db, state], 1 if f.view.status == state else 0)
    baseline.add_metric([db], 1 if f.view.baseline_unresolved else 0)
    failing = m.DEPLOY_FAILING_ROWS.family()
    if deploy.failure:
        name, failed = deploy.failure
        failing.add_metric([db, name, str(failed.number), failed.table], failed.offending_rows or 0)
    effects, locks = m.DEPLOY_ROWS.family(), m.DEPLOY_LOCK_ROWS.family()
    for migration in deploy.migrations:
        if migration.outcome == Outcome.NOT_REACHED:
            continue
        for effect, n in migration.effects.items():
            effects.add_metric([db, migration.name, effect], n)
        for s in migration.statements:
            if s.lock and s.rows_scanned is not None:
                locks.add_metric([db, migration.name, str(s.number), s.table, s.lock], s.rows_scanned)
    return [outcome, status, baseline, failing, effects, locks]


def _drift_families(db: str, drift: Iterable[DriftItem], cap: int) -> list[Metric]:
    counts, items = m.SCHEMA_DRIFT_ITEMS.family(), m.SCHEMA_DRIFT_ITEM.family()
    tally: dict[tuple[str, str, str], int] = {
        (source, kind, acknowledged): 0
        for source in DriftSource for kind in DriftKind for acknowledged in ("false", "true")
    }
    for i, d in enumerate(drift):
        acknowledged = "true" if d.acknowledged else "false"
        tally[(d.source, d.kind, acknowledged)] += 1
        if i < cap:
            items.add_metric([db, d.source, d.kind, d.object, acknowledged], 1)
    for (source, kind, acknowledged), n in tally.items():
        counts.add_metric([db, source, kind, acknowledged], n)
    return [counts, items]


def _backup_families(db: str, b: BackupsResult) -> list[Metric]:
    families: list[Metric] = []
    if b.sources:
        files, newest, size = m.BACKUP_FILES.family(), m.BACKUP_NEWEST.family(), m.BACKUP_NEWEST_SIZE.family()
        for source in b.sources:
            for status, n in source.counts().items():
                files.add_metric([db, source.name, status], n)
            if (dump := source.newest_complete) is not None:
                newest.add_metric([db, source.name], dump.taken_at)
                size.add_metric([db, source.name], dump.size)
        families += [files, newest, size]
        if (before := b.before_last_deploy) is not None:
            start, dump = before
            age = m.BACKUP_BEFORE_DEPLOY_AGE.family()
            age.add_metric([db], start - dump.taken_at if dump else float("inf"))
            families.append(age)
    if b.archiver is not None:
        a = b.archiver
        enabled, archived = m.WAL_ARCHIVING_ENABLED.family(), m.WAL_ARCHIVED.family()
        failed = m.WAL_ARCHIVE_FAILED.family()
        enabled.add_metric([db], 1 if a.enabled else 0)
        archived.add_metric([db], a.archived)
        failed.add_metric([db], a.failed)
        families += [enabled, archived, failed]
        for spec, value in ((m.WAL_LAST_ARCHIVED, a.last_archived_at), (m.WAL_LAST_FAILURE, a.last_failed_at)):
            if value is not None:
                family = spec.family()
                family.add_metric([db], value)
                families.append(family)
    return families


def _emergency_families(db: str, e: EmergenciesResult) -> list[Metric]:
    deletes, lost, rewrites = m.TABLE_MASS_DELETES.family(), m.TABLE_ROWS_LOST.family(), m.HISTORY_REWRITES.family()
    for table in e.tables:
        deletes.add_metric([db, table], e.mass_deletes_total.get(table, 0))
        lost.add_metric([db, table], e.rows_lost_total.get(table, 0))
    rewrites.add_metric([db], e.history_rewrites_total)
    families: list[Metric] = [deletes, lost, rewrites]
    if e.drift_watched:
        appeared, when = m.DRIFT_APPEARED.family(), m.DRIFT_APPEARED_AT.family()
        appeared.add_metric([db], e.drift_appeared_total)
        for a in e.drift_appeared:
            when.add_metric([db, a.item.source, a.item.kind, a.item.object], a.appeared_at)
        families += [appeared, when]
    return families


def _deploy_families(db: str, d: DeployResult) -> list[Metric]:
    families: list[Metric] = []
    if d.deploy is not None:
        info = m.LAST_DEPLOY_INFO.family()
        info.add_metric([db, d.deploy.name], 1)
        families.append(info)
    if d.unavailable is not None:
        reason = m.DEPLOY_LATENCY_UNAVAILABLE.family()
        reason.add_metric([db, d.unavailable], 1)
        return families + [reason]
    calls, mean, baseline = m.DEPLOY_WRITE_CALLS.family(), m.DEPLOY_WRITE_MEAN.family(), m.DEPLOY_BASELINE.family()
    for t in d.latency:
        for phase, totals in ((Phase.BEFORE, t.before), (Phase.AFTER, t.after)):
            calls.add_metric([db, t.table, phase], totals.calls)
            if totals.mean_seconds is not None:
                mean.add_metric([db, t.table, phase], totals.mean_seconds)
    if d.baseline_at is not None:
        baseline.add_metric([db], d.baseline_at)
    return families + [calls, mean, baseline]
