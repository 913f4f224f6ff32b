"""Config: validated once, errors name the file, the line, the key path and the problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config
from support import REPO

SHIPPED = REPO / "config" / "venzory.yaml"
CATEGORIES = {
    "negative_inventory", "invalid_quantity", "same_location_transfer", "status_timestamp",
    "negative_price", "invalid_reorder_setting", "invalid_min_order_qty", "orphaned_reference", "duplicate",
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exporter.yaml"
    path.write_text(text)
    return path


def error_of(path: Path, env: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return str(info.value)


MINIMAL = """\
databases:
  - name: main
    dsn: postgresql://monitor:s3cret@db/venzory
"""


def test_shipped_config_is_the_runbooks():
    config = load_config(SHIPPED, env={"DATABASE_URL": "postgresql://u:p@h/db"})
    assert config.databases[0].dsn == "postgresql://u:p@h/db"
    assert {c.category for c in config.checks} == CATEGORIES
    critical_checks = {c.name for c in config.checks if c.severity == "critical"}
    assert critical_checks == {"location_inventory_negative_quantity"}
    critical = {(c.table, c.name) for c in config.constraints if c.critical}
    assert critical == {
        ("LocationInventory", "check_quantity_non_negative"), ("Item", "Item_practiceId_name_key"),
        ("Item", "Item_practiceId_sku_key"), ("Location", "Location_practiceId_code_key"),
        ("PracticeUser", "PracticeUser_practiceId_userId_key"),
    }
    assert len([c for c in config.constraints if c.kind == "check"]) == 17
    assert len([c for c in config.constraints if c.kind == "unique"]) == 6


def test_shipped_config_requires_database_url():
    message = error_of(SHIPPED)
    assert message.startswith(f"{SHIPPED}:")
    assert "databases[0].dsn: environment variable DATABASE_URL is not set" in message


def test_defaults_and_durations(tmp_path):
    config = load_config(write(tmp_path, MINIMAL + "    poll_interval: 2m\n    lock_timeout: 500ms\n"), env={})
    db = config.databases[0]
    assert (db.poll_interval, db.lock_timeout, db.full_scan_interval) == (120, 0.5, 86400)
    assert config.exporter.listen == "0.0.0.0:19187"


def test_variables_expand_with_defaults_and_escapes(tmp_path):
    path = write(tmp_path, "databases:\n  - name: main\n    dsn: ${DSN:-postgresql://h/x}$$\n")
    assert load_config(path, env={}).databases[0].dsn == "postgresql://h/x$"
    assert load_config(path, env={"DSN": "postgresql://a:b#:c@h/y"}).databases[0].dsn == "postgresql://a:b#:c@h/y$"


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("    bogus: 1\n", ":4: databases[0].bogus: unknown key"),
        ("    poll_interval: soon\n", ":4: databases[0].poll_interval: expected a duration like 30s, 5m, 24h, got 'soon'"),
        ("    poll_interval: -5\n", ":4: databases[0].poll_interval: a duration must be greater than zero"),
        ("    pool_size: many\n", ":4: databases[0].pool_size: Input should be a valid integer"),
        ("    checks: [nope]\n", "databases[0].checks[0]: no check named 'nope'"),
        ("exporter:\n  listen: nowhere\n", ":5: exporter.listen: expected HOST:PORT, got 'nowhere'"),
        ("checks:\n  - {name: a, kind: row, table: T, category: c, severity: high, rule: x}\n",
         ":5: checks[0].severity: Input should be 'critical' or 'warning'"),
        ("checks:\n  - {name: a, kind: row, table: T, category: c, severity: warning}\n", ":5: checks[0].rule: Field required"),
        ("checks:\n  - {name: a, kind: guess, table: T}\n", "checks[0]: Input tag 'guess' found using 'kind'"),
    ],
)
def test_errors_name_file_line_key_and_problem(tmp_path, extra, expected):
    path = write(tmp_path, MINIMAL + extra)
    message = error_of(path)
    assert message.startswith(str(path))
    assert expected in message


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, MINIMAL + "    bogus: 1\n    poll_interval: x\n")
    assert len(error_of(path).splitlines()) == 2


def test_duplicate_names_are_rejected(tmp_path):
    path = write(tmp_path, MINIMAL + "  - name: main\n    dsn: host=x\n")
    assert "databases: 'main' is defined twice" in error_of(path)


def test_unreadable_and_invalid_files(tmp_path):
    assert "cannot read" in error_of(tmp_path / "absent.yaml")
    assert ":2: invalid YAML" in error_of(write(tmp_path, "databases:\n  - name: a: b\n"))
    assert "expected a mapping" in error_of(write(tmp_path, "- 1\n"))


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True, env=env, timeout=60)


def test_check_config_exit_codes(tmp_path):
    good = run_cli("check-config", "--config", str(write(tmp_path, MINIMAL)))
    assert good.returncode == 0, good.stderr
    assert "ok (1 database," in good.stdout
    bad = run_cli("check-config", "--config", str(write(tmp_path, MINIMAL + "    bogus: 1\n")))
    assert bad.returncode == 2
    assert "databases[0].bogus: unknown key" in bad.stderr
    assert "s3cret" not in bad.stderr + bad.stdout


def test_check_config_validates_the_shipped_config_offline_by_default(tmp_path):
    """No --config, no DATABASE_URL (a laptop, a CI job): the shipped config is validated,
    and what could not be checked is said."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "PRISMA_", "SHADOW_"))}
    result = run_cli("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{SHIPPED}: ok (1 database, "), result.stdout
    assert "not checked: databases[0].dsn - ${DATABASE_URL} is not set here" in result.stdout
    assert "not checked: the databases themselves" in result.stdout
    # A real mistake still fails, with the variable unset too.
    bad = write(tmp_path, SHIPPED.read_text(encoding="utf-8").replace("poll_interval: 60s", "poll_interval: often"))
    result = run_cli("check-config", "--config", str(bad), env=env)
    assert result.returncode == 2 and "poll_interval" in result.stderr, result.stderr


def test_run_and_verify_still_require_the_variable():
    error = error_of(SHIPPED)
    assert "environment variable DATABASE_URL is not set" in error

