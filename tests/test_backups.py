"""Backups (issue 13, part 1): real pg_dump output in every format - complete, truncated,
of another database, old - inspected with pg_restore and PostgreSQL's format facts;
`verify --require-backup-within` passing and failing; WAL archiving read from
pg_stat_archiver of a cluster whose archive_command fails, then succeeds."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from exporter.backups.dumps import DumpFormat, DumpInspector, DumpStatus, find_pg_restore
from exporter.config import load_config
from exporter.metrics.render import families_for
from exporter.pgcluster import find_bindir, start_cluster
from exporter.poll import Poller
from venzory_fixture import MIGRATIONS, STEP_6, STEPS, build_database

DAY = 86400


def tool(name: str) -> str:
    # The server's own version first: pg_dump must be >= the server, pg_restore >= pg_dump.
    found = [p for p in (find_bindir() / name, *sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True))
             if p.exists()] or [Path(p) for p in [shutil.which(name)] if p]
    if not found:
        pytest.skip(f"{name} not installed (Debian: postgresql-client)")
    return str(found[0])


def dump(dsn: str, out: Path, *args: str) -> Path:
    subprocess.run([tool("pg_dump"), dsn, "-f", str(out), *args], check=True, capture_output=True, timeout=120)
    return out


def truncate(source: Path, out: Path) -> Path:
    data = source.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


def inspect(path: Path, database: str):
    inspector = DumpInspector(find_pg_restore(Path(tool("pg_restore"))), 60)
    return inspector.inspect(str(path), os.stat(path), database)


SERVER_VERSION = ""


@pytest.fixture(scope="module")
def databases(pg_server):
    """The monitored database (migrations 1-6, 7-11 pending) and another one."""
    global SERVER_VERSION
    ours = build_database(pg_server, "backups_venzory", upto=STEP_6)
    with psycopg.connect(ours) as conn:
        SERVER_VERSION = conn.execute("SHOW server_version").fetchone()[0].split()[0]
    other = pg_server.create_database("backups_other")
    with psycopg.connect(other, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")
    return ours, other


@pytest.fixture(scope="module")
def dumps(databases, tmp_path_factory):
    ours, other = databases
    folder = tmp_path_factory.mktemp("dumps")
    made = {
        "plain": dump(ours, folder / "backup_before_migration_plain.sql"),
        "plain_create": dump(ours, folder / "backup_before_migration_create.sql", "--create"),
        "custom": dump(ours, folder / "ours.dump", "-Fc"),
        "tar": dump(ours, folder / "ours.tar", "-Ft"),
        "directory": dump(ours, folder / "ours.dir", "-Fd"),
        "other_custom": dump(other, folder / "other.dump", "-Fc"),
        "other_plain_create": dump(other, folder / "other.sql", "--create"),
    }
    gzipped = folder / "backup_before_migration_plain.sql.gz"
    with open(made["plain"], "rb") as source, gzip.open(gzipped, "wb") as out:
        shutil.copyfileobj(source, out)  # pg_dump | gzip
    made["plain_gzip"] = gzipped
    for name in ("plain", "custom", "tar", "plain_gzip"):
        made[f"truncated_{name}"] = truncate(made[name], folder / f"truncated_{made[name].name}")
    return made


@pytest.mark.parametrize("name, fmt", [("plain", DumpFormat.PLAIN), ("plain_create", DumpFormat.PLAIN),
                                       ("plain_gzip", DumpFormat.PLAIN_GZIP),
                                       ("custom", DumpFormat.CUSTOM), ("tar", DumpFormat.TAR),
                                       ("directory", DumpFormat.DIRECTORY)])
def test_complete_dumps_of_this_database(dumps, name, fmt):
    d = inspect(dumps[name], "backups_venzory")
    assert (d.format, d.status) == (fmt, DumpStatus.COMPLETE), d
    assert d.server_version and d.server_version.split()[0] == SERVER_VERSION, d
    assert d.size > 0
    if name in ("plain", "plain_gzip"):
        # pg_dump > file.sql (the runbook's command) does not name its database
        assert d.database is None and "--create" in d.detail
        assert abs(d.taken_at - os.stat(dumps[name]).st_mtime) < 1
    else:
        assert d.database == "backups_venzory"
    if fmt in (DumpFormat.CUSTOM, DumpFormat.TAR, DumpFormat.DIRECTORY):
        assert abs(d.taken_at - time.time()) < 600  # the archive's own "created at", not a guess


@pytest.mark.parametrize("name, why", [("truncated_plain", "dump complete' trailer"),
                                       ("truncated_custom", "end of file"),
                                       ("truncated_tar", "tar archive"),
                                       ("truncated_plain_gzip", "gzip stream cut short")])
def test_truncated_dumps_are_incomplete(dumps, name, why):
    d = inspect(dumps[name], "backups_venzory")
    assert d.status == DumpStatus.INCOMPLETE and why in d.detail, d


@pytest.mark.parametrize("name", ["other_custom", "other_plain_create"])
def test_a_dump_of_another_database_is_not_a_backup_of_this_one(dumps, name):
    d = inspect(dumps[name], "backups_venzory")
    assert d.status == DumpStatus.WRONG_DATABASE and "backups_other" in d.detail, d
    assert inspect(dumps[name], "backups_other").status == DumpStatus.COMPLETE


def test_a_file_that_is_not_a_dump(tmp_path):
    path = tmp_path / "notes.sql"
    path.write_text("SELECT 1;\n")
    assert inspect(path, "x").status == DumpStatus.UNREADABLE


# -- verify --require-backup-within ------------------------------------------------------------


def write_config(path: Path, dsn: str, glob: str, migrations: Path = MIGRATIONS, archiver: bool = False) -> Path:
    config = {"databases": [{"name": "venzory", "dsn": dsn,
                             "migrations": {"dir": str(migrations)},
                             "backups": {"dumps": [{"name": "before_migration", "glob": glob}],
                                         "archiver": archiver, "pg_restore": tool("pg_restore")}}],
              "checks": [], "constraints": []}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def verify(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "verify", "--config", str(config), "--allow-pending", *args],
                          capture_output=True, text=True, timeout=120)


def copy_into(folder: Path, *files: Path) -> Path:
    folder.mkdir()
    for f in files:
        (shutil.copytree if f.is_dir() else shutil.copy2)(f, folder / f.name)
    return folder


def test_verify_passes_with_a_recent_complete_dump(databases, dumps, tmp_path):
    folder = copy_into(tmp_path / "b", dumps["custom"], dumps["truncated_plain"])
    config = write_config(tmp_path / "c.yaml", databases[0], str(folder / "*"))
    result = verify(config, "--require-backup-within", "2h", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (db,) = json.loads(result.stdout)["databases"]
    assert db["backups"]["required"] == {"within_seconds": 7200.0, "met": True, "problem": None}
    assert db["backups"]["newest_complete"]["path"].endswith("ours.dump")
    statuses = {Path(f["path"]).name: f["status"] for f in db["backups"]["sources"][0]["files"]}
    assert statuses == {"ours.dump": "complete", "truncated_backup_before_migration_plain.sql": "incomplete"}


def test_verify_fails_with_only_truncated_wrong_and_old_dumps(databases, dumps, tmp_path):
    folder = copy_into(tmp_path / "b", dumps["truncated_custom"], dumps["other_custom"], dumps["plain"])
    old = folder / dumps["plain"].name
    os.utime(old, (time.time() - 3 * DAY, time.time() - 3 * DAY))  # a plain dump's time is its mtime
    config = write_config(tmp_path / "c.yaml", databases[0], str(folder / "*"))
    result = verify(config, "--require-backup-within", "26h")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "backup required before migrating" in result.stdout
    assert "newest complete backup of database 'backups_venzory' is 72h00m old" in result.stdout, result.stdout
    assert "1 complete, 1 incomplete, 1 wrong_database" in result.stdout, result.stdout
    # the same files, but no requirement: verify does not ask for a backup
    assert verify(config).returncode == 0
    # nothing found at all
    empty = write_config(tmp_path / "e.yaml", databases[0], str(tmp_path / "nothing-here" / "*.sql"))
    result = verify(empty, "--require-backup-within", "2h", "--json")
    assert result.returncode == 1
    (db,) = json.loads(result.stdout)["databases"]
    assert db["backups"]["required"]["met"] is False
    assert "no complete backup of database 'backups_venzory'" in db["backups"]["required"]["problem"]
    assert "no file matches" in db["backups"]["required"]["problem"]


def test_verify_needs_no_backup_when_nothing_is_pending(databases, tmp_path):
    applied = tmp_path / "migrations"
    applied.mkdir()
    for name in STEPS[: STEPS.index(STEP_6) + 1]:
        shutil.copytree(MIGRATIONS / name, applied / name)
    config = write_config(tmp_path / "c.yaml", databases[0], str(tmp_path / "none" / "*"), migrations=applied)
    result = verify(config, "--require-backup-within", "1h")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no backup required: no migration is pending" in result.stdout


def test_a_bad_duration_cannot_run(databases, tmp_path):
    config = write_config(tmp_path / "c.yaml", databases[0], str(tmp_path / "*"))
    result = verify(config, "--require-backup-within", "soon")
    assert result.returncode == 2 and "expected a duration" in result.stderr


def test_metrics_of_the_dump_source_and_the_backup_before_the_last_deploy(databases, dumps, tmp_path):
    folder = copy_into(tmp_path / "b", dumps["custom"], dumps["truncated_tar"])
    config = load_config(write_config(tmp_path / "c.yaml", databases[0], str(folder / "*")))
    poller = Poller(config, config.databases[0])
    try:
        result = poller.poll()
    finally:
        poller.close()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families_for(result) for s in f.samples}
    src = (("database", "venzory"), ("source", "before_migration"))
    assert samples[("venzory_db_backup_files", src + (("status", "complete"),))] == 1
    assert samples[("venzory_db_backup_files", src + (("status", "incomplete"),))] == 1
    assert samples[("venzory_db_backup_files", src + (("status", "wrong_database"),))] == 0
    assert samples[("venzory_db_backup_newest_complete_size_bytes", src)] == dumps["custom"].stat().st_size
    assert abs(samples[("venzory_db_backup_newest_complete_timestamp_seconds", src)] - time.time()) < 600
    # the migrations were applied when the database was built, before any dump: no backup before the deploy
    assert samples[("venzory_db_backup_before_last_deploy_age_seconds", (("database", "venzory"),))] == float("inf")


# -- WAL archiving ------------------------------------------------------------------------------


def test_archiving_failing_then_working(tmp_path):
    cluster = start_cluster(settings={"archive_mode": "on", "archive_command": "'false'", "wal_level": "replica"})
    try:
        dsn = cluster.create_database("archived")
        config = load_config(write_config(tmp_path / "c.yaml", dsn, "", archiver=True))
        poller = Poller(config, config.databases[0])

        def archiver_after_switch():
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS w (x int)")
                conn.execute("INSERT INTO w SELECT 1")
                conn.execute("SELECT pg_switch_wal()")
            deadline = time.monotonic() + 30
            while True:
                result = poller.poll()
                a = result.backups.archiver
                if (a.failed if failing else a.archived) > 0 or time.monotonic() > deadline:
                    return result, a
                time.sleep(0.5)

        failing = True
        result, a = archiver_after_switch()
        assert a.enabled and a.failed > 0 and a.failing and a.last_failed_wal, a
        samples = {s.name: s.value for f in families_for(result) for s in f.samples}
        assert samples["venzory_db_wal_archive_failed_total"] == a.failed
        assert samples["venzory_db_wal_archiving_enabled"] == 1
        assert "venzory_db_wal_last_archive_failure_timestamp_seconds" in samples

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET archive_command = 'true'")
            conn.execute("SELECT pg_reload_conf()")
        failing = False
        result, a = archiver_after_switch()
        assert a.archived > 0 and not a.failing, a
        samples = {s.name: s.value for f in families_for(result) for s in f.samples}
        assert samples["venzory_db_wal_archived_total"] == a.archived
        assert samples["venzory_db_wal_last_archived_timestamp_seconds"] >= samples[
            "venzory_db_wal_last_archive_failure_timestamp_seconds"]
        poller.close()
    finally:
        cluster.destroy()


def test_an_archive_newer_than_pg_restore_is_unreadable_not_incomplete(dumps, tmp_path):
    """A custom archive's header carries its format version after "PGDMP" (the version of
    the pg_dump that wrote it); an older pg_restore refuses it. That says nothing about the
    dump: it is `unreadable`, with what to install, never `incomplete`."""
    data = bytearray(dumps["custom"].read_bytes())
    data[5:7] = bytes([1, 99])  # format 1.99: a pg_dump from the future
    future = tmp_path / "future.dump"
    future.write_bytes(data)
    d = inspect(future, "backups_venzory")
    assert d.status == DumpStatus.UNREADABLE and "unsupported version (1.99)" in d.detail
    assert "at least as new as the pg_dump" in d.detail
