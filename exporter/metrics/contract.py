"""The metric contract, declared once: every metric's name, type, help and label names.

Exposition builds its families from these declarations (exporter.metrics.render, the
live counters, exporter.events.counters); the tests compare them with docs/metrics.md
(both directions) and take from them the names alerts and dashboards may use. Names and
labels are a contract that alerts and dashboards build on: add, never rename.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# Appended to the help of every metric read from the last completed poll.
CACHED = " Cached: from the last completed poll (see venzory_db_last_poll_timestamp_seconds)."


# A family of either type: both take samples with add_metric(labels, value).
Family = GaugeMetricFamily | CounterMetricFamily


class MetricType(StrEnum):
    GAUGE = "gauge"
    COUNTER = "counter"


@dataclass(frozen=True)
class MetricSpec:
    name: str  # as declared; a counter's samples carry `name + "_total"`
    type: MetricType
    help: str
    labels: tuple[str, ...]
    from_poll: bool = True  # read from the last completed poll: its help says "Cached"

    @property
    def exposed_name(self) -> str:
        """The name a query uses (and docs/metrics.md lists)."""
        return self.name + "_total" if self.type is MetricType.COUNTER else self.name

    @property
    def documentation(self) -> str:
        return self.help + CACHED if self.from_poll else self.help

    def family(self) -> Family:
        """An empty family of this metric, to add samples to."""
        if self.type is MetricType.COUNTER:
            return CounterMetricFamily(self.name, self.documentation, labels=list(self.labels))
        return GaugeMetricFamily(self.name, self.documentation, labels=list(self.labels))


def _gauge(name: str, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, MetricType.GAUGE, help, labels)


def _live(name: str, type: MetricType, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, type, help, labels, from_poll=False)


DB = "database"

# -- poll health ---------------------------------------------------------------------------------
UP = _gauge("venzory_db_up", "1 if the last poll reached the database and read its catalog, else 0.", DB)
LAST_POLL = _gauge("venzory_db_last_poll_timestamp_seconds", "Unix time the last poll finished.", DB)
POLL_DURATION = _gauge("venzory_db_poll_duration_seconds", "Wall time of the last poll.", DB)
FULL_SCAN = _gauge("venzory_db_poll_full_scan", "1 if the last poll read every table, ignoring guards.", DB)
DOWN_REASON = _gauge("venzory_db_down_reason", "1 for the reason the last poll found the database down "
                     "(absent while it is up).", DB, "reason")
ROLE_CAN_WRITE = _gauge(
    "venzory_db_role_can_write",
    "1 if the exporter's role could write to the monitored schema (superuser, CREATE on it, "
    "or INSERT/UPDATE/DELETE/TRUNCATE on a table of it), else 0.", DB)
BUILD_INFO = _live("venzory_db_exporter_build_info", MetricType.GAUGE, "Version of the exporter.", "version")
POLLS_SKIPPED = _live("venzory_db_polls_skipped", MetricType.COUNTER,
                      "Polls not started because the previous poll of the database was still running.", DB)

# -- checks ----------------------------------------------------------------------------------------
CHECK_VIOLATIONS = _gauge("venzory_db_check_violations",
                          "Rows violating the check (for duplicate checks: rows involved in duplicate groups).",
                          DB, "check", "table", "category", "severity")
DUPLICATE_GROUPS = _gauge("venzory_db_duplicate_groups", "Groups of duplicate rows.", DB, "check", "table")
CHECK_SUCCESS = _gauge("venzory_db_check_success", "1 if the check ran, 0 if it failed.", DB, "check")
CHECK_DURATION = _gauge("venzory_db_check_duration_seconds",
                        "Duration of the query that answered the check (checks of one table share one query).",
                        DB, "check")
CHECK_GUARDED = _gauge(
    "venzory_db_check_guarded",
    "1 if the check was answered from the catalog: a validated constraint makes violations impossible.",
    DB, "check")

# -- expected constraints ----------------------------------------------------------------------------
_CONSTRAINT_LABELS = (DB, "table", "constraint", "kind", "severity")
CONSTRAINT_PRESENT = _gauge("venzory_db_constraint_present", "1 if the expected constraint or index exists.",
                            *_CONSTRAINT_LABELS)
CONSTRAINT_VALID = _gauge("venzory_db_constraint_valid",
                          "1 if the expected constraint exists and is validated.", *_CONSTRAINT_LABELS)
CONSTRAINT_STATUS = _gauge(
    "venzory_db_constraint_status",
    "1 for what became of each expected constraint: present, not_valid, differs, missing, pending "
    "(a pending migration adds it) or stale (configured for a table or column that exists nowhere); "
    "`actual` names the live object that keeps the rule (\"\" when none).",
    *_CONSTRAINT_LABELS, "status", "actual", "source")
CONFIG_STALE = _gauge(
    "venzory_db_config_stale",
    "1 for each configured check or constraint whose table or column exists neither in the database nor "
    "in the expected schema (verify prints the fix).", DB, "entry", "table")

# -- migrations, drift, the deploy prediction (docs/migrations.md) -------------------------------------------------
MIGRATIONS_PART_SUCCESS = _gauge(
    "venzory_db_migrations_part_success",
    "1 if this part of the migrations assessment could be computed (history, expected_schema, "
    "schema_prisma, preflight (the deploy prediction)), 0 if its input was unreadable or unreachable.", DB, "part")
MIGRATIONS = _gauge("venzory_db_migrations", "Migrations per state.", DB, "state")
MIGRATION_INFO = _gauge("venzory_db_migration_info", "1 for each migration that is not plainly applied.",
                        DB, "migration", "state")
LAST_MIGRATION_FINISHED = _gauge("venzory_db_last_migration_finished_timestamp_seconds",
                                 "Unix time the most recent migration finished.", DB)
DEPLOY_PREDICTION = _gauge(
    "venzory_db_deploy_prediction",
    "1 for what `prisma migrate deploy` of the pending migrations is predicted to do (passes, fails, "
    "cannot_evaluate, refused), 0 for the others.", DB, "outcome")
DEPLOY_FAILING_ROWS = _gauge(
    "venzory_db_deploy_failing_rows",
    "Rows that make the first failing statement of the deploy fail (0 when the failure is not about rows); "
    "present only while the deploy is predicted to fail.", DB, "migration", "statement", "table")
DEPLOY_ROWS = _gauge(
    "venzory_db_deploy_rows",
    "What the deploy will do to the data, per pending migration: rows_inserted, rows_updated, rows_deleted, rows_lost "
    "(DROP TABLE), values_lost (non-null values of a DROP COLUMN).", DB, "migration", "effect")
DEPLOY_LOCK_ROWS = _gauge(
    "venzory_db_deploy_lock_rows",
    "Rows a statement of a pending migration scans or rewrites while it holds its lock.",
    DB, "migration", "statement", "table", "lock")
PRISMA_STATUS = _gauge(
    "venzory_db_prisma_status",
    "1 for what `prisma migrate status` says of the history (up_to_date, pending, failed, diverged), 0 for the others.",
    DB, "status")
BASELINE_UNRESOLVED = _gauge(
    "venzory_db_migration_baseline_unresolved",
    "1 if the schema exists but no migration of the folder is recorded as applied.", DB)
SCHEMA_DRIFT_ITEMS = _gauge("venzory_db_schema_drift_items", "Schema drift items.",
                            DB, "source", "kind", "acknowledged")
SCHEMA_DRIFT_ITEM = _gauge("venzory_db_schema_drift_item",
                           "1 per schema drift item (capped by drift.max_item_series; the counts are never capped).",
                           DB, "source", "kind", "object", "acknowledged")

# -- Prisma error events (docs/events.md) ------------------------------------------------------------
PRISMA_ERRORS = _live(
    "venzory_db_prisma_errors", MetricType.COUNTER,
    "Prisma errors reported by the application (log events), by what they really are: "
    "kind from the Prisma code, else the SQLSTATE, else the message. constraint and model "
    "are known names, 'none' when the error names none, 'other' when not known.",
    DB, "code", "kind", "constraint", "model")
EVENTS_RECEIVED = _live("venzory_db_events_received", MetricType.COUNTER,
                        "Event records (log lines, JSON objects, refused requests) received from a source.",
                        "source")
EVENTS_REJECTED = _live("venzory_db_events_rejected", MetricType.COUNTER,
                        "Event records or requests refused, by reason (not counted as errors).", "source", "reason")
EVENTS_IGNORED = _live("venzory_db_events_ignored", MetricType.COUNTER,
                       "Event records that were not Prisma errors (ordinary application logs).", "source")

# -- backups (docs/backups.md) ---------------------------------------------------------------------
BACKUP_FILES = _gauge("venzory_db_backup_files", "Newest dump files of the source inspected, by status "
                      "(complete, incomplete, wrong_database, unreadable).", DB, "source", "status")
BACKUP_NEWEST = _gauge("venzory_db_backup_newest_complete_timestamp_seconds",
                       "Unix time the newest complete dump of this database was taken (absent: none).", DB, "source")
BACKUP_NEWEST_SIZE = _gauge("venzory_db_backup_newest_complete_size_bytes",
                            "Size of the newest complete dump of this database.", DB, "source")
BACKUP_BEFORE_DEPLOY_AGE = _gauge(
    "venzory_db_backup_before_last_deploy_age_seconds",
    "Age, when the last deploy started, of the newest complete dump taken before it (+Inf: none).", DB)
WAL_ARCHIVING_ENABLED = _gauge("venzory_db_wal_archiving_enabled", "1 if archive_mode is on or always.", DB)
WAL_ARCHIVED = MetricSpec("venzory_db_wal_archived", MetricType.COUNTER,
                          "WAL files archived (pg_stat_archiver.archived_count).", (DB,))
WAL_ARCHIVE_FAILED = MetricSpec("venzory_db_wal_archive_failed", MetricType.COUNTER,
                                "Failed attempts to archive a WAL file (pg_stat_archiver.failed_count).", (DB,))
WAL_LAST_ARCHIVED = _gauge("venzory_db_wal_last_archived_timestamp_seconds",
                           "Unix time the last WAL file was archived.", DB)
WAL_LAST_FAILURE = _gauge("venzory_db_wal_last_archive_failure_timestamp_seconds",
                          "Unix time the last archiving attempt failed.", DB)

# -- emergencies between two polls -----------------------------------------------------------------
TABLE_MASS_DELETES = MetricSpec(
    "venzory_db_table_mass_deletes", MetricType.COUNTER,
    "Polls that found the table's live-row estimate fallen by more than the configured fraction since the "
    "previous poll.", (DB, "table"))
TABLE_ROWS_LOST = MetricSpec("venzory_db_table_rows_lost", MetricType.COUNTER,
                             "Rows gone from the table in those mass deletes.", (DB, "table"))
HISTORY_REWRITES = MetricSpec(
    "venzory_db_migration_history_rewrites", MetricType.COUNTER,
    "Polls that found _prisma_migrations recreated, or applied migrations replaced or removed, since the "
    "previous poll (migrate reset).", (DB,))
DRIFT_APPEARED = MetricSpec("venzory_db_schema_drift_appeared", MetricType.COUNTER,
                            "Drift items that appeared between two polls (schema changed without a migration).",
                            (DB,))
DRIFT_APPEARED_AT = _gauge(
    "venzory_db_schema_drift_appeared_timestamp_seconds",
    "Unix time an unacknowledged drift item still present was first seen (only items that appeared while the "
    "exporter watched).", DB, "source", "kind", "object")

# -- the watch after a deploy --------------------------------------------------------------------------
LAST_DEPLOY_INFO = _gauge("venzory_db_last_deploy_info", "1, labelled with the last migration of the last deploy.",
                          DB, "migration")
DEPLOY_LATENCY_UNAVAILABLE = _gauge(
    "venzory_db_deploy_latency_unavailable",
    "1 for why the write latency of the last deploy's tables is unknown (absent while it is known).", DB, "reason")
DEPLOY_WRITE_CALLS = _gauge(
    "venzory_db_deploy_write_calls",
    "Calls of the statements writing to a table the last deploy changed: before (up to the baseline) and after it.",
    DB, "table", "phase")
DEPLOY_WRITE_MEAN = _gauge(
    "venzory_db_deploy_write_mean_seconds",
    "Mean execution time of those statements, before and after the last deploy (absent without calls).",
    DB, "table", "phase")
DEPLOY_BASELINE = _gauge("venzory_db_deploy_baseline_timestamp_seconds",
                         "Unix time of the pg_stat_statements snapshot that separates before from after.", DB)

# Every metric, in the order of the docs.
METRICS: tuple[MetricSpec, ...] = (
    UP, DOWN_REASON, LAST_POLL, POLL_DURATION, FULL_SCAN, POLLS_SKIPPED, BUILD_INFO, ROLE_CAN_WRITE,
    CHECK_VIOLATIONS, DUPLICATE_GROUPS, CHECK_SUCCESS, CHECK_DURATION, CHECK_GUARDED,
    CONSTRAINT_PRESENT, CONSTRAINT_VALID, CONSTRAINT_STATUS, CONFIG_STALE,
    MIGRATIONS, MIGRATION_INFO, LAST_MIGRATION_FINISHED, DEPLOY_PREDICTION, DEPLOY_FAILING_ROWS, DEPLOY_ROWS,
    DEPLOY_LOCK_ROWS, PRISMA_STATUS, BASELINE_UNRESOLVED,
    SCHEMA_DRIFT_ITEMS, SCHEMA_DRIFT_ITEM, MIGRATIONS_PART_SUCCESS,
    PRISMA_ERRORS, EVENTS_RECEIVED, EVENTS_REJECTED, EVENTS_IGNORED,
    BACKUP_FILES, BACKUP_NEWEST, BACKUP_NEWEST_SIZE, BACKUP_BEFORE_DEPLOY_AGE,
    WAL_ARCHIVING_ENABLED, WAL_ARCHIVED, WAL_ARCHIVE_FAILED, WAL_LAST_ARCHIVED, WAL_LAST_FAILURE,
    TABLE_MASS_DELETES, TABLE_ROWS_LOST, HISTORY_REWRITES, DRIFT_APPEARED, DRIFT_APPEARED_AT,
    LAST_DEPLOY_INFO, DEPLOY_WRITE_CALLS, DEPLOY_WRITE_MEAN, DEPLOY_BASELINE, DEPLOY_LATENCY_UNAVAILABLE,
)
