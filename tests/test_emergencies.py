"""The runbook's emergencies (issue 13, part 2), seen between two polls on a real
PostgreSQL by the least-privilege role of deploy/sql/monitoring-role.sql: a mass DELETE,
a `prisma migrate reset`-like sequence (drop the schema, apply the migrations again) and
hand-written DDL. pg_stat_statements and pg_stat_user_tables prove that the polls read no
app table for it."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
import yaml
from pglast import parse_sql
from pglast.visitors import Visitor

from exporter.config import load_config
from exporter.config.watch import EmergenciesConfig
from exporter.metrics.render import families_for
from exporter.migrations.replay import apply_migrations
from exporter.poll import Poller
from exporter.schema.diff import DriftItem
from exporter.watch.emergencies import EmergencyWatch, Loss, TableStats, read_tables
from test_security_privileges import apply_role_sql, as_monitor
from venzory_fixture import MIGRATIONS, SCHEMA_PRISMA, STEP_6, build_database

ROWS = 1000


def config_for(tmp_path, dsn: str):
    config = {"databases": [{"name": "venzory", "dsn": dsn, "poll_interval": "1s",
                             "migrations": {"dir": str(MIGRATIONS), "schema_prisma": str(SCHEMA_PRISMA)},
                             "backups": {"archiver": True},  # pg_stat_archiver: readable by the role too
                             "watch": {"emergencies": {"mass_delete_fraction": 0.5, "mass_delete_min_rows": 100}}}],
              "checks": [], "constraints": []}  # no checks: what is left is the catalog's part of a poll
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return load_config(path)


def fill(dsn: str) -> None:
    """An app table with ROWS rows (the fixture's seedless migrations leave tables empty).

    Autovacuum is off for it: an autoanalyze that samples the table before a DELETE and
    reports after the DELETE's statistics were flushed writes the pre-DELETE count back into
    n_live_tup (CI saw it once: the second poll found 1,000 rows again). A later vacuum
    corrects it and the poll after that sees the loss, but these tests poll once."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('ALTER TABLE "Practice" SET (autovacuum_enabled = false)')
        conn.execute('INSERT INTO "Practice" (id, name, slug, "updatedAt") '
                     "SELECT 'p' || g, 'Practice ' || g, 'practice-' || g, now() FROM generate_series(1, %s) g", (ROWS,))


def wait_for_live_rows(dsn: str, table: str, condition) -> None:
    """The statistics of a session are flushed when it ends, a moment after the client left."""
    deadline = time.monotonic() + 15
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = %s", (table,)).fetchone()
            if row and condition(row[0]):
                return
            assert time.monotonic() < deadline, f"{table}: n_live_tup still {row} after 15 s"
            time.sleep(0.1)


def samples(result) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families_for(result) for s in f.samples}


