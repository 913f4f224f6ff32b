"""Migration history: the pure classification, then the real `_prisma_migrations` of
databases built from the Venzory fixture, tampered with the ways production gets tampered."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, UTC

import psycopg
import pytest

from exporter.migrations.checksum import checksum
from exporter.migrations.history import (
    FolderEntry, MigrationState, MigrationRow, classify, read_history,
)
from exporter.migrations.replay import MigrationError, apply_migrations
from venzory_fixture import MIGRATIONS, STEP_3, STEP_7, STEPS, build_database

T0 = datetime(2025, 11, 5, 17, 14, tzinfo=UTC)
SQL = "CREATE TABLE t (id int);\n"


def row(name, text=SQL, *, finished=True, rolled_back=False, logs=None, minutes=0):
    at = T0 + timedelta(minutes=minutes)
    return MigrationRow(name, checksum(text), at, at if finished else None, at if rolled_back else None, logs)


def states(items):
    return {item.name: item.state for item in items}


# -- classify: pure -----------------------------------------------------------------------


def test_each_state_from_rows_and_folder():
    folder = [FolderEntry(n, SQL) for n in ("1_applied", "2_edited", "3_failed", "4_rolled_back", "5_pending")]
    folder[1] = FolderEntry("2_edited", SQL + "-- edited\n")
    rows = [row("1_applied"), row("2_edited"), row("3_failed", finished=False, logs="Database error code: 23505\n\nDatabase error:\nduplicate key\n"),
            row("4_rolled_back", finished=False, rolled_back=True), row("0_gone")]
    items = classify(rows, folder)
    assert states(items) == {"0_gone": MigrationState.MISSING_FROM_FOLDER, "1_applied": MigrationState.APPLIED, "2_edited": MigrationState.MODIFIED,
                             "3_failed": MigrationState.FAILED, "4_rolled_back": MigrationState.ROLLED_BACK, "5_pending": MigrationState.PENDING}
    assert [i.name for i in items] == sorted(states(items))  # Prisma's order: by name
    assert {i.name: i.detail for i in items}["3_failed"] == "Database error code: 23505: duplicate key"


def test_rolled_back_then_applied_again_is_applied():
    rows = [row("1_a", finished=False, rolled_back=True, minutes=0), row("1_a", minutes=5)]
    (item,) = classify(rows, [FolderEntry("1_a", SQL)])
    assert (item.state, item.finished_at) == (MigrationState.APPLIED, T0 + timedelta(minutes=5))


def test_a_failed_row_wins_over_an_applied_one():
    # deploy refuses to run (P3009) while any failed row is not rolled back
    rows = [row("1_a"), row("1_a", finished=False, minutes=1)]
    assert states(classify(rows, [FolderEntry("1_a", SQL)])) == {"1_a": MigrationState.FAILED}


def test_rolled_back_without_its_folder_is_not_missing():
    (item,) = classify([row("1_a", finished=False, rolled_back=True)], [])
    assert item.state == MigrationState.ROLLED_BACK and not item.in_folder and "nothing to re-apply" in item.detail


def test_line_endings_alone_are_not_a_modification_but_a_trailing_space_is():
    rows = [row("1_a", "A;\nB;\n"), row("2_b", "A;\nB;\n")]
    folder = [FolderEntry("1_a", "A;\r\nB;\r\n"), FolderEntry("2_b", "A;\nB; \n")]
    assert states(classify(rows, folder)) == {"1_a": MigrationState.APPLIED, "2_b": MigrationState.MODIFIED}


def test_without_a_folder_only_row_states_are_given():
    items = classify([row("1_a"), row("2_b", finished=False)], None)
    assert states(items) == {"1_a": MigrationState.APPLIED, "2_b": MigrationState.FAILED}


# -- read_history on real databases ---------------------------------------------------------


def read_only(dsn):
    """A session like the exporter's: every transaction read-only."""
    return psycopg.connect(dsn, autocommit=True, options="-c default_transaction_read_only=on")


def history_of(dsn, folder=MIGRATIONS):
    with read_only(dsn) as conn:
        return read_history(conn, folder)


def execute(dsn, sql, params=None):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql, params)


@pytest.fixture(scope="module")
def step6_dsn(pg_server):
    return build_database(pg_server, "history_step6", seed="problems")


@pytest.fixture
def full_dsn(pg_server, request):
    return build_database(pg_server, f"history_{request.node.name}")


def test_database_at_step_6_has_6_applied_and_5_pending(step6_dsn):
    history = history_of(step6_dsn)
    assert history.managed and history.folder_read
    assert history.counts == {MigrationState.APPLIED: 6, MigrationState.PENDING: 5, MigrationState.FAILED: 0, MigrationState.ROLLED_BACK: 0, MigrationState.MODIFIED: 0, MigrationState.MISSING_FROM_FOLDER: 0}
    assert set(history.counts) == set(MigrationState)
    assert history.pending_names == STEPS[6:]
    with psycopg.connect(step6_dsn) as conn:
        last = conn.execute("SELECT max(finished_at) FROM _prisma_migrations").fetchone()[0]
    assert history.last_finished_at == last
    assert history.summary == "6 applied, 5 pending"


