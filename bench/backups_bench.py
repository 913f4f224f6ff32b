"""Backups and watch benchmark: what inspecting a dump costs (once per file, then cached),
and what the emergencies and deploy watches add to a poll.

    python bench/backups_bench.py [--rows 2000000] [--repeat 20]

Starts its own throwaway cluster (exporter.pgcluster), fills one table with --rows rows,
dumps it in plain and custom format with the server's pg_dump, and times:

- the first inspection of each dump (plain: header and trailer; custom: pg_restore --list
  and pg_restore --file=/dev/null, which reads every block) and a cached one;
- a poll with no checks, watches off vs. on (emergencies: pg_stat_user_tables; deploy:
  pg_stat_statements, with the extension created and the statements of the fill in it).

Figures are the median and minimum of --repeat runs in milliseconds, with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from exporter.backups.dumps import DumpInspector, find_pg_restore  # noqa: E402
from exporter.config.models import Config  # noqa: E402
from exporter.migrations.replay import apply_migrations  # noqa: E402
from exporter.pgcluster import start_cluster  # noqa: E402
from exporter.poll import Poller  # noqa: E402
from timing import time_runs  # noqa: E402 - bench/timing.py, beside this script

MIGRATIONS = ROOT / "tests" / "fixtures" / "venzory" / "prisma" / "migrations"


def tool(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    return str(found[0]) if found else name


def timed(fn, repeat: int) -> tuple[float, float]:
    times, _ = time_runs(fn, repeat)
    return statistics.median(times), times[0]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    cluster = start_cluster()
    folder = Path(tempfile.mkdtemp(prefix="backups-bench-"))
    os.chmod(folder, 0o777)
    try:
        dsn = cluster.create_database("bench")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
            apply_migrations(conn, MIGRATIONS)
            conn.execute('INSERT INTO "Practice" (id, name, slug, "updatedAt") '
                         "SELECT 'p' || g, 'Practice ' || g, 'practice-' || g, now() FROM generate_series(1, %s) g",
                         (args.rows,))
        print(f"load average {os.getloadavg()[0]:.2f}; {args.rows} rows in Practice")
        inspector = DumpInspector(find_pg_restore(None), 600)
        for fmt, name in (("p", "dump.sql"), ("c", "dump.custom")):
            path = folder / name
            subprocess.run([tool("pg_dump"), dsn, f"-F{fmt}", "-f", str(path)], check=True)
            stat = os.stat(path)
            t = time.perf_counter()
            dump = inspector.inspect(str(path), stat, "bench")
            first = (time.perf_counter() - t) * 1000
            median, low = timed(lambda: inspector.inspect(str(path), stat, "bench"), args.repeat)
            print(f"{name}: {stat.st_size / 1e6:.0f} MB, {dump.status}; first inspection {first:.0f} ms, "
                  f"cached {median:.3f} ms (min {low:.3f})")

        for watch in (False, True):
            config = Config.model_validate({
                "databases": [{"name": "bench", "dsn": dsn, "migrations": {"dir": str(MIGRATIONS)},
                               "watch": {"emergencies": {"enabled": watch}, "deploy": {"enabled": watch}}}],
                "checks": [], "constraints": []})
            poller = Poller(config, config.databases[0])
            poller.poll()
            median, low = timed(poller.poll, args.repeat)
            poller.close()
            print(f"poll without checks, watches {'on ' if watch else 'off'}: {median:.1f} ms (min {low:.1f})")
    finally:
        cluster.destroy()
        subprocess.run(["rm", "-rf", str(folder)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
