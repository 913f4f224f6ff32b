"""`demo`: one command from nothing to real metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from exporter.pgcluster import free_port
from venzory_fixture import PROBLEM_VIOLATIONS


@pytest.mark.db
def test_demo_serves_real_metrics_and_stops_on_sigterm():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "demo", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
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
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=15)[0]
        assert proc.returncode == 0, output
        assert f"metrics at http://127.0.0.1:{port}/metrics" in output
        assert "with sample problems" in output
    finally:
        proc.kill()


def test_demo_says_clearly_when_postgresql_is_missing(tmp_path):
    env = dict(os.environ, PG_BINDIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "exporter", "demo"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no PostgreSQL server binaries found" in result.stderr
    assert "DATABASE_URL" in result.stderr
