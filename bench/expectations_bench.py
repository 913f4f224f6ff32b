"""What the expectations of issue 9 cost: every derived expectation on, against the config alone.

    python bench/expectations_bench.py [--scale 1.0] [--repeat 5]

Builds the two databases of bench/core_bench.py (its builder: `problems` = steps 1-6, no
CHECK/unique guards, 8 foreign keys dropped, violations planted; `hardened` = all 11 steps,
clean) on a throwaway cluster with pg_stat_statements, then polls each with the shipped
config in two ways:

  config only   no migrations folder: the config's checks and constraints (as before)
  derived on    PRISMA_MIGRATIONS_DIR + SHADOW_DATABASE_URL + PRISMA_SCHEMA: every CHECK,
                unique index, foreign key and NOT NULL of the applied migrations is an
                expectation with a derived check (docs/expectations.md)

Measured, each a median of --repeat polls after one warm-up poll (the folder replay is cached
from then on, as in the daemon):

  hardened, guarded poll   database time (pg_stat_statements total_exec_time of every
                           statement the poll ran in that database), and the tables read
                           (pg_stat_user_tables seq_scan + idx_scan deltas: must be 0)
  problems, full scan      the data cost: the poll's table passes and duplicate queries
                           (CheckResult.duration, each query once), against core_bench's floor
                           (a sequential count(*) per table + a count-only GROUP BY per key)

Results on stdout and in bench/out/expectations_bench-<timestamp>.json; numbers in
docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from core_bench import (  # noqa: E402
    CONFIG, MIGRATIONS, OUT, build_database, floor_queries, load1, median, run_floor, server_settings,
    sum_of_minimums,
)
from exporter.checks.constraints import DERIVED_CATEGORY  # noqa: E402
from exporter.config import load_config  # noqa: E402
from exporter.pgcluster import start_cluster  # noqa: E402
from exporter.poll import Poller  # noqa: E402

SCHEMA_PRISMA = REPO / "tests" / "fixtures" / "venzory" / "prisma" / "schema.prisma"
TARGETS = {"hardened_db_ms_max": 50.0, "hardened_tables_read": 0, "data_vs_floor_max": 1.1}


def env_for(dsn: str, admin: str, derived: bool) -> dict[str, str]:
    env = {"DATABASE_URL": dsn}
    if derived:
        env |= {"PRISMA_MIGRATIONS_DIR": str(MIGRATIONS), "SHADOW_DATABASE_URL": admin, "PRISMA_SCHEMA": str(SCHEMA_PRISMA)}
    return env


def table_reads(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute("SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0) FROM pg_stat_user_tables"
                            " WHERE relname <> '_prisma_migrations'").fetchone()[0]


def db_time_ms(admin: str, dbname: str) -> tuple[float, int]:
    with psycopg.connect(admin, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(sum(total_exec_time), 0), coalesce(sum(calls), 0) FROM pg_stat_statements s"
                           " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s", (dbname,)).fetchone()
    return float(row[0]), int(row[1])


def reset_statements(admin: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


def data_queries(result) -> dict[str, float]:
    """The poll's data queries: each table pass once (its checks share its duration), each duplicate query."""
    seen: dict[str, float] = {}
    for c in result.checks:
        if c.guarded or c.violations is None:
            continue
        label = c.check.name if c.check.kind == "duplicate" or c.check.timeout else f"pass {c.check.table}"
        seen[label] = c.duration
    return seen


def measure_hardened(cluster, db: dict, derived: bool, repeat: int) -> dict:
    admin = cluster.dsn()
    config = load_config(CONFIG, env=env_for(db["dsn"], admin, derived))
    poller = Poller(config, config.databases[0])
    warm = poller.poll(full_scan=False)
    assert warm.up and not (warm.migrations and warm.migrations.errors), warm
    runs = []
    for _ in range(repeat):
        time.sleep(0.6)  # let the previous sessions' table statistics reach the collector
        reads_before = table_reads(db["dsn"])
        reset_statements(admin)
        result = poller.poll(full_scan=False)
        ms, calls = db_time_ms(admin, db["name"])
        time.sleep(0.6)
        runs.append({"db_ms": ms, "statements": calls, "tables_read": table_reads(db["dsn"]) - reads_before,
                     "wall_ms": result.duration * 1000, "load1": load1()})
    poller.close()
    derived_checks = [c for c in warm.checks if c.check.category == DERIVED_CATEGORY]
    return {
        "db_ms_median": median([r["db_ms"] for r in runs]), "wall_ms_median": median([r["wall_ms"] for r in runs]),
        "tables_read_max": max(r["tables_read"] for r in runs), "statements_median": median([r["statements"] for r in runs]),
        "checks": len(warm.checks), "derived_checks": len(derived_checks),
        "derived_guarded": sum(1 for c in derived_checks if c.guarded), "expectations": len(warm.constraints),
        "runs": runs,
    }


