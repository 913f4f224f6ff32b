"""`venzory-db-exporter demo`: real metrics in one command, no database needed.

Starts a throwaway PostgreSQL from the installed binaries, builds the project's test
fixture in its "before hardening" state (the first six migrations, plus rows that break
every rule the hardening adds), and runs the daemon on it with the shipped config. The
cluster is deleted on exit.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import sys
from pathlib import Path

import psycopg

from exporter.pgcluster import Cluster, NoPostgresBinaries, find_bindir, start_cluster
from exporter.service import serve

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "venzory"
MIGRATIONS = FIXTURE / "prisma" / "migrations"
BEFORE_HARDENING = "20251111122948_add_practice_supplier_to_orders_items"
# The built demo cluster, kept by the first start and copied by later ones: an initdb and
# six migrations are most of a start (2-5 s), a copy takes a fraction of a second.
DEMO_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "venzory-db-exporter" / "demo"


def build_demo_database(cluster: Cluster, name: str = "venzory_demo") -> str:
    """The fixture at its pre-hardening step with the problem seed; returns the DSN."""
    from exporter.migrations.replay import apply_migrations

    dsn = cluster.create_database(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        apply_migrations(conn, MIGRATIONS, upto=BEFORE_HARDENING)
        conn.execute((FIXTURE / "seed_problems.sql").read_text(encoding="utf-8"))
    return dsn


def start_demo_cluster(cache: Path = DEMO_CACHE) -> Cluster:
    """A started cluster holding the demo database `venzory_demo`: from the cache when this
    fixture and these server binaries built one before, else built (and cached)."""
    digest = hashlib.sha256(str(find_bindir()).encode())
    for path in sorted(MIGRATIONS.rglob("*.sql")) + [FIXTURE / "seed_problems.sql"]:
        digest.update(path.relative_to(FIXTURE).as_posix().encode() + path.read_bytes())
    template = cache / f"cluster-{digest.hexdigest()[:16]}"
    if template.is_dir():
        return start_cluster(template=template)
    for stale in cache.glob("cluster-*"):  # built from another fixture or other binaries
        shutil.rmtree(stale, ignore_errors=True)
    cluster = start_cluster()
    try:
        build_demo_database(cluster)
        cluster.save_template(template)
    except BaseException:
        cluster.destroy()
        raise
    return cluster


def _command() -> str:
    """This program as the operator can call it: beside the running Python (a venv's bin/)."""
    beside = Path(sys.executable).parent / "venzory-db-exporter"
    return str(beside) if beside.is_file() else "venzory-db-exporter"


def run_demo(config_path: str, listen: str) -> int:
    if not MIGRATIONS.is_dir():
        print(f"demo: the fixture is not here ({FIXTURE}); run the demo from a checkout of the repository",
              file=sys.stderr)
        return 2
    try:
        cluster = start_demo_cluster()
    except NoPostgresBinaries as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    try:
        dsn = cluster.dsn("venzory_demo")
        # The migrations features too: history, drift, and the deploy prediction of the five
        # pending hardening migrations (the shadow replay runs on the demo server).
        # Settings the operator gave win, except the database: the demo's is the point.
        env = {"PRISMA_MIGRATIONS_DIR": str(MIGRATIONS), "PRISMA_SCHEMA": str(FIXTURE / "prisma" / "schema.prisma"),
               "SHADOW_DATABASE_URL": cluster.url("postgres"), **os.environ,
               "DATABASE_URL": cluster.url("venzory_demo")}
        host, _, port = listen.rpartition(":")
        base = f"http://{host or '127.0.0.1'}:{port}"
        # The same settings as the daemon, or verify would print another picture
        # (constraints "missing", migrations off).
        verify = " ".join(f"{name}={shlex.quote(env[name])}" for name in
                          ("DATABASE_URL", "PRISMA_MIGRATIONS_DIR", "PRISMA_SCHEMA", "SHADOW_DATABASE_URL"))
        print(
            f"demo: PostgreSQL {cluster.port} with sample problems ({dsn})\n"
            f"demo: {base}/readyz answers 200 once the first poll is done (a few seconds); until then\n"
            f"demo: {base}/metrics has no violation series yet. Ctrl-C to stop\n"
            f"demo: the same checks once, in another terminal:\n"
            f"  {verify} {shlex.quote(_command())} verify --config {shlex.quote(config_path)}",
            flush=True,
        )
        return serve(config_path, listen=listen, env=env)
    finally:
        cluster.destroy()
