"""The checks against a real PostgreSQL built from the project's Prisma fixture:
exact numbers on a database with seeded problems, zero on a hardened clean one."""

from __future__ import annotations

import psycopg
import pytest

from exporter.config import load_config
from support import poll_once
from venzory_fixture import PROBLEM_DUPLICATES, PROBLEM_VIOLATIONS, SHIPPED_CONFIG as SHIPPED, build_database


def shipped_config(dsn: str):
    return load_config(SHIPPED, env={"DATABASE_URL": dsn})


def poll(dsn: str, *, full_scan: bool | None = None):
    config = shipped_config(dsn)
    return poll_once(config, full_scan=full_scan)


def by_name(result):
    return {c.check.name: c for c in result.checks}


def test_every_check_is_covered_by_the_ground_truth(problems_dsn):
    names = {c.name for c in shipped_config(problems_dsn).checks}
    assert names == set(PROBLEM_VIOLATIONS) | set(PROBLEM_DUPLICATES)


@pytest.mark.parametrize("full_scan", [True, False], ids=["full_scan", "guarded"])
def test_problem_database_counts_are_exact(problems_dsn, full_scan):
    result = poll(problems_dsn, full_scan=full_scan)
    assert result.up
    checks = by_name(result)
    counted = {name: checks[name].violations for name in PROBLEM_VIOLATIONS}
    assert counted == PROBLEM_VIOLATIONS
    duplicates = {name: (checks[name].groups, checks[name].violations) for name in PROBLEM_DUPLICATES}
    assert duplicates == PROBLEM_DUPLICATES
    for name, check in checks.items():
        expected = PROBLEM_VIOLATIONS.get(name, PROBLEM_DUPLICATES.get(name, (0, 0)))
        assert check.status == ("violated" if expected not in (0, (0, 0)) else "ok"), name


def test_problem_database_lacks_the_hardening_constraints(problems_dsn):
    result = poll(problems_dsn)
    missing = {(c.table, c.name) for c in result.constraints if not c.present}
    assert ("LocationInventory", "check_quantity_non_negative") in missing
    assert ("Item", "Item_practiceId_sku_key") in missing
    assert ("PracticeUser", "PracticeUser_practiceId_userId_key") not in missing  # from init
    assert not result.healthy()


def test_clean_hardened_database_is_all_zero_and_guarded(clean_dsn):
    guarded = poll(clean_dsn, full_scan=False)
    assert guarded.healthy(), guarded.problems()
    assert all(c.violations == 0 and c.guarded for c in guarded.checks), [
        c.check.name for c in guarded.checks if not c.guarded
    ]
    assert by_name(guarded)["location_inventory_negative_quantity"].guarded_by == "check_quantity_non_negative"
    assert by_name(guarded)["item_sku_duplicate"].guarded_by == "Item_practiceId_sku_key"
    assert all(c.present and c.valid for c in guarded.constraints)
    full = poll(clean_dsn, full_scan=True)
    assert full.healthy(), full.problems()
    assert not any(c.guarded for c in full.checks)


def test_full_scan_finds_what_a_guard_cannot_promise(pg_server):
    # Rows loaded with triggers off (a restore, a replica) bypass foreign keys: the
    # catalog says "guarded", only reading the table tells the truth.
    dsn = build_database(pg_server, "checks_replica_load", seed="clean")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("""UPDATE "Order" SET "createdById" = 'no-such-user'
                        WHERE id = (SELECT id FROM "Order" WHERE "createdById" IS NOT NULL LIMIT 1)""")
    assert by_name(poll(dsn, full_scan=False))["order_created_by_orphan"].violations == 0
    full = by_name(poll(dsn, full_scan=True))["order_created_by_orphan"]
    assert (full.violations, full.guarded) == (1, False)


def test_not_valid_constraint_is_present_but_not_valid_and_guards_nothing(pg_server):
    dsn = build_database(pg_server, "checks_not_valid", seed="clean")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('ALTER TABLE "LocationInventory" DROP CONSTRAINT check_quantity_non_negative')
        conn.execute('UPDATE "LocationInventory" SET quantity = -7 WHERE ctid = (SELECT min(ctid) FROM "LocationInventory")')
        conn.execute('ALTER TABLE "LocationInventory" ADD CONSTRAINT check_quantity_non_negative '
                     'CHECK (quantity >= 0) NOT VALID')
    result = poll(dsn, full_scan=False)
    check = by_name(result)["location_inventory_negative_quantity"]
    assert (check.violations, check.guarded) == (1, False)
    constraint = next(c for c in result.constraints if c.name == "check_quantity_non_negative")
    assert (constraint.present, constraint.valid) == (True, False)
    assert "NOT VALID" in constraint.detail


def test_a_bad_check_fails_alone(pg_server, problems_dsn):
    config = shipped_config(problems_dsn)
    broken = config.checks[0].model_copy(update={"name": "broken_rule", "rule": '"noSuchColumn" > 0'})
    config = config.model_copy(update={"checks": [broken, *config.checks]})
    checks = by_name(poll_once(config, full_scan=True))
    assert (checks["broken_rule"].status, checks["broken_rule"].reason) == ("failed", "missing_column")
    assert "noSuchColumn" in checks["broken_rule"].error
    # Same table, same pass: the others still get their exact numbers.
    assert checks["location_inventory_negative_quantity"].violations == PROBLEM_VIOLATIONS["location_inventory_negative_quantity"]
    assert all(c.status != "failed" for n, c in checks.items() if n != "broken_rule")


def test_an_older_database_fails_the_checks_it_cannot_answer(pg_server):
    # Before the receiving module (step 3) there is no GoodsReceipt at all.
    dsn = build_database(pg_server, "checks_old", upto="20251106200124_add_gs1_foundation", seed=None)
    checks = by_name(poll(dsn, full_scan=True))
    receipt = checks["goods_receipt_confirmed_has_received_at"]
    assert (receipt.status, receipt.reason) == ("failed", "missing_table")
    assert 'table "GoodsReceipt" does not exist' == receipt.error
    assert checks["location_inventory_negative_quantity"].status == "ok"


def test_orphans_of_a_parent_without_unique_key_do_not_multiply_other_counts(pg_server):
    # A reference to a column that is not unique (a broken or legacy schema): the join must
    # not count a child row once per matching parent row.
    from exporter.config import Config

    dsn = pg_server.create_database("checks_non_unique_parent")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE parent (k text)")
        conn.execute("INSERT INTO parent VALUES ('a'), ('a'), ('a'), ('b')")
        conn.execute("CREATE TABLE child (ref text, qty int)")
        conn.execute("INSERT INTO child VALUES ('a', -1), ('a', 1), ('b', -2), ('gone', -3), (NULL, 4)")
    config = Config.model_validate({
        "databases": [{"name": "main", "dsn": dsn}],
        "checks": [
            {"name": "child_orphan", "kind": "orphan", "table": "child", "column": "ref",
             "references": {"table": "parent", "column": "k"}, "category": "orphaned_reference", "severity": "warning"},
            {"name": "child_qty", "kind": "row", "table": "child", "rule": "qty >= 0",
             "category": "invalid_quantity", "severity": "warning"},
        ],
    })
    result = poll_once(config, full_scan=True)
    assert {c.check.name: c.violations for c in result.checks} == {"child_orphan": 1, "child_qty": 3}
