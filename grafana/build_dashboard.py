#!/usr/bin/env python3
"""Build grafana/venzory-db.json, the Grafana dashboard of venzory-db-exporter.

Plain dicts in Grafana's classic dashboard JSON model (schemaVersion 39, Grafana 10.4+ and
11.x), no dependency. Edit this file, then regenerate and commit both:

    python grafana/build_dashboard.py            # writes grafana/venzory-db.json
    python grafana/build_dashboard.py --check    # exit 1 if the JSON file is out of date

tests/test_grafana.py checks the JSON against this builder, against the metric contract
(docs/metrics.md) and against Grafana's dashboard model.

Every query selects `instance=~"$instance"` and, for series with a database label,
`database=~"$database"`; both variables are multi-value with "All" = `.*`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "venzory-db.json"

UID = "venzory-db-exporter"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
DB = 'instance=~"$instance", database=~"$database"'  # the selector of every database series
INST = 'instance=~"$instance"'  # series without a database label (events, build info)


# -- building blocks -------------------------------------------------------------------------


def target(expr: str, legend: str = "", *, ref: str = "A", table: bool = False) -> dict:
    t = {"datasource": DATASOURCE, "refId": ref, "expr": expr, "legendFormat": legend or "__auto"}
    if table:
        t.update({"format": "table", "instant": True, "range": False})
    else:
        t.update({"range": True, "instant": False})
    return t


def thresholds(*steps: tuple[float | None, str]) -> dict:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


GREEN_ABOVE_0 = thresholds((None, "green"), (1, "red"))  # 0 is good, anything else is bad


def panel(kind: str, title: str, description: str, targets: list[dict], *, unit: str = "short",
          steps: dict | None = None, mappings: list | None = None, options: dict | None = None,
          custom: dict | None = None, transformations: list | None = None) -> dict:
    defaults: dict = {"unit": unit, "mappings": mappings or [], "thresholds": steps or thresholds((None, "green"))}
    if custom is not None:
        defaults["custom"] = custom
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options or {},
    }
    if transformations:
        p["transformations"] = transformations
    return p


def stat(title: str, description: str, targets: list[dict], **kw) -> dict:
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "value_and_name",
    }
    return panel("stat", title, description, targets, options=options, **kw)


def timeseries(title: str, description: str, targets: list[dict], *, stack: bool = False, **kw) -> dict:
    custom = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    options = {
        "legend": {"displayMode": "table", "placement": "right", "showLegend": True, "calcs": ["lastNotNull", "max"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel("timeseries", title, description, targets, custom=custom, options=options, **kw)


def table(title: str, description: str, expr: str, hide: list[str]) -> dict:
    """An instant query shown as a table of its labels (the value column last)."""
    organize = {"id": "organize", "options": {"excludeByName": {name: True for name in ["Time", *hide]}}}
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "countRows": False}}
    return panel("table", title, description, [target(expr, table=True)], options=options,
                 transformations=[organize])


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


UP_DOWN = [{"type": "value", "options": {"0": {"text": "DOWN", "color": "red", "index": 0},
                                          "1": {"text": "UP", "color": "green", "index": 1}}}]


# -- the dashboard ----------------------------------------------------------------------------


def layout() -> list[tuple[dict, int, int]]:
    """(panel, width, height) in reading order; rows are full width."""
    return [
        (row("Exporter and poll health"), 24, 1),
        (stat("Database up", "venzory_db_up: 1 when the last poll reached the database and read its catalog.",
              [target(f"min by (database) (venzory_db_up{{{DB}}})", "{{database}}")],
              mappings=UP_DOWN, steps=thresholds((None, "red"), (1, "green"))), 4, 4),
        (stat("Poll age", "Seconds since the last completed poll (VenzoryDbPollsStale fires above 600 s).",
              [target(f"max by (database) (time() - venzory_db_last_poll_timestamp_seconds{{{DB}}})", "{{database}}")],
              unit="s", steps=thresholds((None, "green"), (180, "yellow"), (600, "red"))), 4, 4),
        (stat("Checks failing", "Checks whose last run failed (venzory_db_check_success == 0).",
              [target(f"sum by (database) (1 - venzory_db_check_success{{{DB}}})", "{{database}}")],
              steps=GREEN_ABOVE_0), 4, 4),
        (stat("Checks guarded", "Checks answered from the catalog: a validated constraint makes violations impossible.",
              [target(f"sum by (database) (venzory_db_check_guarded{{{DB}}})", "{{database}}")]), 4, 4),
        (stat("Polls skipped (1h)", "Polls not started because the previous one was still running.",
              [target(f"sum by (database) (increase(venzory_db_polls_skipped_total{{{DB}}}[1h]))", "{{database}}")],
              steps=thresholds((None, "green"), (1, "yellow"), (4, "red"))), 4, 4),
        (stat("Exporter version", "venzory_db_exporter_build_info, per exporter instance.",
              [target(f"max by (instance, version) (venzory_db_exporter_build_info{{{INST}}})", "{{instance}} {{version}}")]),
         4, 4),
        (timeseries("Poll duration", "Wall time of each database's last poll.",
                    [target(f"venzory_db_poll_duration_seconds{{{DB}}}", "{{database}}")], unit="s"), 12, 8),
        (timeseries("Check duration (slowest 10)", "Duration of the query that answered each check; checks of one table share one query.",
                    [target(f"topk(10, venzory_db_check_duration_seconds{{{DB}}})", "{{database}} {{check}}")], unit="s"), 12, 8),

        (row("Data integrity"), 24, 1),
        (stat("Critical violations", "Rows violating critical checks (negative inventory pages).",
              [target(f'sum by (database) (venzory_db_check_violations{{{DB}, severity="critical"}})', "{{database}}")],
              steps=GREEN_ABOVE_0), 6, 8),
        (timeseries("Violations by category", "Rows violating the checks, per category (the runbook's validation queries).",
                    [target(f"sum by (database, category) (venzory_db_check_violations{{{DB}}})", "{{database}} {{category}}")]), 18, 8),
        (timeseries("Violations by check", "Checks with violating rows (checks at 0 are not drawn).",
                    [target(f"sum by (database, check, table, severity) (venzory_db_check_violations{{{DB}}}) > 0",
                            "{{database}} {{check}} ({{severity}})")]), 12, 8),
        (timeseries("Duplicate groups", "Groups of rows sharing a key a unique constraint forbids.",
                    [target(f"sum by (database, check, table) (venzory_db_duplicate_groups{{{DB}}})", "{{database}} {{check}}")]), 12, 8),

        (row("Expected constraints"), 24, 1),
        (stat("Constraints missing", "Expected constraints absent from the database, by severity.",
              [target(f"sum by (severity) (1 - venzory_db_constraint_present{{{DB}}})", "{{severity}}")],
              steps=GREEN_ABOVE_0), 6, 6),
        (stat("Constraints not valid", "Constraints present but NOT VALID (or an invalid index), by severity.",
              [target(f"sum by (severity) (venzory_db_constraint_present{{{DB}}} - venzory_db_constraint_valid{{{DB}}})", "{{severity}}")],
              steps=GREEN_ABOVE_0), 6, 6),
        (table("Constraints missing or not valid", "Every expected constraint that is missing (present 0) or not validated.",
               f"(venzory_db_constraint_present{{{DB}}} == 0) or (venzory_db_constraint_valid{{{DB}}} == 0)",
               hide=["__name__", "job"]), 12, 6),
        (stat("Stale config entries", "Configured checks and constraints whose table or column exists nowhere any more "
              "(VenzoryDbStaleConfig warns after 1 h; verify prints the fix).",
              [target(f"sum by (database) (venzory_db_config_stale{{{DB}}}) or sum by (database) (0 * venzory_db_up{{{DB}}})",
                      "{{database}}")],
              steps=thresholds((None, "green"), (1, "yellow"))), 6, 6),
        (table("Expectations not simply present", "Expectations (configured, or declared by the migrations / schema.prisma) "
               "that are not_valid, differs, missing, pending or stale; `actual` names the live object keeping the rule.",
               f'venzory_db_constraint_status{{{DB}, status!="present"}}', hide=["__name__", "job", "Value"]), 18, 6),

        (row("Migrations"), 24, 1),
        (timeseries("Migrations by state", "Migrations per state (applied, pending, failed, rolled_back, modified, missing_from_folder).",
                    [target(f"sum by (database, state) (venzory_db_migrations{{{DB}}})", "{{database}} {{state}}")]), 12, 8),
        (stat("Since last migration", "Time since the last migration finished (the post-deploy watch covers the first 15 minutes).",
              [target(f"max by (database) (time() - venzory_db_last_migration_finished_timestamp_seconds{{{DB}}})", "{{database}}")],
              unit="s", steps=thresholds((None, "orange"), (900, "green"))), 4, 8),
        (table("Migrations not applied", "Every migration that is not applied, with its state.",
               f"venzory_db_migration_info{{{DB}}}", hide=["__name__", "job", "Value"]), 8, 8),
        (table("Pending migrations that will fail", "The first statement `prisma migrate deploy` will fail at, with "
               "the rows that make it fail (the deploy prediction).",
               f"venzory_db_deploy_failing_rows{{{DB}}}", hide=["__name__", "job"]), 24, 6),

        (row("Schema drift"), 24, 1),
        (timeseries("Drift items", "Drift items per source and kind; acknowledged=\"true\" items do not alert.",
                    [target(f"sum by (database, source, kind, acknowledged) (venzory_db_schema_drift_items{{{DB}}})",
                            "{{database}} {{source}} {{kind}} ack={{acknowledged}}")]), 12, 8),
        (table("Drift items (detail)", "Every drift item (capped by the exporter's drift.max_item_series).",
               f"venzory_db_schema_drift_item{{{DB}}}", hide=["__name__", "job", "Value"]), 12, 8),

        (row("Backups"), 24, 1),
        (stat("Newest complete backup", "Age of the newest complete dump of the database, over its dump sources "
              "(VenzoryDbNoRecentBackup warns above 26 h).",
              [target(f"time() - max by (database) (venzory_db_backup_newest_complete_timestamp_seconds{{{DB}}})", "{{database}}")],
              unit="s", steps=thresholds((None, "green"), (86400, "yellow"), (93600, "red"))), 6, 6),
        (stat("Backup before the last deploy", "How much older than the start of the last deploy its newest complete "
              "dump was (Inf: none; VenzoryDbMigrationWithoutBackup pages above 1 h).",
              [target(f"max by (database) (venzory_db_backup_before_last_deploy_age_seconds{{{DB}}})", "{{database}}")],
              unit="s", steps=thresholds((None, "green"), (3600.001, "red"))), 6, 6),
        (timeseries("Dump files by status", "The newest dump files of each source: complete, incomplete (cut short), "
                    "wrong_database, unreadable.",
                    [target(f"sum by (database, source, status) (venzory_db_backup_files{{{DB}}})",
                            "{{database}} {{source}} {{status}}")]), 6, 6),
        (stat("WAL archive failures (1h)", "Failed archive_command runs in the last hour (pg_stat_archiver).",
              [target(f"sum by (database) (increase(venzory_db_wal_archive_failed_total{{{DB}}}[1h]))", "{{database}}")],
              steps=GREEN_ABOVE_0), 6, 6),

        (row("Emergencies (between two polls)"), 24, 1),
        (timeseries("Rows lost in mass deletes (24h)", "Rows gone from a table whose live-row estimate fell by more "
                    "than the configured fraction between two polls (VenzoryDbMassDelete).",
                    [target(f"sum by (database, table) (increase(venzory_db_table_rows_lost_total{{{DB}}}[24h]))",
                            "{{database}} {{table}}")]), 12, 6),
        (stat("History rewrites (24h)", "Polls that found _prisma_migrations recreated or applied migrations "
              "replaced (migrate reset; VenzoryDbMigrationHistoryRewritten).",
              [target(f"sum by (database) (increase(venzory_db_migration_history_rewrites_total{{{DB}}}[24h]))", "{{database}}")],
              steps=GREEN_ABOVE_0), 6, 6),
        (stat("Schema changes without migration (24h)", "Drift items that appeared between two polls "
              "(VenzoryDbSchemaChangedWithoutMigration).",
              [target(f"sum by (database) (increase(venzory_db_schema_drift_appeared_total{{{DB}}}[24h]))", "{{database}}")],
              steps=GREEN_ABOVE_0), 6, 6),

        (row("After the last deploy"), 24, 1),
        (timeseries("Write mean time, before and after the last deploy", "Mean execution time of the statements "
                    "writing to each table the last deploy changed, before and after it (pg_stat_statements; "
                    "VenzoryDbWriteLatencyUpAfterDeploy warns when after >= 2 x before).",
                    [target(f"venzory_db_deploy_write_mean_seconds{{{DB}}}", "{{database}} {{table}} {{phase}}")],
                    unit="s"), 12, 8),
        (timeseries("Prisma errors per minute around the last deploy", "In the 15 minutes after the last migration: "
                    "the last 5 minutes' rate (after) and the hour before the deploy (before); "
                    "VenzoryDbErrorRateUpAfterDeploy warns above twice the rate before.",
                    [target(f'label_replace(venzory_db_deploy:prisma_errors_per_minute_after{{{DB}}}, "window", "after", "", "") '
                            f'or label_replace(venzory_db_deploy:prisma_errors_per_minute_before{{{DB}}}, "window", "before", "", "")',
                            "{{database}} {{window}}")]), 12, 8),

        (row("Application errors (Prisma)"), 24, 1),
        (stat("Constraint violations (1h)", "Check, foreign key and unique violations in the last hour (VenzoryDbConstraintViolationRateHigh pages above 10).",
              [target(f'sum by (database) (venzory_db_prisma_errors:increase1h{{{DB}, kind=~"check|foreign_key|unique"}} '
                     f'or increase(venzory_db_prisma_errors_total{{{DB}, kind=~"check|foreign_key|unique"}}[1h]))', "{{database}}")],
              steps=thresholds((None, "green"), (1, "yellow"), (10.001, "red"))), 6, 8),
        (timeseries("Errors by kind (per hour)", "Prisma errors per hour, by kind (a CHECK violation is kind check whatever its code).",
                    [target(f"sum by (database, kind) (rate(venzory_db_prisma_errors_total{{{DB}}}[$__rate_interval])) * 3600",
                            "{{database}} {{kind}}")], stack=True), 18, 8),
        (timeseries("Errors by code (per hour)", "Prisma errors per hour, by Prisma code (unknown: no code, as Prisma 5/6 sends CHECK violations).",
                    [target(f"sum by (database, code) (rate(venzory_db_prisma_errors_total{{{DB}}}[$__rate_interval])) * 3600",
                            "{{database}} {{code}}")], stack=True), 12, 8),
        (timeseries("Errors by constraint (per hour)", "Prisma errors per hour, by constraint (other: not a known constraint).",
                    [target(f"sum by (database, constraint, model) (rate(venzory_db_prisma_errors_total{{{DB}}}[$__rate_interval])) * 3600",
                            "{{database}} {{constraint}} ({{model}})")], stack=True), 12, 8),
        (timeseries("Events received, ignored and rejected (per hour)", "Error events the exporter received, ignored (not Prisma errors) and rejected, per source and reason.",
                    [target(f"sum by (source) (rate(venzory_db_events_received_total{{{INST}}}[$__rate_interval])) * 3600", "received {{source}}", ref="A"),
                     target(f"sum by (source) (rate(venzory_db_events_ignored_total{{{INST}}}[$__rate_interval])) * 3600", "ignored {{source}}", ref="B"),
                     target(f"sum by (source, reason) (rate(venzory_db_events_rejected_total{{{INST}}}[$__rate_interval])) * 3600",
                            "rejected {{source}} {{reason}}", ref="C")]), 24, 8),
    ]


def place(items: list[tuple[dict, int, int]]) -> list[dict]:
    """Give each panel an id and a gridPos, filling rows left to right."""
    panels, x, y, line_height = [], 0, 0, 0
    for number, (p, w, h) in enumerate(items, start=1):
        if p["type"] == "row" or x + w > 24:
            x, y, line_height = 0, y + line_height, 0
        p = {"id": number, **p, "gridPos": {"h": h, "w": w, "x": x, "y": y}}
        panels.append(p)
        x, line_height = x + w, max(line_height, h)
        if p["type"] == "row":
            x, y, line_height = 0, y + h, 0
    return panels


def variables() -> list[dict]:
    def query_variable(name: str, label: str, query: str, description: str) -> dict:
        return {
            "type": "query",
            "name": name,
            "label": label,
            "description": description,
            "datasource": DATASOURCE,
            "query": {"query": query, "refId": f"{name}-variable"},
            "refresh": 2,  # on time range change: databases come and go
            "sort": 1,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [],
            "regex": "",
            "hide": 0,
            "skipUrlSync": False,
        }

    return [
        {
            "type": "datasource",
            "name": "datasource",
            "label": "Data source",
            "description": "The Prometheus that scrapes venzory-db-exporter.",
            "query": "prometheus",
            "current": {},
            "options": [],
            "regex": "",
            "refresh": 1,
            "hide": 0,
            "skipUrlSync": False,
        },
        query_variable("instance", "Exporter", "label_values(venzory_db_exporter_build_info, instance)",
                       "The venzory-db-exporter instance(s)."),
        query_variable("database", "Database", 'label_values(venzory_db_up{instance=~"$instance"}, database)',
                       "The configured database name(s)."),
    ]


def dashboard() -> dict:
    return {
        "id": None,
        "uid": UID,
        "title": "Venzory DB integrity",
        "description": "venzory-db-exporter: integrity checks, constraints, migrations, drift and Prisma errors "
                       "of the Venzory PostgreSQL database. Runbook: docs/runbook.md.",
        "tags": ["venzory", "postgresql", "prisma", "venzory-db-exporter"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "schemaVersion": 39,
        "version": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": variables()},
        "panels": place(layout()),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python grafana/build_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