def test_fully_migrated_database_has_everything_applied(full_dsn):
    history = history_of(full_dsn)
    assert history.counts[MigrationState.APPLIED] == 11 and sum(history.counts.values()) == 11
    assert history.pending_names == ()
    assert all(item.finished_at for item in history.items)


def test_edited_migration_file_is_modified(full_dsn, tmp_path):
    folder = shutil.copytree(MIGRATIONS, tmp_path / "migrations")
    with open(folder / STEP_3 / "migration.sql", "a") as f:
        f.write("\n-- tweaked after deploy\n")
    history = history_of(full_dsn, folder)
    assert history.by_state(MigrationState.MODIFIED)[0].name == STEP_3
    assert history.counts[MigrationState.MODIFIED] == 1 and history.counts[MigrationState.APPLIED] == 10


def test_crlf_checkout_is_not_a_modification(full_dsn, tmp_path):
    folder = shutil.copytree(MIGRATIONS, tmp_path / "migrations")
    path = folder / STEP_3 / "migration.sql"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert history_of(full_dsn, folder).counts[MigrationState.APPLIED] == 11


def test_failed_deploy_is_failed_then_rolled_back_is_pending_again(pg_server):
    # A real failure: step 7 drops foreign keys the problems database no longer has.
    dsn = build_database(pg_server, "history_failed", seed="problems")
    with psycopg.connect(dsn, autocommit=True) as conn, pytest.raises(MigrationError):
        apply_migrations(conn, MIGRATIONS)
    history = history_of(dsn)
    (failed,) = history.by_state(MigrationState.FAILED)
    assert failed.name == STEP_7
    assert failed.detail == 'Database error code: 42704: constraint "GoodsReceipt_createdById_fkey" of relation "GoodsReceipt" does not exist'
    assert history.counts[MigrationState.FAILED] == 1 and history.counts[MigrationState.PENDING] == 4
    assert history.pending_names == STEPS[6:]  # deploy retries it once resolved

    execute(dsn, "UPDATE _prisma_migrations SET rolled_back_at = now() WHERE migration_name = %s", (STEP_7,))
    history = history_of(dsn)
    assert [i.name for i in history.by_state(MigrationState.ROLLED_BACK)] == [STEP_7]
    assert history.counts[MigrationState.FAILED] == 0 and history.pending_names == STEPS[6:]


def test_rolled_back_row_beside_the_applied_one_changes_nothing(full_dsn):
    execute(full_dsn, "INSERT INTO _prisma_migrations (id, checksum, migration_name, rolled_back_at)"
                      " VALUES ('rb', 'x', %s, now())", (STEP_3,))
    assert history_of(full_dsn).counts[MigrationState.APPLIED] == 11


def test_row_without_folder_is_missing_from_folder(full_dsn):
    execute(full_dsn, "INSERT INTO _prisma_migrations (id, checksum, migration_name, finished_at)"
                      " VALUES ('hotfix', 'x', '20251120000000_hotfix', now())")
    history = history_of(full_dsn)
    assert [i.name for i in history.by_state(MigrationState.MISSING_FROM_FOLDER)] == ["20251120000000_hotfix"]
    assert history.counts[MigrationState.APPLIED] == 11


def test_database_without_prisma_migrations_is_not_managed(pg_server):
    dsn = build_database(pg_server, "history_unmanaged", record=False)
    history = history_of(dsn)
    assert not history.managed and "not managed by Prisma" in history.summary
    assert history.counts[MigrationState.PENDING] == 11  # what deploy would try (after a baseline it would not)


def test_missing_table_does_not_break_the_callers_transaction(pg_server):
    dsn = build_database(pg_server, "history_unmanaged_tx", upto=STEP_3, record=False)
    with psycopg.connect(dsn) as conn:  # not autocommit: inside a transaction
        assert not read_history(conn, MIGRATIONS).managed
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_unreadable_folder_is_reported_and_rows_still_classified(step6_dsn, tmp_path):
    history = history_of(step6_dsn, tmp_path / "not-copied-yet")
    assert not history.folder_read and "not-copied-yet" in history.folder_problem
    assert history.counts[MigrationState.APPLIED] == 6 and history.counts[MigrationState.FAILED] == 0
    assert history.counts[MigrationState.PENDING] is None and history.counts[MigrationState.MODIFIED] is None  # unknown, not 0
    assert "unreadable" in history.summary
    assert history_of(step6_dsn, None).folder_problem == "no migrations folder configured"


def test_half_written_migrations_are_reported_not_crashed_on(step6_dsn, tmp_path):
    folder = shutil.copytree(MIGRATIONS, tmp_path / "migrations")
    (folder / "20251201000000_being_copied").mkdir()  # folder there, migration.sql not yet
    (folder / STEP_3 / "migration.sql").unlink()
    (folder / STEP_3 / "migration.sql").mkdir()  # unreadable as a file
    history = history_of(step6_dsn, folder)
    items = {i.name: i for i in history.items}
    assert items["20251201000000_being_copied"].state == MigrationState.PENDING
    assert "missing" in items["20251201000000_being_copied"].detail
    assert items[STEP_3].state == MigrationState.APPLIED and "checksum not verified" in items[STEP_3].detail
    assert history.counts[MigrationState.PENDING] == 6 and history.counts[MigrationState.APPLIED] == 6
