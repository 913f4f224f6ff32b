"""A check's `rule` and `where` cannot carry a second statement (issue 14, item 6): they
are parsed as one expression by PostgreSQL's own parser at config validation, and every
check query is sent with the extended protocol, in which a second statement cannot run
even if config validation were bypassed - with a role that could write."""

from __future__ import annotations

import psycopg
import pytest

from exporter.checks.run import run_checks
from exporter.config import ConfigError, RowCheck, load_config
from exporter.db import execute_one
from exporter.schema.catalog import introspect

ATTACK = '1=1)) FROM "Item"; COMMIT; BEGIN READ WRITE; DROP TABLE "OrderTemplate"; COMMIT; SELECT ((1=1'

CONFIG = """
databases:
  - name: main
    dsn: postgresql://u@127.0.0.1/db
checks:
  - name: attack
    kind: {kind}
    table: Item
    category: test
    severity: warning
    {key}: {value}
    {extra}
"""


def _load(tmp_path, kind: str, key: str, value: str):
    extra = "columns: [name]" if kind == "duplicate" else ""
    path = tmp_path / "config.yml"
    path.write_text(CONFIG.format(kind=kind, key=key, value=value, extra=extra), encoding="utf-8")
    return load_config(path, env={})


@pytest.mark.parametrize("kind, key", [("row", "rule"), ("duplicate", "where")])
@pytest.mark.parametrize("value, problem", [
    (repr(ATTACK), "not one SQL expression"),
    ("'true; DROP TABLE x'", "several statements"),
    ("'quantity >= 0) IS FALSE) FROM x WHERE (true'", "not one SQL expression"),
    ("'(true) FROM \"Item\" WHERE (true)'", "it adds FROM, WHERE"),
    ("'true UNION SELECT true'", "set operation"),
    ("'a >= 0 -- the rest of the query'", "comment"),
    ("'a >= 0 /* */'", "comment"),
    ("'a, b'", "a list of values"),
    ("\"name <> '; DROP TABLE x; --'\"", None),  # a string holding ; and -- is one expression: accepted
])
def test_rule_and_where_must_be_one_expression(tmp_path, kind, key, value, problem):
    if problem is None:
        _load(tmp_path, kind, key, value)
        return
    with pytest.raises(ConfigError) as error:
        _load(tmp_path, kind, key, value)
    assert f"checks[0].{key}" in str(error.value) and problem in str(error.value)


def test_the_shipped_rules_are_all_one_expression():
    from venzory_fixture import SHIPPED_CONFIG

    config = load_config(SHIPPED_CONFIG, env={"DATABASE_URL": "postgresql://u@127.0.0.1/db"})
    assert any(isinstance(c, RowCheck) for c in config.checks)


def test_a_second_statement_never_runs_even_past_validation_with_a_writable_role(pg_server):
    dsn = pg_server.create_database("sql_attack")
    with psycopg.connect(dsn, autocommit=True) as conn:  # the admin role: it could drop tables
        conn.execute('CREATE TABLE "Item" (id int, quantity int)')
        conn.execute('CREATE TABLE "OrderTemplate" (id int)')
        conn.execute('INSERT INTO "Item" VALUES (1, 1)')
        # Bypass config validation: the query path must hold by itself.
        check = RowCheck.model_construct(name="attack", kind="row", table="Item", category="test",
                                         severity="warning", rule=ATTACK, timeout=None, constraint=None)
        [result] = run_checks(conn, [check], introspect(conn), use_guards=False)
        assert (result.status, result.reason) == ("failed", "sql_error")
        assert "syntax error" in result.error or "multiple commands" in result.error
        assert conn.execute("SELECT to_regclass('\"OrderTemplate\"') IS NOT NULL").fetchone()[0]
        # ...and the simple protocol would have run it: what execute_one guards against.
        with pytest.raises(psycopg.errors.SyntaxError):
            execute_one(conn, "SELECT 1; DROP TABLE \"OrderTemplate\"")
        assert conn.execute("SELECT to_regclass('\"OrderTemplate\"') IS NOT NULL").fetchone()[0]
