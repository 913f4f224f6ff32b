"""The expected schema: the Venzory migrations folder replayed on the test server (the
shadow server), compared with databases that really ran the migrations."""

from __future__ import annotations

import dataclasses
import shutil

import psycopg
import pytest

from exporter.migrations import shadow
from exporter.migrations.shadow import (
    BrokenFolder, ShadowError, expected_schema, expected_steps, folder_key, load_snapshot,
    read_scripts, read_snapshot, write_snapshot,
)
from exporter.schema.catalog import introspect
from exporter.schema.model import Schema
from venzory_fixture import MIGRATIONS, STEP_3, STEP_6, STEPS, build_database

UNREACHABLE = "host=127.0.0.1 port=1 dbname=nowhere connect_timeout=1"


@pytest.fixture(autouse=True)
def empty_cache():
    shadow.cache.clear()


def live_schema(dsn) -> Schema:
    with psycopg.connect(dsn) as conn:
        schema = introspect(conn)
    # Prisma's own bookkeeping table is not part of the app's schema.
    tables = {n: t for n, t in schema.tables.items() if n != "_prisma_migrations"}
    indexes = {n: i for n, i in schema.indexes.items() if i.table != "_prisma_migrations"}
    constraints = {k: c for k, c in schema.constraints.items() if k[0] != "_prisma_migrations"}
    return dataclasses.replace(schema, tables=tables, indexes=indexes, constraints=constraints)


def scratch_databases(pg_server) -> list[str]:
    with psycopg.connect(pg_server.admin_dsn) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'venzory\\_exporter\\_shadow\\_%'")
        return [name for (name,) in rows]


def test_expected_schema_equals_a_fully_migrated_database(pg_server):
    dsn = build_database(pg_server, "shadow_clean", seed="clean")
    expected = expected_schema(MIGRATIONS, pg_server.admin_dsn)
    assert len(expected.tables) == 20
    assert expected == live_schema(dsn)
    assert scratch_databases(pg_server) == []  # created, used, dropped


def test_second_call_is_served_from_the_cache(pg_server):
    first = expected_schema(MIGRATIONS, pg_server.admin_dsn)
    # No replay and no connection: an unreachable shadow server does not matter any more.
    assert expected_schema(MIGRATIONS, UNREACHABLE) is first
    assert shadow.cache.replays == 1


def test_a_changed_folder_is_replayed_again_but_not_a_crlf_checkout(pg_server, tmp_path):
    folder = shutil.copytree(MIGRATIONS, tmp_path / "migrations")
    first = expected_schema(folder, pg_server.admin_dsn)
    path = folder / STEP_3 / "migration.sql"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert expected_schema(folder, pg_server.admin_dsn) is first and shadow.cache.replays == 1
    (folder / "20251201000000_add_note").mkdir()
    (folder / "20251201000000_add_note" / "migration.sql").write_text('ALTER TABLE "Item" ADD COLUMN "note" TEXT;\n')
    changed = expected_schema(folder, pg_server.admin_dsn)
    assert shadow.cache.replays == 2 and changed.has_column("Item", "note") and not first.has_column("Item", "note")


def test_steps_are_the_schema_after_each_migration(pg_server):
    steps = expected_steps(MIGRATIONS, pg_server.admin_dsn)
    assert steps.names == STEPS
    assert steps.final == expected_schema(MIGRATIONS, pg_server.admin_dsn)
    at_step_6 = build_database(pg_server, "shadow_step6", upto=STEP_6)
    assert steps.after(STEP_6) == live_schema(at_step_6)
    assert steps.before(STEPS[0]) == Schema()
    assert expected_steps(MIGRATIONS, UNREACHABLE) is steps  # cached too
    assert steps.key == folder_key(read_scripts(MIGRATIONS))


def test_configured_shadow_database_is_reset_not_created(pg_server):
    dsn = pg_server.create_database("shadow_scratch")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE leftover (id int)")
    schema = expected_schema(MIGRATIONS, pg_server.admin_dsn, shadow_database="shadow_scratch")
    assert not schema.has_table("leftover") and len(schema.tables) == 20
    assert scratch_databases(pg_server) == []


def test_an_application_database_is_never_reset(pg_server):
    dsn = build_database(pg_server, "shadow_not_scratch", upto=STEP_3)
    with pytest.raises(ShadowError, match="refusing to reset"):
        expected_schema(MIGRATIONS, pg_server.admin_dsn, shadow_database="shadow_not_scratch")
    assert live_schema(dsn).has_table("GoodsReceipt")  # untouched


def test_a_folder_that_fails_to_replay_is_reported_once(pg_server, tmp_path):
    folder = shutil.copytree(MIGRATIONS, tmp_path / "migrations")
    (folder / STEP_3 / "migration.sql").write_text('ALTER TABLE "NoSuchTable" ADD COLUMN x int;\n')
    with pytest.raises(BrokenFolder, match=f"migration {STEP_3} fails on an empty shadow database"):
        expected_schema(folder, pg_server.admin_dsn)
    with pytest.raises(BrokenFolder):
        expected_schema(folder, pg_server.admin_dsn)
    assert shadow.cache.replays == 1  # the failure is cached until the folder changes
    assert scratch_databases(pg_server) == []


def test_a_connection_lost_during_the_replay_is_retried(pg_server, tmp_path):
    folder = shutil.copytree(MIGRATIONS, tmp_path / "migrations")
    (folder / STEP_3 / "migration.sql").write_text("SELECT pg_terminate_backend(pg_backend_pid());\n")
    for _ in range(2):
        for replay in (expected_schema, expected_steps):
            with pytest.raises(ShadowError) as error:
                replay(folder, pg_server.admin_dsn)
            assert not isinstance(error.value, BrokenFolder)
    assert shadow.cache.replays == 4  # nothing cached: the server may be fine next poll
    assert scratch_databases(pg_server) == []


def test_an_unreachable_shadow_server_is_retried(tmp_path):
    for attempt in (1, 2):
        with pytest.raises(ShadowError, match="cannot connect to the shadow server"):
            expected_schema(MIGRATIONS, UNREACHABLE)
        assert shadow.cache.replays == attempt  # not cached: it may be back next poll


def test_unreadable_folder_is_a_shadow_error(pg_server, tmp_path):
    with pytest.raises(ShadowError, match="not-there"):
        expected_schema(tmp_path / "not-there", pg_server.admin_dsn)


def test_snapshot_round_trip_equals_the_replay(pg_server, tmp_path):
    expected = expected_schema(MIGRATIONS, pg_server.admin_dsn)
    key = folder_key(read_scripts(MIGRATIONS))
    path = tmp_path / "expected.json"
    write_snapshot(expected, path, {"folder_key": key, "migrations": list(STEPS)})
    assert load_snapshot(path) == expected
    snapshot = read_snapshot(path)
    assert snapshot.folder_key == key and snapshot.meta["migrations"] == list(STEPS)
    assert [p.name for p in tmp_path.iterdir()] == ["expected.json"]  # no temporary file left


def test_a_bad_snapshot_is_a_shadow_error(tmp_path):
    path = tmp_path / "expected.json"
    path.write_text('{"format": 99}')
    with pytest.raises(ShadowError, match="not a format 1 snapshot"):
        load_snapshot(path)
    with pytest.raises(ShadowError, match="missing.json"):
        load_snapshot(tmp_path / "missing.json")