def measure_problems(cluster, db: dict, repeat: int) -> dict:
    admin = cluster.dsn()
    configs = {name: load_config(CONFIG, env=env_for(db["dsn"], admin, name == "derived_on"))
               for name in ("config_only", "derived_on")}
    pollers = {name: Poller(c, c.databases[0]) for name, c in configs.items()}
    floor_q = floor_queries(configs["config_only"].checks)
    for p in pollers.values():
        assert p.poll(full_scan=True).up
    runs = []
    for _ in range(repeat):  # interleaved, so load from other processes hits all three alike
        run = {"load1": load1()}
        for name, p in pollers.items():
            result = p.poll(full_scan=True)
            run[name + "_queries"] = data_queries(result)
            run[name] = sum(run[name + "_queries"].values())
            run[name + "_checks"] = len(result.checks)
            run[name + "_counted"] = sum(1 for c in result.checks if not c.guarded)
        floor = run_floor(configs["config_only"], floor_q)
        run["floor"], run["floor_queries"] = floor["seconds"], floor["queries"]
        runs.append(run)
        print(f"  config only {run['config_only']:.3f} s, derived on {run['derived_on']:.3f} s, "
              f"floor {run['floor']:.3f} s (load {run['load1']})", flush=True)
    for p in pollers.values():
        p.close()
    out = {k: median([r[k] for r in runs]) for k in ("config_only", "derived_on", "floor")}
    # Each query's fastest run, summed: steadier than medians when other processes load the machine.
    out |= {f"{k}_sum_of_minimums": sum_of_minimums([r[k + "_queries"] for r in runs])
            for k in ("config_only", "derived_on", "floor")}
    out |= {"derived_vs_floor_minimums": out["derived_on_sum_of_minimums"] / out["floor_sum_of_minimums"],
            "config_vs_floor_minimums": out["config_only_sum_of_minimums"] / out["floor_sum_of_minimums"]}
    out |= {"derived_vs_floor": out["derived_on"] / out["floor"], "config_vs_floor": out["config_only"] / out["floor"],
            "derived_vs_config": out["derived_on"] / out["config_only"],
            "checks": {k: runs[-1][k + "_checks"] for k in ("config_only", "derived_on")},
            "counted": {k: runs[-1][k + "_counted"] for k in ("config_only", "derived_on")}, "runs": runs}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--shared-buffers", default="'3GB'", help="holds both databases (2.9 GiB at scale 1.0)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    settings = server_settings("'4MB'", args.shared_buffers) | {"shared_preload_libraries": "'pg_stat_statements'",
                                                     "pg_stat_statements.track": "all"}
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "targets": TARGETS,
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    cluster = start_cluster(settings=settings)
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        print("building databases ...", flush=True)
        with ThreadPoolExecutor(2) as pool:
            problems_f = pool.submit(build_database, cluster, "venzory_problems", args.scale, hardened=False)
            hardened_f = pool.submit(build_database, cluster, "venzory_hardened", args.scale, hardened=True)
            problems, hardened = problems_f.result(), hardened_f.result()
        print(f"  problems {problems['bytes'] / 2**30:.2f} GiB, hardened {hardened['bytes'] / 2**30:.2f} GiB", flush=True)
        print("hardened, guarded polls ...", flush=True)
        results["hardened"] = {name: measure_hardened(cluster, hardened, name == "derived_on", args.repeat)
                               for name in ("config_only", "derived_on")}
        for name, r in results["hardened"].items():
            print(f"  {name}: {r['db_ms_median']:.1f} ms database time ({r['statements_median']} statements), "
                  f"tables read {r['tables_read_max']}, wall {r['wall_ms_median']:.0f} ms, {r['checks']} checks "
                  f"({r['derived_checks']} derived, {r['derived_guarded']} guarded), {r['expectations']} expectations",
                  flush=True)
        print("problems, full scans ...", flush=True)
        results["problems"] = measure_problems(cluster, problems, args.repeat)
        p = results["problems"]
        print(f"  data cost: config only {p['config_only']:.3f} s ({p['config_vs_floor']:.3f}x floor), derived on "
              f"{p['derived_on']:.3f} s ({p['derived_vs_floor']:.3f}x floor; {p['derived_vs_config']:.3f}x config only)",
              flush=True)
        print(f"  sums of per-query minimums: config only {p['config_only_sum_of_minimums']:.3f} s "
              f"({p['config_vs_floor_minimums']:.3f}x), derived on {p['derived_on_sum_of_minimums']:.3f} s "
              f"({p['derived_vs_floor_minimums']:.3f}x), floor {p['floor_sum_of_minimums']:.3f} s", flush=True)
    finally:
        cluster.destroy()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"expectations_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
