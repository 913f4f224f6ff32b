"""Deploy-prediction benchmark: what predicting `prisma migrate deploy` statement by statement
costs on a large database, against the count queries it needs.

    python bench/deploy_bench.py [--scale 1.0] [--repeat 3]

Starts its own throwaway PostgreSQL and builds, with bench/core_bench.py's loader, the
Venzory database at steps 1-6 with clean data (1,000,000 Item and LocationInventory rows at
--scale 1.0), so that the pending steps 7-10 are walked to the end: every CHECK, unique
index and foreign key they add is counted on the rows. Step 7 is preceded by a sanitizing
migration (UPDATE + DELETE) so that later counts read the rows through the CASE layers.

Measured, interleaved, median of --repeat (1-minute load average beside each):

  prediction   forecast() alone: parse, walk, and its queries (one per statement that needs rows)
  floor        the same count queries run directly, nothing else (what any correct method must run)
  shared       forecast() given the counts a full poll's checks made (the runbook's constraints
               are the checks' own questions): the queries it still runs

Target: prediction <= 1.2 x floor.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from core_bench import CONFIG, MIGRATIONS, STEP_6, VID_FUNCTION, load_sql, server_settings  # noqa: E402
from exporter.checks.run import KIND_MODULES  # noqa: E402
from exporter.config import load_config  # noqa: E402
from exporter.migrations.deploy import forecast, session_query  # noqa: E402
from exporter.migrations.history import read_folder, read_rows  # noqa: E402
from exporter.migrations.replay import apply_migrations  # noqa: E402
from exporter.pgcluster import start_cluster  # noqa: E402
from exporter.poll import Poller  # noqa: E402
from exporter.schema.catalog import introspect  # noqa: E402

SANITIZE = """UPDATE "LocationInventory" SET "quantity" = 0 WHERE "quantity" < 0;
DELETE FROM "StockAdjustment" WHERE "quantity" = 0;
UPDATE "OrderItem" SET "unitPrice" = NULL WHERE "unitPrice" < 0;
"""


def build(cluster, scale: float) -> str:
    dsn = cluster.create_database("deploy_bench")
    with psycopg.connect(dsn, autocommit=True) as conn:
        apply_migrations(conn, MIGRATIONS, upto=STEP_6, record=True)
        conn.execute(VID_FUNCTION)
        conn.execute("SET session_replication_role = replica")
        for _, sql in load_sql(scale, clean=True):
            conn.execute(sql)
        conn.execute("RESET session_replication_role")
        conn.execute("VACUUM (FREEZE, ANALYZE)")
    return dsn


def folder_with_sanitize(root: Path) -> Path:
    folder = root / "migrations"
    shutil.copytree(MIGRATIONS, folder)
    (folder / "20251111130000_sanitize").mkdir()
    (folder / "20251111130000_sanitize" / "migration.sql").write_text(SANITIZE)
    return folder


class Recorder:
    """A Query that records each SQL and its time."""

    def __init__(self, conn):
        self.run = session_query(conn)
        self.queries: list[tuple[str, float]] = []

    def __call__(self, sql: str) -> tuple:
        started = time.perf_counter()
        row = self.run(sql)
        self.queries.append((sql, time.perf_counter() - started))
        return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    cluster = start_cluster(settings=server_settings("'4MB'", "'2GB'"))
    tmp = Path(tempfile.mkdtemp(prefix="deploy-bench-"))
    try:
        started = time.monotonic()
        dsn = build(cluster, args.scale)
        print(f"built in {time.monotonic() - started:.0f} s (scale {args.scale})", flush=True)
        folder = folder_with_sanitize(tmp)
        env = {"DATABASE_URL": dsn, "PRISMA_MIGRATIONS_DIR": str(folder)}
        config = load_config(CONFIG, env=env)
        poller = Poller(config, config.databases[0])
        checks = poller.poll(full_scan=True).checks
        poller.close()

        def known(rule):
            for r in checks:
                if r.violations is not None and not r.guarded and KIND_MODULES[r.check.kind].counts_same_rows(r.check, rule):
                    return r.violations, r.groups
            return None

        with psycopg.connect(dsn, autocommit=True, options="-c default_transaction_read_only=on") as conn:
            rows, entries, live = read_rows(conn), read_folder(folder), introspect(conn)
            times = {"prediction": [], "floor": [], "shared": []}
            loads = []
            for _ in range(args.repeat):
                loads.append(os.getloadavg()[0])
                rec = Recorder(conn)
                t = time.perf_counter()
                result = forecast(rows, entries, live, rec)
                times["prediction"].append(time.perf_counter() - t)
                plain = [sql for sql, _ in rec.queries]
                t = time.perf_counter()
                for sql in plain:
                    conn.execute(sql).fetchone()
                times["floor"].append(time.perf_counter() - t)
                shared_rec = Recorder(conn)
                t = time.perf_counter()
                forecast(rows, entries, live, shared_rec, known=known)
                times["shared"].append(time.perf_counter() - t)
        print(result.deploy.summary())
        for m in result.deploy.migrations:
            print(f"  {m.outcome.value:16} {m.name}: {m.effects}")
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"queries: prediction {len(plain)}, with the checks' counts shared {len(shared_rec.queries)}")
        for k, v in med.items():
            print(f"  {k:10} {v:8.3f} s  (runs {', '.join(f'{x:.3f}' for x in times[k])})")
        ratio = med["prediction"] / med["floor"]
        print(f"prediction / floor = {ratio:.2f} (target <= 1.2); shared / floor = {med['shared'] / med['floor']:.2f}; "
              f"load1 {statistics.median(loads):.1f}")
        return 0 if ratio <= 1.2 else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        cluster.destroy()


if __name__ == "__main__":
    raise SystemExit(main())