@pytest.fixture
def watched(pg_server, tmp_path, request):
    """A database of its own (every migration applied: each expectation schema.prisma derives
    is kept by the catalog, so no derived check reads a table), the monitoring role,
    pg_stat_statements."""
    dsn = build_database(pg_server, f"emergency_{request.node.name}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    apply_role_sql(dsn)
    fill(dsn)
    wait_for_live_rows(dsn, "Practice", lambda n: n == ROWS)
    config = config_for(tmp_path, as_monitor(dsn))
    poller = Poller(config, config.databases[0])
    yield dsn, poller
    poller.close()


class _Relations(Visitor):
    def __init__(self):
        super().__init__()
        self.names = set()

    def visit_RangeVar(self, ancestors, node):
        self.names.add(node.relname)


def scans(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return dict(conn.execute("SELECT relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables"))


def poll_and_scans(poller, dsn: str):
    """A poll, and the tables it scanned per pg_stat_user_tables (the exporter's session
    flushes its statistics as it ends: wait for its read of the history to show)."""
    before = scans(dsn)
    result = poller.poll()
    deadline = time.monotonic() + 15
    while (after := scans(dsn))["_prisma_migrations"] == before["_prisma_migrations"] and time.monotonic() < deadline:
        time.sleep(0.1)
    return result, {t for t in after if after[t] != before.get(t, 0)}


def test_a_mass_delete_is_seen_by_the_next_poll_and_no_table_is_read(watched):
    dsn, poller = watched
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
        app_tables = [r[0] for r in conn.execute("SELECT relname FROM pg_stat_user_tables WHERE relname <> '_prisma_migrations'")]
    first, scanned = poll_and_scans(poller, dsn)
    assert first.up and first.emergencies.mass_deletes == ()
    assert first.backups.archiver is not None and first.backups.archiver.mode == "off"
    # The derived checks that no live constraint answers read their tables (issue 9: two
    # partial unique indexes here); the watches add none.
    checked = {r.check.table for r in first.checks if r.guarded_by is None}
    assert scanned - checked == {"_prisma_migrations"}  # the history, which the migrations monitor reads anyway
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('DELETE FROM "Practice" WHERE id <> %s', ("p1",))  # a DELETE without the WHERE it needed
    wait_for_live_rows(dsn, "Practice", lambda n: n < ROWS)
    second, scanned = poll_and_scans(poller, dsn)
    assert scanned - checked == {"_prisma_migrations"}

    (event,) = second.emergencies.mass_deletes
    assert (event.table, event.rows_lost, event.rows_before, event.rows_after, event.how) == (
        "Practice", ROWS - 1, ROWS, 1, Loss.DELETED)
    s = samples(second)
    assert s[("venzory_db_table_mass_deletes_total", (("database", "venzory"), ("table", "Practice")))] == 1
    assert s[("venzory_db_table_rows_lost_total", (("database", "venzory"), ("table", "Practice")))] == ROWS - 1
    assert s[("venzory_db_table_mass_deletes_total", (("database", "venzory"), ("table", "Item")))] == 0
    assert s[("venzory_db_migration_history_rewrites_total", (("database", "venzory"),))] == 0

    # What the two polls asked the database: the catalog, statistics views and
    # _prisma_migrations (the migration history) - never an app table but the checks'.
    with psycopg.connect(dsn, autocommit=True) as conn:
        statements = conn.execute("SELECT query, calls FROM pg_stat_statements "
                                  "WHERE userid = 'venzory_monitor'::regrole "
                                  "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())").fetchall()
    calls = sum(c for _, c in statements)
    read = set()
    for query, _ in statements:
        relations = _Relations()
        relations(parse_sql(query))
        read |= relations.names
    print(f"2 polls: {calls} statements ({len(statements)} distinct), relations: {sorted(read)}")
    assert statements and calls <= 2 * (25 + len(checked)), statements
    assert not read & set(app_tables) - checked, sorted(read & set(app_tables) - checked)
    assert "pg_stat_user_tables" in read and "_prisma_migrations" in read


def test_a_migrate_reset_rewrites_the_history_and_empties_tables(watched):
    dsn, poller = watched
    assert poller.poll().up
    with psycopg.connect(dsn, autocommit=True) as conn:  # what `prisma migrate reset` does
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
        apply_migrations(conn, MIGRATIONS)
    wait_for_live_rows(dsn, "Practice", lambda n: n == 0)
    # The monitoring role lost its grants with the schema: the history table cannot be
    # read, but the statistics still show _prisma_migrations and Practice replaced.
    result = poller.poll()
    e = result.emergencies
    assert e.history_rewrites_total == 1 and e.rewritten == ("_prisma_migrations",), e
    practice = [d for d in e.mass_deletes if d.table == "Practice"]
    assert [(d.rows_lost, d.how) for d in practice] == [(ROWS, Loss.RECREATED)]
    assert any(part == "history" and "permission denied" in message for part, message in result.migrations.errors)
    # the DBA grants again: the re-read history is a new baseline, not a second rewrite
    apply_role_sql(dsn)
    again = poller.poll()
    assert again.emergencies.history_rewrites_total == 1 and again.emergencies.rewritten == ()
    assert again.migrations.history.managed


def test_a_reset_seen_through_the_history_rows(pg_server, tmp_path):
    """With a role that keeps its access (the app's owner), the replaced rows tell it."""
    dsn = build_database(pg_server, "emergency_reset_rows", upto=STEP_6)
    config = config_for(tmp_path, dsn)
    poller = Poller(config, config.databases[0])
    try:
        poller.poll()
        with psycopg.connect(dsn) as conn:  # every row replaced: new ids, applied again just now
            conn.execute("CREATE TEMP TABLE old AS SELECT * FROM _prisma_migrations")
            conn.execute("DELETE FROM _prisma_migrations")
            conn.execute("INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, finished_at, "
                         "applied_steps_count) SELECT gen_random_uuid()::text, checksum, migration_name, "
                         "clock_timestamp(), clock_timestamp(), 1 FROM old")
        e = poller.poll().emergencies
        assert e.history_rewrites_total == 1 and len(e.rewritten) == 6, e.rewritten
        assert poller.poll().emergencies.history_rewrites_total == 1
    finally:
        poller.close()


def test_drift_that_appears_is_reported_with_its_time_after_two_polls(watched):
    dsn, poller = watched
    poller.poll()  # the drift vs schema.prisma (none, every migration applied) is the baseline
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('ALTER TABLE "Item" ADD COLUMN "hotfix" integer')  # hand-written DDL on production
    seen = poller.poll()
    assert seen.emergencies.drift_appeared == () and seen.emergencies.drift_appeared_total == 0
    confirmed = poller.poll()
    (appeared,) = confirmed.emergencies.drift_appeared
    assert appeared.item.object == "Item.hotfix" and appeared.appeared_at == seen.started_at
    s = samples(confirmed)
    assert s[("venzory_db_schema_drift_appeared_total", (("database", "venzory"),))] == 1
    key = ("venzory_db_schema_drift_appeared_timestamp_seconds",
           (("database", "venzory"), ("kind", appeared.item.kind), ("object", "Item.hotfix"), ("source", "schema_prisma")))
    assert s[key] == seen.started_at
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('ALTER TABLE "Item" DROP COLUMN "hotfix"')
    gone = poller.poll()
    assert gone.emergencies.drift_appeared == () and gone.emergencies.drift_appeared_total == 1



def test_drift_hidden_by_a_locked_table_is_not_new_when_the_lock_goes(watched):
    """A table under ACCESS EXCLUSIVE is read without its expressions and its drift is
    hidden for that poll (issue 14): the drift that was there before must not appear again."""
    dsn, poller = watched
    poller.poll()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('ALTER TABLE "Item" ALTER COLUMN "createdAt" SET DEFAULT \'2020-01-01\'')
    poller.poll()
    assert poller.poll().emergencies.drift_appeared_total == 1
    with psycopg.connect(dsn) as holder:  # a migration holding its table
        holder.execute('LOCK TABLE "Item" IN ACCESS EXCLUSIVE MODE')
        locked = poller.poll()
        assert "Item" in locked.schema.locked and not locked.emergencies.drift_watched
        holder.rollback()
    for _ in range(2):
        after = poller.poll()
    assert after.emergencies.drift_appeared_total == 1
    assert [a.item.object for a in after.emergencies.drift_appeared] == ["Item.createdAt"]

# -- the comparisons themselves (pure: no database) ------------------------------------------------


def _watch(**config):
    return EmergencyWatch(EmergenciesConfig(**config))


def test_an_analyze_racing_a_delete_delays_the_loss_to_the_poll_after_the_next_vacuum(pg_server):
    """What the watch's docstring claims for production, on a real server: an ANALYZE that
    counted its sample before a DELETE and reports after the DELETE's statistics were flushed
    writes the old count back; the loss shows at the next vacuum, as `truncated` (n_tup_del
    moved a poll earlier). A slow index expression keeps ANALYZE busy after its count."""
    dsn = pg_server.create_database("emergency_analyze_race")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY) WITH (autovacuum_enabled = false)")
        conn.execute("INSERT INTO t SELECT g FROM generate_series(1, %s) g", (ROWS,))
        conn.execute("CREATE FUNCTION slow(i int) RETURNS int IMMUTABLE LANGUAGE plpgsql "
                     "AS $$ BEGIN PERFORM pg_sleep(0.002); RETURN i; END $$")
        conn.execute("CREATE INDEX ON t (slow(id))")
    wait_for_live_rows(dsn, "t", lambda n: n == ROWS)
    watch = _watch()
    with psycopg.connect(dsn, autocommit=True) as poller, psycopg.connect(dsn, autocommit=True) as analyzer:
        assert watch.observe(0, read_tables(poller, "public"), None, None).mass_deletes == ()
        analyzing = threading.Thread(target=analyzer.execute, args=("ANALYZE t",))
        analyzing.start()
        deadline = time.monotonic() + 15  # ANALYZE has counted and is computing the index's statistics
        while not poller.execute("SELECT 1 FROM pg_stat_progress_analyze WHERE relid = 't'::regclass "
                                 "AND phase = 'computing statistics'").fetchone():
            assert time.monotonic() < deadline, "ANALYZE never reached its statistics phase"
            time.sleep(0.01)
        with psycopg.connect(dsn, autocommit=True) as app:
            app.execute("DELETE FROM t WHERE id <> 1")
        wait_for_live_rows(dsn, "t", lambda n: n == 1)
        analyzing.join()
        wait_for_live_rows(dsn, "t", lambda n: n == ROWS)  # the stale count, written back
        assert watch.observe(60, read_tables(poller, "public"), None, None).mass_deletes == ()
        analyzer.execute("VACUUM t")
        wait_for_live_rows(dsn, "t", lambda n: n == 1)
        (seen,) = watch.observe(120, read_tables(poller, "public"), None, None).mass_deletes
    assert (seen.table, seen.rows_lost, seen.how) == ("t", ROWS - 1, Loss.TRUNCATED)


def test_more_than_the_fraction_and_at_least_the_minimum():
    watch = _watch(mass_delete_fraction=0.5, mass_delete_min_rows=100)
    watch.observe(0, {"A": TableStats(1, 1000, 0), "B": TableStats(2, 1000, 0), "C": TableStats(3, 150, 0)}, None, None)
    # A loses exactly half (not more), B one row more than half, C more than half but under 100 rows
    result = watch.observe(60, {"A": TableStats(1, 500, 500), "B": TableStats(2, 499, 0), "C": TableStats(3, 60, 90)},
                           None, None)
    assert [(d.table, d.rows_lost, d.how) for d in result.mass_deletes] == [("B", 501, Loss.TRUNCATED)]
    assert result.mass_deletes_total == {"A": 0, "B": 1, "C": 0} and result.rows_lost_total["B"] == 501
    # dropped, and recreated under the same name
    result = watch.observe(120, {"B": TableStats(9, 0, 0)}, None, None)
    assert {(d.table, d.how) for d in result.mass_deletes} == {("A", Loss.DROPPED), ("B", Loss.RECREATED)}
    assert result.tables == ("A", "B", "C")  # a dropped table's counters stay


def test_reset_statistics_are_not_a_mass_delete():
    watch = _watch()
    watch.observe(0, {"A": TableStats(1, 1000, 10, 1010)}, None, None)
    assert watch.observe(60, {"A": TableStats(1, 0, 0, 0)}, None, None).mass_deletes == ()  # pg_stat_reset()
    watch.observe(120, {"A": TableStats(1, 1000, 0, 1000)}, None, None)
    (truncated,) = watch.observe(180, {"A": TableStats(1, 0, 0, 1000)}, None, None).mass_deletes  # TRUNCATE
    assert truncated.how == Loss.TRUNCATED


def test_drift_of_a_poll_whose_source_failed_is_not_new_the_next_time():
    item = DriftItem(source="migrations", kind="extra_column", object="Item.hotfix", detail="")
    watch = _watch()
    watch.observe(0, {}, None, [])
    watch.observe(60, {}, None, None)  # the expected schema failed this poll: skipped
    watch.observe(120, {}, None, [item])  # appeared
    assert watch.observe(180, {}, None, None).drift_appeared == ()  # unknown: not confirmed, not forgotten
    result = watch.observe(240, {}, None, [item])
    assert [(a.item.object, a.appeared_at) for a in result.drift_appeared] == [("Item.hotfix", 120)]
    acknowledged = DriftItem(source="migrations", kind="extra_index", object="i", detail="", acknowledged=True)
    assert watch.observe(300, {}, None, [item, acknowledged]).drift_appeared_total == 1


def test_a_reload_keeps_what_the_watches_remember(tmp_path):
    config = config_for(tmp_path, "host=127.0.0.1 dbname=x")
    old, new = Poller(config, config.databases[0]), Poller(config, config.databases[0])
    old.emergencies.history_rewrites_total = 3
    new.adopt(old)
    assert new.emergencies is old.emergencies and new.deploy_watch is old.deploy_watch
