"""`verify`: the CI gate that replaces `npm run db:verify-all`. Exit codes and outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys


from venzory_fixture import PROBLEM_DUPLICATES, PROBLEM_VIOLATIONS, SHIPPED_CONFIG


def verify(dsn: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DATABASE_URL=dsn)
    return subprocess.run(
        [sys.executable, "-m", "exporter", "verify", "--config", str(SHIPPED_CONFIG), *args],
        env=env, capture_output=True, text=True, timeout=120,
    )


def test_clean_database_passes(clean_dsn):
    result = verify(clean_dsn)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✘" not in result.stdout
    assert "✔ Summary: 30/30 checks healthy" in result.stdout


def test_problems_fail_with_counts_and_sql(problems_dsn):
    result = verify(problems_dsn)
    assert result.returncode == 1, result.stderr
    n = PROBLEM_VIOLATIONS["location_inventory_negative_quantity"]
    assert f"✘ location_inventory_negative_quantity (LocationInventory): {n} rows [negative_inventory, critical]" in result.stdout
    assert 'inspect: SELECT * FROM "LocationInventory" WHERE ("quantity" >= 0) IS FALSE;' in result.stdout
    groups, rows = PROBLEM_DUPLICATES["item_name_duplicate"]
    assert f"✘ item_name_duplicate (Item): {rows} rows in {groups} duplicate groups" in result.stdout
    assert "✘ LocationInventory.check_quantity_non_negative (check, critical): missing" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("✘ Summary:")


def test_json_output_is_the_documented_contract(problems_dsn):
    result = verify(problems_dsn, "--json", "--full-scan")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    (database,) = report["databases"]
    assert {"name", "up", "checks", "constraints"} <= set(database)
    assert (database["name"], database["up"]) == ("venzory", True)
    checks = {c["name"]: c for c in database["checks"]}
    for check in checks.values():
        assert {"name", "table", "category", "severity", "violations", "groups", "status", "guarded", "error"} <= set(check)
    assert {n: checks[n]["violations"] for n in PROBLEM_VIOLATIONS} == PROBLEM_VIOLATIONS
    assert {n: (checks[n]["groups"], checks[n]["violations"]) for n in PROBLEM_DUPLICATES} == PROBLEM_DUPLICATES
    assert checks["location_inventory_negative_quantity"]["status"] == "violated"
    assert checks["order_item_quantity_positive"]["groups"] is None
    for constraint in database["constraints"]:
        assert set(constraint) >= {"table", "name", "kind", "present", "valid", "critical"}


def test_unreachable_database_cannot_run():
    result = verify("postgresql://monitor:hunter22@127.0.0.1:1/venzory?connect_timeout=1")
    assert result.returncode == 2
    assert "cannot connect" in result.stdout
    assert "hunter22" not in result.stdout + result.stderr
    assert "password=***" in result.stdout


def test_bad_config_cannot_run(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("databases: []\n")
    result = subprocess.run([sys.executable, "-m", "exporter", "verify", "--config", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"{bad}:1: databases: List should have at least 1 item" in result.stderr
