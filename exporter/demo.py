"""`venzory-db-exporter demo`: real metrics in one command, no database needed.

Starts a throwaway PostgreSQL from the installed binaries, builds the project's test
fixture in its "before hardening" state (the first six migrations, plus rows that break
every rule the hardening adds), and runs the daemon on it with the shipped config. The
cluster is deleted on exit.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg

from exporter.pgcluster import Cluster, NoPostgresBinaries, start_cluster
from exporter.service import serve

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "venzory"
MIGRATIONS = FIXTURE / "prisma" / "migrations"
BEFORE_HARDENING = "20251111122948_add_practice_supplier_to_orders_items"


def build_demo_database(cluster: Cluster, name: str = "venzory_demo") -> str:
    """The fixture at its pre-hardening step with the problem seed; returns the DSN."""
    from exporter.migrations.replay import apply_migrations

    dsn = cluster.create_database(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        apply_migrations(conn, MIGRATIONS, upto=BEFORE_HARDENING)
        conn.execute((FIXTURE / "seed_problems.sql").read_text(encoding="utf-8"))
    return dsn


def run_demo(config_path: str, listen: str) -> int:
    if not MIGRATIONS.is_dir():
        print(f"demo: the fixture is not here ({FIXTURE}); run the demo from a checkout of the repository",
              file=sys.stderr)
        return 2
    try:
        cluster = start_cluster()
    except NoPostgresBinaries as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    try:
        dsn = build_demo_database(cluster)
        # The migrations features too: history, drift, and the deploy prediction of the five
        # pending hardening migrations (the shadow replay runs on the demo server).
        env = {"PRISMA_MIGRATIONS_DIR": str(MIGRATIONS), "PRISMA_SCHEMA": str(FIXTURE / "prisma" / "schema.prisma"),
               "SHADOW_DATABASE_URL": cluster.url("postgres"), **os.environ,
               "DATABASE_URL": cluster.url("venzory_demo")}
        host, _, port = listen.rpartition(":")
        print(
            f"demo: PostgreSQL {cluster.port} with sample problems ({dsn})\n"
            f"demo: metrics at http://{host or '127.0.0.1'}:{port}/metrics - Ctrl-C to stop\n"
            f"demo: try: DATABASE_URL={cluster.url('venzory_demo')} venzory-db-exporter verify --config {config_path}",
            flush=True,
        )
        return serve(config_path, listen=listen, env=env)
    finally:
        cluster.destroy()
