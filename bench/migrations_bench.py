"""How long the migration features take: per poll (history, cached expected schema,
deploy prediction) on the Venzory fixture, and once per folder change (shadow replay +
introspection) on a generated folder of 100+ tables.

    python bench/migrations_bench.py            # starts a throwaway PostgreSQL
    BENCH_DATABASE_URL=postgresql://... python bench/migrations_bench.py

Not a test: it prints numbers (median of several runs, milliseconds).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from exporter.migrations import shadow  # noqa: E402
from exporter.migrations.history import read_history  # noqa: E402
from exporter.migrations.deploy import forecast, session_query  # noqa: E402
from exporter.migrations.history import read_folder, read_rows  # noqa: E402
from exporter.pgcluster import start_cluster  # noqa: E402
from exporter.schema.catalog import introspect  # noqa: E402
from venzory_fixture import MIGRATIONS, STEP_6, build_database  # noqa: E402

RUNS = 20


class Server:
    """What venzory_fixture.build_database needs from a server."""

    def __init__(self, admin_dsn: str):
        self.admin_dsn = admin_dsn

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return make_conninfo(self.admin_dsn, dbname=name)


def median_ms(run, runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def once_ms(run) -> float:
    return median_ms(run, 1)


def generated_folder(root: Path, migrations: int = 30, tables_per_migration: int = 4) -> Path:
    """A folder shaped like an app's: each migration adds tables with a primary key, a
    foreign key to an earlier table, a unique index, a CHECK and an index; every fifth
    one alters earlier tables (new column, new constraint) as later migrations do."""
    folder = root / "migrations"
    folder.mkdir()
    table = 0
    for m in range(migrations):
        lines = [f'CREATE TYPE "Status{m}" AS ENUM (\'NEW\', \'DONE\');'] if m % 3 == 0 else []
        for _ in range(tables_per_migration):
            name, parent = f"T{table:03d}", f"T{max(table - 1, 0):03d}"
            status = f'"Status{m - m % 3}"'
            lines += [
                f'CREATE TABLE "{name}" ("id" TEXT NOT NULL, "parentId" TEXT, "name" TEXT NOT NULL,'
                f' "quantity" INTEGER NOT NULL DEFAULT 0, "status" {status} NOT NULL DEFAULT \'NEW\','
                f' "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,'
                f' CONSTRAINT "{name}_pkey" PRIMARY KEY ("id"));',
                f'CREATE UNIQUE INDEX "{name}_name_key" ON "{name}"("name");',
                f'CREATE INDEX "{name}_parentId_idx" ON "{name}"("parentId");',
                f'ALTER TABLE "{name}" ADD CONSTRAINT "check_{name}_quantity" CHECK ("quantity" >= 0);',
            ]
            if table:
                lines.append(f'ALTER TABLE "{name}" ADD CONSTRAINT "{name}_parentId_fkey" FOREIGN KEY ("parentId")'
                             f' REFERENCES "{parent}"("id") ON DELETE SET NULL ON UPDATE CASCADE;')
            table += 1
        if m % 5 == 4:
            earlier = f"T{table - 10:03d}"
            lines += [f'ALTER TABLE "{earlier}" ADD COLUMN "note" TEXT;',
                      f'CREATE UNIQUE INDEX "{earlier}_parentId_name_key" ON "{earlier}"("parentId", "name");']
        directory = folder / f"2025{m:04d}000000_step_{m}"
        directory.mkdir()
        (directory / "migration.sql").write_text("\n".join(lines) + "\n")
    return folder


def main() -> None:
    url = os.environ.get("BENCH_DATABASE_URL")
    cluster = None if url else start_cluster()
    admin = url or cluster.dsn()
    try:
        server = Server(admin)
        dsn = build_database(server, "bench_migrations", upto=STEP_6, seed="problems")
        with psycopg.connect(dsn, autocommit=True, options="-c default_transaction_read_only=on") as conn:
            first_steps = once_ms(lambda: shadow.expected_steps(MIGRATIONS, admin))
            first_final = once_ms(lambda: shadow.expected_schema(MIGRATIONS, admin))
            live = introspect(conn)

            def predict():
                return forecast(read_rows(conn), read_folder(MIGRATIONS), live, session_query(conn))

            print(f"Venzory fixture (11 migrations, 20 tables; step 6 + problems seed: {predict().deploy.summary()})")
            print(f"  per poll  read_history                 {median_ms(lambda: read_history(conn, MIGRATIONS)):8.1f} ms")
            print(f"  per poll  expected_schema (cached)     "
                  f"{median_ms(lambda: shadow.expected_schema(MIGRATIONS, admin)):8.1f} ms")
            print(f"  per poll  expected_steps (cached)      "
                  f"{median_ms(lambda: shadow.expected_steps(MIGRATIONS, admin)):8.1f} ms")
            print(f"  per poll  deploy prediction (5 pending) {median_ms(predict):8.1f} ms")
            print(f"  per poll  introspect (live, reference) {median_ms(lambda: introspect(conn)):8.1f} ms")
            print(f"  once      expected_schema replay       {first_final:8.1f} ms")
            print(f"  once      expected_steps replay        {first_steps:8.1f} ms")

        with tempfile.TemporaryDirectory() as tmp:
            folder = generated_folder(Path(tmp))
            final_ms = once_ms(lambda: shadow.expected_schema(folder, admin))
            steps_ms = once_ms(lambda: shadow.expected_steps(folder, admin))
            schema = shadow.expected_schema(folder, admin)
            print(f"Generated folder (30 migrations, {len(schema.tables)} tables, {len(schema.indexes)} indexes, "
                  f"{len(schema.constraints)} constraints)")
            print(f"  once      expected_schema replay + introspect   {final_ms:8.1f} ms")
            print(f"  once      expected_steps (introspect per step)  {steps_ms:8.1f} ms")
            print(f"  per poll  folder key (read + hash 30 files)     "
                  f"{median_ms(lambda: shadow.folder_key(shadow.read_scripts(folder))):8.1f} ms")
            print(f"  replays run: {shadow.cache.replays}")
    finally:
        if cluster:
            cluster.destroy()


if __name__ == "__main__":
    main()
