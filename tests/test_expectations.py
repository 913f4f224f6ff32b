"""Issue 9: the exporter follows the app as its schema evolves.

On real PostgreSQL, with the shipped config and the app's migrations folder and
schema.prisma, at every migration step of both fixture projects (the runbook-era
tests/fixtures/venzory and its later version tests/fixtures/venzory_next): no failed checks,
no constraint reported missing that exists under another name, no critical alert, only the
truth (pending where migrations are pending, stale config where the app dropped a table or
renamed a column). Planted violations under dropped, NOT VALID and renamed constraints are
counted exactly within one poll, configured and derived alike (truth: plain SQL of
tests/test_fixture_next.py). Bad inputs give a reason in verify, a metric and the log, and
every other check still runs.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import psycopg
import pytest
import yaml

import venzory_fixture as old
import venzory_next_fixture as nxt
from exporter.checks.constraints import DERIVED_CATEGORY, PROBLEMS, Status, plan
from exporter.config import load_config
from exporter.daemon import Daemon
from exporter.events.parse import facts_from_record
from exporter.migrations.replay import apply_migrations
from exporter.report import EXIT_OK, exit_code
from exporter.schema.meaning import check_key, unique_key
from exporter.schema.model import canonical_expression
from test_fixture_next import RECOUNT
from support import exposition, poll_once, samples
from venzory_fixture import SHIPPED_CONFIG

PROJECTS = {"old": old, "next": nxt}


def env_for(pg_server, dsn: str, project=nxt, **extra: str) -> dict[str, str]:
    return dict(DATABASE_URL=dsn, PRISMA_MIGRATIONS_DIR=str(project.MIGRATIONS),
                PRISMA_SCHEMA=str(project.SCHEMA_PRISMA), SHADOW_DATABASE_URL=pg_server.admin_dsn) | extra


def poll(env: dict, config=SHIPPED_CONFIG, *, full_scan: bool = False):
    return poll_once(load_config(config, env=env), full_scan=full_scan)


def served(result) -> dict:
    """{(name, (label, value), ...): value} of what /metrics serves for this poll."""
    return samples(exposition(result))


def series(name: str, **labels) -> tuple:
    return (name, *sorted(labels.items()))


def critical_alerts(result) -> list[str]:
    """What the shipped critical alerts would fire on (their expressions, evaluated on the
    served series): a critical constraint absent or not valid, critical violations."""
    firing = []
    for (name, *pairs), value in served(result).items():
        labels = dict(pairs)
        if labels.get("severity") != "critical":
            continue
        if name in ("venzory_db_constraint_present", "venzory_db_constraint_valid") and value == 0:
            firing.append(f"{name} {labels}")
        if name == "venzory_db_check_violations" and value > 0:
            firing.append(f"{name} {labels}")
    return firing


def write_config(tmp_path, edit) -> str:
    raw = yaml.safe_load(SHIPPED_CONFIG.read_text())
    edit(raw)
    path = tmp_path / "venzory.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


# -- Meaning ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("a, b", [
    ('"reorderPoint" IS NULL OR "reorderPoint" >= 0', 'CHECK (("reorderPoint" >= 0))'),
    ('CHECK ((("reorderPoint" IS NULL) OR ("reorderPoint" >= 0)))', '"reorderPoint" >= 0'),
    ('"status"::text <> \'PARTIALLY_RECEIVED\' OR "receivedAt" IS NOT NULL',
     'CHECK (((status <> \'PARTIALLY_RECEIVED\'::"OrderStatus") OR ("receivedAt" IS NOT NULL)))'),
    ('"quantity" > 0', 'CHECK ((quantity > 0)) NOT VALID'),
])
def test_same_rule_different_spelling(a, b):
    assert canonical_expression(a) == canonical_expression(b)


@pytest.mark.parametrize("a, b", [
    ('"a" IS NULL OR "b" > 0', '"b" > 0'),  # NULL in a would pass the first, not the second
    ('"x" IS NULL OR "x" > 0 OR "y" > 0', '"x" > 0 OR "y" > 0'),  # not one simple comparison
    ('"quantity" >= 0', '"quantity" > 0'),
])
def test_different_rules_stay_different(a, b):
    assert canonical_expression(a) != canonical_expression(b)


def test_unique_meaning_ignores_a_predicate_that_only_excludes_nulls():
    assert unique_key("Item", ["practiceId", "sku"], '("sku" IS NOT NULL)') == unique_key("Item", ["sku", "practiceId"], None)
    assert unique_key("Item", ["sku"], '"archived" = false') != unique_key("Item", ["sku"], None)
    assert check_key("Location", '"name" IS NOT NULL') == ("not_null", "Location", "name")


# -- Every migration step of both projects, clean data, shipped config -----------------------------

STEP_CASES = [("old", s) for s in old.STEPS] + [("next", s) for s in nxt.STEPS]


@pytest.mark.parametrize("project, step", STEP_CASES)
def test_every_step_of_both_projects_reports_only_the_truth(pg_server, project, step):
    fx = PROJECTS[project]
    index = fx.STEPS.index(step)
    last = index == len(fx.STEPS) - 1
    # The runbook-era clean seed needs every step; before that its tables are empty (clean).
    seed = "clean" if project == "next" or last else None
    dsn = fx.build_database(pg_server, f"expect_{project}_{index + 1}", upto=step, seed=seed)
    result = poll(env_for(pg_server, dsn, fx))
    assert result.up and not result.migrations.errors
    assert [c.check.name for c in result.checks if c.status != "ok"] == []  # 0 failed, 0 violated
    assert [(c.table, c.name, c.status, c.detail) for c in result.constraints if c.status in PROBLEMS] == []
    assert critical_alerts(result) == []
    assert exit_code([result], allow_pending=True) == EXIT_OK, result.problems(allow_pending=True)
    # pending only while migrations are pending, and each really added by one of them
    pending = {(c.table, c.name) for c in result.constraints if c.status == Status.PENDING}
    waiting = {n.check.name for n in result.not_run if n.status == Status.PENDING}
    assert bool(pending | waiting) <= (not last)
    if project == "old" and index < old.STEPS.index(old.STEP_3):  # GoodsReceiptLine arrives in step 3
        assert "goods_receipt_line_quantity_positive" in waiting
    if project == "old" and index < old.STEPS.index(old.STEP_9):
        assert ("LocationInventory", "check_quantity_non_negative") in pending
    # stale: only what the later app really dropped or renamed
    stale = {n.check.name for n in result.not_run if n.status == Status.STALE} | {
        (c.table, c.name) for c in result.constraints if c.status == Status.STALE}
    expected_stale = set()
    if project == "next" and index >= 1:  # SupplierCatalog dropped
        expected_stale |= {"supplier_catalog_unit_price_non_negative", "supplier_catalog_min_order_qty_positive",
                           ("SupplierCatalog", "check_unitPrice_non_negative"),
                           ("SupplierCatalog", "check_minOrderQty_positive")}
    if project == "next" and index >= 2:  # Order.supplierId renamed
        expected_stale.add("order_supplier_orphan")
    assert stale == expected_stale
    # renamed constraints are present under their real names
    if project == "next" and index >= nxt.STEPS.index(nxt.STEP_4):
        by_name = {(c.table, c.name): c for c in result.constraints}
        for (table, name), (_, actual) in nxt.RENAMED_CHECKS.items():
            assert (by_name[(table, name)].status, by_name[(table, name)].actual) == (Status.PRESENT, actual)
        assert by_name[("LocationInventory", "check_quantity_non_negative")].critical
    # every derived check was answered from the catalog: the data read is the config's
    derived = [c for c in result.checks if c.check.category == DERIVED_CATEGORY]
    assert derived and all(c.guarded for c in derived)


@pytest.mark.parametrize("project", ["old", "next"])
def test_verify_allow_pending_exits_0_on_the_final_state_and_lists_stale_config(pg_server, project):
    fx = PROJECTS[project]
    dsn = fx.build_database(pg_server, f"expect_verify_{project}", seed="clean")
    env = env_for(pg_server, dsn, fx)
    run = subprocess.run([sys.executable, "-m", "exporter", "verify", "--config", str(SHIPPED_CONFIG),
                          "--allow-pending"], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 failed, 0 constraints missing or not valid" in run.stdout
    if project == "next":
        assert ("✔ LocationInventory.check_quantity_non_negative (check, critical): present and valid as "
                "LocationInventory_quantity_check") in run.stdout
        assert ("⚠ check order_supplier_orphan: column Order.supplierId no longer exists "
                "(renamed to Order.practiceSupplierId?)") in run.stdout
        assert "3 stale config entries" not in run.stdout and "5 stale config entries" in run.stdout


# -- Planted violations, counted within one poll ---------------------------------------------------


def test_planted_violations_are_counted_exactly_within_one_poll(pg_server):
    dsn = nxt.build_database(pg_server, "expect_planted", seed="clean")
    env = env_for(pg_server, dsn)
    before = poll(env)
    assert all(c.status == "ok" for c in before.checks)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(nxt.SEEDS["problems"].read_text())
        truth = {name: conn.execute(sql).fetchone()[0] for name, sql in RECOUNT.items()}
    assert truth == {name: p["rows"] for name, p in nxt.PROBLEMS.items()}

    result = poll(env)  # the next poll after the change
    counted = {c.check.name: (c.violations, c.groups) for c in result.checks}
    # configured checks, their constraints renamed, then dropped or NOT VALID
    assert counted["location_inventory_negative_quantity"][0] == truth["dropped_check"]
    assert counted["order_item_quantity_positive"][0] == truth["not_valid_check"]
    assert counted["stock_adjustment_quantity_not_zero"][0] == truth["not_valid_new_check"]
    assert counted["item_name_duplicate"] == (truth["dropped_unique"], nxt.PROBLEMS["dropped_unique"]["groups"])
    # derived from the migrations: no config names them
    assert counted["Order.Order_practiceSupplierId_fkey"][0] == truth["dropped_fk_renamed_column"]
    assert counted["LocationInventory.LocationInventory_maxStock_check"][0] == truth["dropped_new_check"]
    assert counted["Location.Location_name_not_null"][0] == truth["dropped_not_null"]
    planted = {"location_inventory_negative_quantity", "order_item_quantity_positive",
               "stock_adjustment_quantity_not_zero", "item_name_duplicate", "Order.Order_practiceSupplierId_fkey",
               "LocationInventory.LocationInventory_maxStock_check", "Location.Location_name_not_null"}
    assert {n for n, (v, _) in counted.items() if v} == planted  # nothing else, nothing twice
    statuses = {(c.table, c.name): (c.status, c.actual, c.critical) for c in result.constraints}
    assert statuses[("LocationInventory", "check_quantity_non_negative")] == (Status.MISSING, None, True)
    assert statuses[("OrderItem", "check_quantity_positive")] == (Status.NOT_VALID, "OrderItem_quantity_check", False)
    assert statuses[("StockAdjustment", "check_quantity_not_zero")][:2] == (Status.NOT_VALID, "StockAdjustment_quantity_check")
    assert statuses[("Item", "Item_practiceId_name_key")] == (Status.MISSING, None, True)
    assert statuses[("Order", "Order_practiceSupplierId_fkey")][0] == Status.MISSING
    assert statuses[("LocationInventory", "LocationInventory_maxStock_check")][0] == Status.MISSING
    assert statuses[("Location", "Location_name_not_null")][0] == Status.MISSING
    # the served series say the same, and the critical ones page
    key = series("venzory_db_check_violations", database="venzory", check="Order.Order_practiceSupplierId_fkey",
                 table="Order", category=DERIVED_CATEGORY, severity="warning")
    assert served(result)[key] == truth["dropped_fk_renamed_column"]
    assert any("check_quantity_non_negative" in a for a in critical_alerts(result))


def test_a_full_scan_counts_the_config_but_still_answers_derived_rules_from_the_catalog(pg_server):
    dsn = nxt.build_database(pg_server, "expect_fullscan", seed="clean")
    result = poll(env_for(pg_server, dsn), full_scan=True)
    derived = [c for c in result.checks if c.check.category == DERIVED_CATEGORY]
    configured = [c for c in result.checks if c.check.category != DERIVED_CATEGORY]
    assert all(c.guarded for c in derived) and not any(c.guarded for c in configured)


def test_a_constraint_the_app_really_dropped_stays_missing(pg_server, tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(old.MIGRATIONS, folder)
    drop = folder / "20251120000000_drop_global_supplier_name_key"
    drop.mkdir()
    (drop / "migration.sql").write_text('-- DropIndex\nDROP INDEX "GlobalSupplier_name_key";\n')
    dsn = pg_server.create_database("expect_really_dropped")
    with psycopg.connect(dsn, autocommit=True) as conn:
        apply_migrations(conn, folder)
    result = poll(env_for(pg_server, dsn, old, PRISMA_MIGRATIONS_DIR=str(folder)))
    (entry,) = [c for c in result.constraints if c.name == "GlobalSupplier_name_key"]
    assert entry.status == Status.MISSING and "does not declare it under any name" in entry.detail
    assert not entry.critical and critical_alerts(result) == []
    dup = next(c for c in result.checks if c.check.name == "global_supplier_name_duplicate")
    assert dup.status == "ok" and not dup.guarded  # counted on the rows now
    assert exit_code([result], allow_pending=True) != EXIT_OK


# -- Bad input ------------------------------------------------------------------------------------------


def _part_success(result, part: str) -> float:
    return served(result)[series("venzory_db_migrations_part_success", database="venzory", part=part)]


def test_an_unreplayable_folder_is_reported_and_everything_else_runs(pg_server, tmp_path, caplog):
    folder = tmp_path / "migrations"
    shutil.copytree(nxt.MIGRATIONS, folder)
    broken = folder / "20251130000000_broken"
    broken.mkdir()
    (broken / "migration.sql").write_text('ALTER TABLE "NoSuchTable" ADD COLUMN "x" INTEGER;\n')
    dsn = nxt.build_database(pg_server, "expect_unreplayable", seed="clean")
    with caplog.at_level(logging.WARNING):
        result = poll(env_for(pg_server, dsn, PRISMA_MIGRATIONS_DIR=str(folder)))
    errors = dict(result.migrations.errors)
    assert "20251130000000_broken" in errors["expected_schema"] and "NoSuchTable" in errors["expected_schema"]
    assert _part_success(result, "expected_schema") == 0
    assert any("expected_schema" in r.getMessage() and "NoSuchTable" in r.getMessage() for r in caplog.records)
    assert any("migrations expected_schema" in p for p in result.problems(allow_pending=True))
    # every configured check still ran; schema.prisma still declares FKs, uniques, NOT NULLs
    assert [c.check.name for c in result.checks if c.status != "ok"] == []
    assert {c.source for c in result.constraints} == {"config", "schema_prisma"}


def test_an_unparsable_schema_prisma_is_reported_and_everything_else_runs(pg_server, tmp_path, caplog):
    half = tmp_path / "schema.prisma"
    half.write_text("model Item {\n  id String @id\n  name Str")
    dsn = nxt.build_database(pg_server, "expect_unparsable", seed="clean")
    with caplog.at_level(logging.WARNING):
        result = poll(env_for(pg_server, dsn, PRISMA_SCHEMA=str(half)))
    assert "line 3" in dict(result.migrations.errors)["schema_prisma"]
    assert _part_success(result, "schema_prisma") == 0
    assert any("schema_prisma" in r.getMessage() and "line 3" in r.getMessage() for r in caplog.records)
    assert [c.check.name for c in result.checks if c.status != "ok"] == []
    assert any(c.source == "migrations" for c in result.constraints)


def test_config_naming_constraints_that_exist_nowhere(pg_server, tmp_path, caplog):
    def edit(raw):
        raw["constraints"] += [{"table": "Item", "name": "Item_barcode_key", "kind": "unique"},
                               {"table": "Warehouse", "name": "Warehouse_code_key", "kind": "unique"}]
    config = write_config(tmp_path, edit)
    dsn = nxt.build_database(pg_server, "expect_nowhere", seed="clean")
    with caplog.at_level(logging.WARNING):
        result = poll(env_for(pg_server, dsn), config)
    by_name = {(c.table, c.name): c for c in result.constraints}
    ghost, gone = by_name[("Item", "Item_barcode_key")], by_name[("Warehouse", "Warehouse_code_key")]
    assert ghost.status == Status.MISSING and "does not declare it under any name" in ghost.detail
    assert gone.status == Status.STALE and gone.detail.startswith("table Warehouse no longer exists")
    exposed = served(result)
    assert exposed[series("venzory_db_constraint_present", database="venzory", table="Item",
                          constraint="Item_barcode_key", kind="unique", severity="warning")] == 0
    assert exposed[series("venzory_db_config_stale", database="venzory", entry="Warehouse_code_key",
                          table="Warehouse")] == 1
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "Item_barcode_key" in messages and "Warehouse_code_key" in messages
    assert [c.check.name for c in result.checks if c.status != "ok"] == []
    assert exit_code([result]) != EXIT_OK  # missing is a finding; stale alone would not be


def test_without_an_expected_schema_the_config_is_the_whole_expectation(pg_server):
    dsn = nxt.build_database(pg_server, "expect_config_only", seed="clean")
    cfg = load_config(SHIPPED_CONFIG, env=dict(DATABASE_URL=dsn))
    from exporter.schema.catalog import introspect
    with psycopg.connect(dsn) as conn:
        live = introspect(conn)
    expectations = plan(cfg.checks, cfg.constraints, live, None)
    assert expectations.derived == frozenset() and expectations.not_run == ()
    assert len(expectations.checks) == len(cfg.checks)
    statuses = {(c.table, c.name): c.status for c in expectations.constraints}
    # renamed ones are still found by meaning; a dropped table is simply missing (no stale without a source)
    assert statuses[("LocationInventory", "check_quantity_non_negative")] == Status.PRESENT
    assert statuses[("SupplierCatalog", "check_unitPrice_non_negative")] == Status.MISSING


# -- init-config ---------------------------------------------------------------------------------------


def test_init_config_writes_a_config_right_for_the_later_app(pg_server, tmp_path):
    dsn = nxt.build_database(pg_server, "expect_init_config", seed="clean")
    env = env_for(pg_server, dsn)
    out = tmp_path / "generated.yaml"
    made = subprocess.run([sys.executable, "-m", "exporter", "init-config", "--config", str(SHIPPED_CONFIG),
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=180)
    assert made.returncode == 0, made.stderr
    text = out.read_text()
    # where each entry came from
    assert ("# runbook (negative_inventory): guarded by LocationInventory_quantity_check "
            f"(migration {nxt.STEP_4})") in text
    assert "# left out: runbook check order_supplier_orphan - column Order.supplierId no longer exists" in text
    assert f"# from migration {nxt.STEP_4}" in text  # the app's own new CHECKs
    assert "# migration 20251118000000_init (runbook name: check_quantity_positive)" in text
    cfg = load_config(out, env=env)
    by_name = {(c.table, c.name): c for c in cfg.constraints}
    assert by_name[("LocationInventory", "LocationInventory_quantity_check")].critical
    assert "LocationInventory.LocationInventory_maxStock_check" in {c.name for c in cfg.checks}
    result = poll(env, out)
    assert result.not_run == () and not any(c.status == Status.STALE for c in result.constraints)
    assert exit_code([result]) == EXIT_OK, result.problems()
    assert all(c.actual == c.name for c in result.constraints if c.source == "config")  # no renames left


def test_a_constraint_defined_differently_is_reported_and_its_expected_rule_counted(pg_server):
    dsn = nxt.build_database(pg_server, "expect_differs", seed="clean")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('ALTER TABLE "LocationInventory" DROP CONSTRAINT "LocationInventory_maxStock_check"')
        conn.execute('ALTER TABLE "LocationInventory" ADD CONSTRAINT "LocationInventory_maxStock_check" '
                     'CHECK ("maxStock" > -10)')
        conn.execute("""UPDATE "LocationInventory" SET "maxStock" = -5 WHERE ("locationId", "itemId") =
                        (SELECT "locationId", "itemId" FROM "LocationInventory" WHERE "reorderPoint" IS NULL
                         ORDER BY 1, 2 LIMIT 1)""")
        truth = conn.execute('SELECT count(*) FROM "LocationInventory" WHERE "maxStock" <= 0').fetchone()[0]
    result = poll(env_for(pg_server, dsn))
    (entry,) = [c for c in result.constraints if c.name == "LocationInventory_maxStock_check"]
    assert (entry.status, entry.source) == (Status.DIFFERS, "migrations")
    check = next(c for c in result.checks if c.check.name == "LocationInventory.LocationInventory_maxStock_check")
    assert (check.violations, check.guarded) == (truth, False) and truth == 1


# -- Prisma error events of a renamed constraint ----------------------------------------------------


def test_events_of_a_renamed_critical_constraint_count_under_its_configured_name(pg_server):
    """The app reports `LocationInventory_quantity_check`; the critical alert on Prisma errors
    selects `check_quantity_non_negative` (the rule): the daemon counts the one as the other."""
    dsn = nxt.build_database(pg_server, "expect_events_alias", seed="clean")
    config = load_config(SHIPPED_CONFIG, env=env_for(pg_server, dsn))
    daemon = Daemon(config, "127.0.0.1:0")
    try:
        daemon.on_result(poll(env_for(pg_server, dsn)))
        resolver = daemon.events.sink.resolver("venzory")
        assert resolver.known.aliases["LocationInventory_quantity_check"] == "check_quantity_non_negative"
        sample = next(line for line in (old.FIXTURE.parent.parent / "prisma_app" / "samples" / "prisma7-pino.jsonl")
                      .read_text().splitlines() if "check_quantity_non_negative" in line)
        renamed = json.loads(sample.replace("check_quantity_non_negative", "LocationInventory_quantity_check"))
        labels = resolver.classify(facts_from_record(renamed))
        assert (labels.kind, labels.constraint) == ("check", "check_quantity_non_negative")
    finally:
        daemon.stop()  # never started, but its HTTP server's workers exist from the constructor


def test_with_schema_prisma_only_a_column_the_database_lacks_is_drift_not_a_failure(pg_server):
    """schema.prisma is the app's final intent; a database before the runbook's step 11 lacks
    LocationInventory.createdAt (the known drift, acknowledged in the shipped config): it is
    reported as drift only - no failed check, no missing expectation, verify exits 0."""
    dsn = old.build_database(pg_server, "expect_prisma_only", upto=old.STEP_10)
    result = poll(dict(DATABASE_URL=dsn, PRISMA_SCHEMA=str(old.SCHEMA_PRISMA)))
    assert [c.check.name for c in result.checks if c.status != "ok"] == []
    assert "LocationInventory_createdAt_not_null" not in {c.name for c in result.constraints}
    assert any(c.source == "schema_prisma" for c in result.constraints)
    (drift,) = [d for d in result.migrations.drift if d.object == "LocationInventory.createdAt"]
    assert drift.acknowledged
    assert exit_code([result]) == EXIT_OK, result.problems()


def test_a_snapshot_is_an_expected_schema_too(pg_server, tmp_path):
    from exporter.migrations.shadow import expected_schema, write_snapshot

    dsn = nxt.build_database(pg_server, "expect_snapshot", seed="clean")
    snapshot = tmp_path / "expected.json"
    write_snapshot(expected_schema(nxt.MIGRATIONS, pg_server.admin_dsn), snapshot, {})
    result = poll(env_for(pg_server, dsn, SHADOW_DATABASE_URL="", SCHEMA_SNAPSHOT=str(snapshot)))
    assert {c.source for c in result.constraints} == {"config", "snapshot"}
    assert [c for c in result.constraints if c.status in PROBLEMS] == []
    assert {n.check.name for n in result.not_run} == {"supplier_catalog_unit_price_non_negative",
                                                       "supplier_catalog_min_order_qty_positive", "order_supplier_orphan"}
    assert exit_code([result]) == EXIT_OK, result.problems()
