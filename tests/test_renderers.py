"""The renderers of a PollResult - /metrics families and verify's JSON, text and exit
code - from literal results: no database, no poll."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from datetime import datetime, UTC

import pytest

from exporter.backups.archiver import Archiver
from exporter.backups.dumps import Dump, DumpFormat, DumpStatus
from exporter.backups.monitor import BackupsResult, SourceResult
from exporter.checks.constraints import ConstraintResult, Status
from exporter.checks.run import CheckResult, CheckStatus, FailureReason
from exporter.config import Config
from exporter.db import DownReason
from exporter.events.counters import EventCounters
from exporter.events.known import KnownNames
from exporter.schema.model import ConstraintKind
from exporter.metrics.contract import METRICS
from exporter.metrics.endpoint import MetricsEndpoint
from exporter.metrics.render import families_for
from exporter.migrations.deploy import (
    ACCESS_EXCLUSIVE, ROW_EXCLUSIVE, DeployPrediction, Forecast, MigrationPrediction, Outcome, StatementResult,
)
from exporter.migrations.history import Deploy, MigrationHistory, MigrationItem, MigrationState, PrismaStatus, PrismaView
from exporter.migrations.monitor import MigrationsResult, Part
from exporter.poll import PollResult
from exporter.privileges import Privileges
from exporter.report import EXIT_CANNOT_RUN, EXIT_OK, EXIT_PROBLEMS, exit_code, render_json, render_text
from exporter.schema.diff import DriftItem, DriftKind, DriftSource
from exporter.schema.model import Schema
from exporter.store import ResultStore
from exporter.watch.deploy import DeployResult, TableLatency, Totals, Unavailable
from exporter.watch.emergencies import AppearedDrift, EmergenciesResult
from support import exposition, samples, value

CONFIG = Config.model_validate({
    "databases": [{"name": "shop", "dsn": "postgresql://monitor:secret@localhost/shop"}],
    "checks": [
        {"name": "stock_non_negative", "kind": "row", "table": "Stock", "rule": "quantity >= 0",
         "category": "negative_inventory", "severity": "critical"},
        {"name": "item_names", "kind": "duplicate", "table": "Item", "columns": ["name"],
         "category": "duplicate", "severity": "warning"},
        {"name": "order_sent_at", "kind": "row", "table": "Order", "rule": "\"sentAt\" IS NOT NULL",
         "category": "status_timestamp", "severity": "warning"},
    ],
})
NEGATIVE, NAMES, SENT_AT = CONFIG.checks
T0 = 1_700_000_000.0
FINISHED = datetime(2025, 11, 5, 17, 14, tzinfo=UTC)

CHECKS = (
    CheckResult(NEGATIVE, CheckStatus.VIOLATED, 3, duration=0.25),
    CheckResult(NAMES, CheckStatus.OK, 0, 0, guarded_by="Item_name_key"),
    CheckResult(SENT_AT, CheckStatus.FAILED, reason=FailureReason.TIMEOUT, error="canceling statement", duration=1.0),
)
CONSTRAINTS = (
    ConstraintResult("Stock", "check_quantity", ConstraintKind.CHECK, True, Status.PRESENT, "check_quantity"),
    ConstraintResult("Item", "Item_name_key", ConstraintKind.UNIQUE, False, Status.NOT_VALID, "Item_name_key",
                     detail="index is invalid"),
)
HISTORY = MigrationHistory(True, None, (
    MigrationItem("1_init", MigrationState.APPLIED, FINISHED),
    MigrationItem("2_harden", MigrationState.PENDING, None, "", True),
), FINISHED)
SANITIZE = StatementResult(1, 3, 'UPDATE "Stock" SET quantity = 0 WHERE quantity < -100', Outcome.PASSES, "Stock",
                           rows_updated=5, lock=ROW_EXCLUSIVE, rows_scanned=40)
FAILING = StatementResult(2, 4, 'ALTER TABLE "Stock" ADD CONSTRAINT "check_quantity" CHECK (quantity >= 0)',
                          Outcome.FAILS, "Stock", 'check constraint "check_quantity" of relation "Stock" is violated',
                          "23514", 3, 'SELECT * FROM "Stock" WHERE NOT (quantity >= 0)', lock=ACCESS_EXCLUSIVE)
FORECAST = Forecast(
    PrismaView(PrismaStatus.PENDING, None, ("2_harden", "3_later"), (), (), False),
    DeployPrediction(Outcome.FAILS, (MigrationPrediction("2_harden", Outcome.FAILS, (SANITIZE, FAILING)),
                                     MigrationPrediction("3_later", Outcome.NOT_REACHED))),
    (),
)
DRIFT = (
    DriftItem(DriftSource.MIGRATIONS, DriftKind.EXTRA_COLUMN, "Item.legacy", "column Item.legacy exists"),
    DriftItem(DriftSource.SCHEMA_PRISMA, DriftKind.MISSING_INDEX, "Item_sku_idx", "index missing", True),
)
MIGRATIONS = MigrationsResult(HISTORY, Schema(), DRIFT, FORECAST, "", (), tuple(Part), max_drift_series=1)
DEPLOY = Deploy(("1_init",), FINISHED, FINISHED)
DUMP = Dump("/backups/shop.dump", DumpFormat.CUSTOM, DumpStatus.COMPLETE, 4096, T0 - 600, "shop", "15.1",
            time_resolution=1.0)
BACKUPS = BackupsResult(
    "shop", (SourceResult("nightly", "/backups/*.dump", (DUMP,), 1),),
    Archiver("on", 10, "000000010000000000000009", T0 - 60, 2, "000000010000000000000005", T0 - 120), DEPLOY)
EMERGENCIES = EmergenciesResult(("Item", "Stock"), (), {"Item": 0, "Stock": 1}, {"Item": 0, "Stock": 500}, 1, T0 - 60,
                                (), True, 1, (AppearedDrift(DRIFT[0], T0 - 60),))
WATCH = DeployResult(DEPLOY, ("Stock",), (TableLatency("Stock", Totals(100, 50.0), Totals(10, 40.0)),), T0 - 300)
UP = PollResult("shop", True, T0, 2.5, True, None, CHECKS, CONSTRAINTS, MIGRATIONS,
                privileges=Privileges("monitor", False, False, ()), backups=BACKUPS, emergencies=EMERGENCIES,
                deploy=WATCH)
HEALTHY = PollResult("shop", True, T0, 0.5, False, None, CHECKS[1:2], CONSTRAINTS[:1],
                     privileges=Privileges("monitor", False, False, ()))
DOWN = PollResult("shop", False, T0, 5.0, False, "connection refused", down_reason=DownReason.CONNECT_FAILED)


# -- /metrics --------------------------------------------------------------------------------------

def test_every_family_is_built_as_declared():
    declared = {spec.name: spec for spec in METRICS}
    families = families_for(UP)
    for family in families:
        spec = declared[family.name]
        assert (family.type, family.documentation) == (spec.type, spec.documentation)
        assert all(set(s.labels) == set(spec.labels) for s in family.samples), family.name
    # the reasons are rendered instead of what they explain
    reasons = {"venzory_db_down_reason", "venzory_db_deploy_latency_unavailable"}
    poll_metrics = {spec.name for spec in METRICS if spec.from_poll} - reasons
    assert {f.name for f in families} == poll_metrics, "a full result renders every poll metric"


def test_backups_emergencies_and_the_deploy_watch_render_their_numbers():
    text = exposition(UP)
    db = {"database": "shop"}
    assert value(text, "venzory_db_backup_files", **db, source="nightly", status="complete") == 1
    assert value(text, "venzory_db_backup_files", **db, source="nightly", status="wrong_database") == 0
    assert value(text, "venzory_db_backup_newest_complete_timestamp_seconds", **db, source="nightly") == T0 - 600
    assert value(text, "venzory_db_backup_newest_complete_size_bytes", **db, source="nightly") == 4096
    # the dump was taken long before the deploy; a deploy older than every dump has none before it
    assert value(text, "venzory_db_backup_before_last_deploy_age_seconds", **db) == FINISHED.timestamp() - (T0 - 600)
    early = replace(BACKUPS, last_deploy=Deploy(("1_init",), datetime(2020, 1, 1, tzinfo=UTC), FINISHED))
    assert value(exposition(replace(UP, backups=early)), "venzory_db_backup_before_last_deploy_age_seconds",
                 **db) == float("inf")
    assert value(text, "venzory_db_wal_archive_failed_total", **db) == 2
    assert value(text, "venzory_db_wal_last_archived_timestamp_seconds", **db) == T0 - 60
    assert value(text, "venzory_db_table_rows_lost_total", **db, table="Stock") == 500
    assert value(text, "venzory_db_table_mass_deletes_total", **db, table="Item") == 0
    assert value(text, "venzory_db_migration_history_rewrites_total", **db) == 1
    assert value(text, "venzory_db_schema_drift_appeared_timestamp_seconds", **db, source="migrations",
                 kind="extra_column", object="Item.legacy") == T0 - 60
    assert value(text, "venzory_db_last_deploy_info", **db, migration="1_init") == 1
    assert value(text, "venzory_db_deploy_write_mean_seconds", **db, table="Stock", phase="before") == 0.0005
    assert value(text, "venzory_db_deploy_write_mean_seconds", **db, table="Stock", phase="after") == 0.004
    assert value(text, "venzory_db_deploy_write_calls", **db, table="Stock", phase="after") == 10
    unavailable = replace(UP, deploy=DeployResult(DEPLOY, ("Stock",), unavailable=Unavailable.EXTENSION_MISSING))
    text = exposition(unavailable)
    assert value(text, "venzory_db_deploy_latency_unavailable", **db, reason="extension_missing") == 1
    assert value(text, "venzory_db_deploy_write_calls", **db, table="Stock", phase="after") is None
    assert value(text, "venzory_db_last_deploy_info", **db, migration="1_init") == 1


def test_a_full_result_renders_its_numbers():
    text = exposition(UP)
    db = {"database": "shop"}
    assert value(text, "venzory_db_up", **db) == 1
    assert value(text, "venzory_db_last_poll_timestamp_seconds", **db) == T0 + 2.5
    assert value(text, "venzory_db_check_violations", **db, check="stock_non_negative", table="Stock",
                 category="negative_inventory", severity="critical") == 3
    assert value(text, "venzory_db_check_violations", **db, check="order_sent_at", table="Order",
                 category="status_timestamp", severity="warning") is None, "a failed check has no count"
    assert value(text, "venzory_db_check_success", **db, check="order_sent_at") == 0
    assert value(text, "venzory_db_check_guarded", **db, check="item_names") == 1
    assert value(text, "venzory_db_duplicate_groups", **db, check="item_names", table="Item") == 0
    assert value(text, "venzory_db_constraint_valid", **db, table="Item", constraint="Item_name_key",
                 kind="unique", severity="warning") == 0
    assert value(text, "venzory_db_role_can_write", **db) == 0
    assert value(text, "venzory_db_migrations", **db, state="pending") == 1
    assert value(text, "venzory_db_migration_info", **db, migration="2_harden", state="pending") == 1
    assert value(text, "venzory_db_migration_info", **db, migration="1_init", state="applied") is None
    assert value(text, "venzory_db_last_migration_finished_timestamp_seconds", **db) == FINISHED.timestamp()
    assert value(text, "venzory_db_deploy_prediction", **db, outcome="fails") == 1
    assert value(text, "venzory_db_deploy_prediction", **db, outcome="passes") == 0
    assert value(text, "venzory_db_deploy_failing_rows", **db, migration="2_harden", statement="2", table="Stock") == 3
    assert value(text, "venzory_db_deploy_rows", **db, migration="2_harden", effect="rows_updated") == 5
    assert value(text, "venzory_db_deploy_rows", **db, migration="3_later", effect="rows_updated") is None
    assert value(text, "venzory_db_deploy_lock_rows", **db, migration="2_harden", statement="1", table="Stock",
                 lock="ROW EXCLUSIVE") == 40
    assert value(text, "venzory_db_prisma_status", **db, status="pending") == 1
    assert value(text, "venzory_db_migration_baseline_unresolved", **db) == 0
    assert value(text, "venzory_db_migrations_part_success", **db, part="preflight") == 1


def test_drift_counts_are_complete_and_item_series_capped():
    text = exposition(UP)

    def series(name: str, *labels: str) -> dict[tuple[str, ...], float]:
        return {tuple(dict(found)[label] for label in labels): v
                for (n, *found), v in samples(text).items() if n == name}

    counts = series("venzory_db_schema_drift_items", "source", "kind", "acknowledged")
    assert len(counts) == len(DriftSource) * len(DriftKind) * 2, "every source x kind x acknowledged, 0 included"
    assert counts[("migrations", "extra_column", "false")] == 1
    assert counts[("schema_prisma", "missing_index", "true")] == 1
    assert sum(counts.values()) == 2
    items = series("venzory_db_schema_drift_item", "source", "kind", "object", "acknowledged")
    assert list(items) == [("migrations", "extra_column", "Item.legacy", "false")], "capped at max_drift_series=1"


def test_a_down_database_has_its_reason_and_no_stale_series():
    text = exposition(DOWN)
    assert value(text, "venzory_db_up", database="shop") == 0
    assert value(text, "venzory_db_down_reason", database="shop", reason="connect_failed") == 1
    assert {f.name for f in families_for(DOWN)} == {
        "venzory_db_up", "venzory_db_last_poll_timestamp_seconds", "venzory_db_poll_duration_seconds",
        "venzory_db_poll_full_scan", "venzory_db_down_reason"}


def test_two_databases_share_one_family_per_metric():
    text = exposition(UP, replace(DOWN, database="warehouse"))
    assert text.count("# TYPE venzory_db_up gauge") == 1
    assert value(text, "venzory_db_up", database="shop") == 1
    assert value(text, "venzory_db_up", database="warehouse") == 0


def test_a_rendered_body_is_reused_only_while_nothing_it_counts_changed():
    # issue 14: a burst of scrapes costs one render, but never shows a count a moment old
    store = ResultStore(["shop"])
    store.put(UP)
    counters = EventCounters()
    counters.precreate(["http"], ["shop"], KnownNames())
    endpoint = MetricsEndpoint(store, counters)
    _, first = endpoint.body(None)
    assert endpoint.body(None)[1] is first  # nothing changed: the same bytes, not a render
    store.count_skipped("shop")
    _, after_skip = endpoint.body(None)
    assert value(after_skip.decode(), "venzory_db_polls_skipped_total", database="shop") == 1
    counters.reject_request("http", "rate_limited")
    _, after_event = endpoint.body(None)
    assert value(after_event.decode(), "venzory_db_events_rejected_total", source="http", reason="rate_limited") == 1
    store.put(replace(UP, duration=9.0))
    assert value(endpoint.body(None)[1].decode(), "venzory_db_poll_duration_seconds", database="shop") == 9.0
    _, gzipped = endpoint.body(None, gzipped=True)
    assert gzip.decompress(gzipped).startswith(b"# HELP")



def test_the_event_counters_are_rendered_again_only_after_they_changed(monkeypatch):
    # issue 14, item 9: with 10,000 event series a render per scrape cost ~100 ms
    monkeypatch.setattr("exporter.metrics.endpoint.REUSE_SECONDS", 0.0)  # every scrape renders
    store = ResultStore(["shop"])
    store.put(UP)
    counters = EventCounters()
    counters.precreate(["http"], ["shop"], KnownNames())
    collected = []
    collect = counters.collect
    monkeypatch.setattr(counters, "collect", lambda: collected.append(1) or collect())
    endpoint = MetricsEndpoint(store, counters)
    for _ in range(3):
        text = endpoint.body(None)[1].decode()
    assert len(collected) == 1  # three scrapes, one render of the counters
    assert text.count("# TYPE venzory_db_events_received_total counter") == 1
    assert value(text, "venzory_db_events_received_total", source="http") == 0
    counters.reject_request("http", "rate_limited")
    text = endpoint.body(None)[1].decode()
    assert len(collected) == 2
    assert value(text, "venzory_db_events_rejected_total", source="http", reason="rate_limited") == 1
    om = endpoint.body("application/openmetrics-text; version=1.0.0")[1].decode()
    assert len(collected) == 3 and om.endswith("# EOF\n") and om.count("# EOF") == 1


# -- verify ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("results, allow_pending, code", [
    ([HEALTHY], False, EXIT_OK),
    ([UP], False, EXIT_PROBLEMS),
    ([HEALTHY, DOWN], False, EXIT_CANNOT_RUN),
    ([replace(HEALTHY, migrations=MigrationsResult(HISTORY, parts=(Part.HISTORY,)))], False, EXIT_PROBLEMS),
    ([replace(HEALTHY, migrations=MigrationsResult(HISTORY, parts=(Part.HISTORY,)))], True, EXIT_OK),
], ids=["healthy", "problems", "unreachable", "pending", "pending allowed"])
def test_exit_code(results, allow_pending, code):
    assert exit_code(results, allow_pending=allow_pending) == code
    assert json.loads(render_json(results, allow_pending=allow_pending))["ok"] is (code == EXIT_OK)


def test_verify_json_follows_the_contract():
    (db,) = json.loads(render_json([UP]))["databases"]
    assert {c["name"]: (c["status"], c["violations"], c["reason"]) for c in db["checks"]} == {
        "stock_non_negative": ("violated", 3, None), "item_names": ("ok", 0, None),
        "order_sent_at": ("failed", None, "timeout")}
    assert db["migrations"] == {"managed": True, "states": {
        "applied": 1, "pending": 1, "failed": 0, "rolled_back": 0, "modified": 0, "missing_from_folder": 0},
        "items": [{"name": "2_harden", "state": "pending", "detail": ""}]}
    assert [(d["source"], d["kind"], d["acknowledged"]) for d in db["drift"]] == [
        ("migrations", "extra_column", False), ("schema_prisma", "missing_index", True)]
    deploy = db["deploy"]
    assert (deploy["outcome"], deploy["prisma_status"]) == ("fails", "pending")
    assert (deploy["failure"]["migration"], deploy["failure"]["number"], deploy["failure"]["offending_rows"]) == (
        "2_harden", 2, 3)
    assert [(m["name"], m["outcome"], m["rows_updated"]) for m in deploy["migrations"]] == [
        ("2_harden", "fails", 5), ("3_later", "not_reached", 0)]
    assert db["privileges"]["can_write"] is False and db["duration_seconds"] == 2.5


def test_verify_text_says_what_is_wrong_and_hides_the_password():
    text = render_text([UP, DOWN], {"shop": CONFIG.databases[0].dsn})
    assert "secret" not in text
    lines = text.splitlines()
    assert "  ✘ stock_non_negative (Stock): 3 rows [negative_inventory, critical]" in lines
    assert "  ✔ item_names (Item): no violations - guarded by Item_name_key" in lines
    assert "  ! order_sent_at (Order): check failed [timeout]: canceling statement" in lines
    assert "  ✘ Item.Item_name_key (unique): not_valid - index is invalid" in lines
    assert "      pending: 2_harden" in lines
    assert ("  ✘ prisma migrate deploy, predicted statement by statement: deploy will fail at 2_harden statement 2 "
            "(line 4): check constraint \"check_quantity\" of relation \"Stock\" is violated, 3 rows") in lines
    assert "      passes: 3_later" not in lines and "      not_reached: 3_later" in lines
    assert "  ✔ [schema_prisma] missing_index Item_sku_idx: index missing (acknowledged)" in lines
    assert "  ! cannot connect: connection refused" in lines
    assert lines[-1] == ("✘ Summary: 1/3 checks healthy, 1 violated (3 rows), 1 failed, "
                         "1 constraint missing or not valid, 3 migration/drift problems, unreachable: shop")
