"""End to end with a real Prisma client: real violations on the test PostgreSQL, logged
by a real app, followed from its log files and posted over HTTP, counted as what they are.

tests/prisma_app/violate.js (Prisma 7 + @prisma/adapter-pg + pino) makes unique,
foreign key, CHECK (check_quantity_non_negative), not-null and raw-query violations
and logs each error once, in the three ways apps do (pino JSON lines, Prisma log
events, `prisma:error` text on stdout). It writes down what it did; the exporter's
counters must equal that, kind and constraint included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from exporter.config import Config
from exporter.events import EventPipeline, KnownNames
from support import wait_for
from test_events_support import error_counts, post, scrape, serving

pytestmark = [pytest.mark.slow, pytest.mark.db]

APP = Path(__file__).parent / "prisma_app"
STYLES = {"pino": "app.log", "events": "prisma-events.log", "stdout": "stdout.log"}
PRISMA_ENV = {"PRISMA_SCHEMA_ENGINE_BINARY": "/bin/false", "PRISMA_ENGINES_CHECKSUM_IGNORE_MISSING": "1",
              "PRISMA_HIDE_UPDATE_MESSAGE": "1", "CHECKPOINT_DISABLE": "1"}


@pytest.fixture(scope="module")
def prisma_app() -> Path:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Node.js 20+ is needed for the real-Prisma test)")
    missing = [p for p in ("@prisma/client", "@prisma/adapter-pg", "pg", "pino", "prisma")
               if not (APP / "node_modules" / p / "package.json").exists()]
    if missing:
        pytest.skip(f"npm packages missing in tests/prisma_app: {', '.join(missing)} (run `npm ci` there)")
    generated = APP / "node_modules" / ".prisma" / "client" / "index.js"
    if not generated.exists() or generated.stat().st_mtime < (APP / "schema.prisma").stat().st_mtime:
        result = subprocess.run(
            [node, str(APP / "node_modules" / "prisma" / "build" / "index.js"), "generate", "--schema", "schema.prisma"],
            cwd=APP, env={**os.environ, **PRISMA_ENV}, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            pytest.fail(f"prisma generate failed:\n{result.stdout}\n{result.stderr}")
    return APP


@pytest.fixture
def database_url(pg_server) -> str:
    dsn = pg_server.create_database("events_e2e")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((APP / "schema.sql").read_text())
    params = conninfo_to_dict(dsn)
    password = f":{params['password']}" if params.get("password") else ""
    return (f"postgresql://{params.get('user', 'postgres')}{password}@{params.get('host', '127.0.0.1')}:"
            f"{params.get('port', 5432)}/{params['dbname']}")


CONFIG = {
    "databases": [{"name": "venzory", "dsn": "postgresql://unused/venzory"}],
    "constraints": [
        {"table": "LocationInventory", "name": "check_quantity_non_negative", "kind": "check", "critical": True},
        {"table": "Item", "name": "Item_practiceId_name_key", "kind": "unique"},
        {"table": "Item", "name": "Item_practiceId_fkey", "kind": "foreign_key"},
        {"table": "Location", "name": "Location_practiceId_fkey", "kind": "foreign_key"},
    ],
}


def run_app(url: str, style: str, log: Path, manifest: Path) -> list[dict]:
    env = {**os.environ, **PRISMA_ENV, "DATABASE_URL": url, "LOG_STYLE": style, "MANIFEST_FILE": str(manifest)}
    if style == "stdout":  # the app's stdout, captured to a file as a container runtime does
        with open(log, "ab") as out:
            result = subprocess.run(["node", "violate.js"], cwd=APP, env=env, stdout=out,
                                    stderr=subprocess.PIPE, text=True, timeout=120)
    else:
        result = subprocess.run(["node", "violate.js"], cwd=APP, env={**env, "LOG_FILE": str(log)},
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(manifest.read_text())


def test_real_prisma_violations_are_counted_from_files_and_over_http(prisma_app, database_url, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    config = Config.model_validate({**CONFIG, "events": {
        "files": [{"path": str(logs / "*.log")}], "start_at": "beginning", "poll_interval": "50ms"}})
    known = KnownNames.from_config(config)
    follower = EventPipeline(config.events, ["venzory"], known)
    follower.start()
    try:
        done = []
        for style, name in STYLES.items():
            done += run_app(database_url, style, logs / name, tmp_path / f"{style}.json")
        expected = Counter((d["code"], d["kind"], d["constraint"], d["model"]) for d in done)
        assert len(done) == 27 and expected[("P2039", "check", "check_quantity_non_negative",
                                             "LocationInventory")] == 2
        wait_for(lambda: error_counts(follower.collector) == dict(expected), timeout=30)
        assert error_counts(follower.collector) == dict(expected)
    finally:
        follower.stop()
    received = scrape(follower.collector)["venzory_db_events_received_total"]
    lines = sum(1 for name in STYLES.values() for line in (logs / name).read_bytes().splitlines() if line.strip())
    assert sum(received.values()) == lines
    assert not any(scrape(follower.collector)["venzory_db_events_rejected_total"].values())

    # The same lines, sent by a shipper to POST /events, give the same counts.
    receiver = EventPipeline(config.events.model_copy(update={"files": []}), ["venzory"], known)
    with serving(receiver.wsgi_app) as port:
        for name in STYLES.values():
            body = (logs / name).read_bytes()
            kind = "text/plain" if name == "stdout.log" else "application/x-ndjson"
            status, answer = post(port, body, headers={"Content-Type": kind}, gzipped=True)
            assert status == 200 and answer["rejected"] == 0
    assert error_counts(receiver.collector) == dict(expected)
