"""`demo`: one command from nothing to real metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import psycopg
import pytest

from exporter.cli import SHIPPED_CONFIGS
from exporter.demo import start_demo_cluster
from exporter.pgcluster import free_port
from venzory_fixture import PROBLEM_VIOLATIONS


def _read_until(proc: subprocess.Popen, marker: str) -> str:
    """The demo's output up to and including the line that holds `marker`."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError(f"the demo ended without printing {marker!r}:\n{''.join(lines)}")


@pytest.mark.db
def test_demo_serves_real_metrics_and_stops_on_sigterm(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "demo", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, XDG_CACHE_HOME=str(tmp_path)),
    )
    try:
        output = _read_until(proc, "in another terminal:")
        assert f"http://127.0.0.1:{port}/readyz answers 200 once the first poll is done" in output
        assert "with sample problems" in output
        suggested = proc.stdout.readline().strip()
        deadline = time.monotonic() + 90
        body = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                        break
            except OSError:
                time.sleep(0.3)
        n = PROBLEM_VIOLATIONS["location_inventory_negative_quantity"]
        assert f'check="location_inventory_negative_quantity",database="venzory",severity="critical",table="LocationInventory"}} {n}.0' in body

        # The verify the demo suggests, run as printed, sees what the daemon sees: the
        # migration settings are in it (history, drift and the deploy prediction on, not "off").
        assert suggested.endswith(f"verify --config {SHIPPED_CONFIGS[0]}"), suggested
        verify = subprocess.run(["bash", "-c", suggested], capture_output=True, text=True, timeout=180)
        assert verify.returncode == 1, verify.stdout + verify.stderr
        assert verify.stdout.splitlines()[0] == "venzory: migrations: all features on", verify.stdout[:500]
        # The demo's data dropped foreign keys by hand: step 7's first statement drops one again.
        assert "deploy will fail at 20251111140000_add_ondelete_policies_and_constraints statement 1" in verify.stdout

        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
        assert proc.returncode == 0
    finally:
        proc.kill()


def test_demo_says_clearly_when_postgresql_is_missing(tmp_path):
    env = dict(os.environ, PG_BINDIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "exporter", "demo"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no PostgreSQL server binaries found" in result.stderr
    assert "DATABASE_URL" in result.stderr


@pytest.mark.db
def test_a_second_demo_starts_from_the_cached_cluster(tmp_path):
    """The demo's speed-up: the first start keeps the built cluster, a later one copies it
    and is a real, separate server with the demo database."""
    first = start_demo_cluster(tmp_path)
    try:
        (template,) = tmp_path.iterdir()
        assert (template / "PG_VERSION").is_file() and not (template / "postmaster.pid").exists()
        second = start_demo_cluster(tmp_path)
        try:
            assert second.datadir != first.datadir and second.port != first.port
            for cluster in (first, second):
                with psycopg.connect(cluster.dsn("venzory_demo")) as conn:
                    assert conn.execute('SELECT count(*) FROM "LocationInventory" WHERE quantity < 0').fetchone()[0] \
                        == PROBLEM_VIOLATIONS["location_inventory_negative_quantity"]
        finally:
            second.destroy()
    finally:
        first.destroy()
