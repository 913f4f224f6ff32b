#!/usr/bin/env python3
"""Capture what the exporter promises - `verify --json`, `verify`'s text and `/metrics`
(text and OpenMetrics) - on the fixture databases, with timings and timestamps masked,
so two versions can be compared with `diff -r`.

    PYTHONPATH=<checkout> python scripts/contract_snapshot.py OUT_DIR

The exporter runs as a subprocess importing `exporter` from PYTHONPATH (default: this
checkout), and the config and fixture come from the checkout the script sits in. To
capture an older tree, put the script into it (e.g. one from `git archive`):

    git archive f8d1559 | tar -x -C /tmp/before && cp scripts/contract_snapshot.py /tmp/before/scripts/
    PYTHONPATH=/tmp/before python /tmp/before/scripts/contract_snapshot.py /tmp/snap-before
    python scripts/contract_snapshot.py /tmp/snap-after && diff -r /tmp/snap-before /tmp/snap-after

Databases (tests/venzory_fixture.py): `problems` (migrations 1-6 and the problem seed,
five migrations pending) and `clean` (all 11, clean seed), polled by one daemon with the
shipped config (migrations folder, schema.prisma and shadow replay on), and verified one
by one. Needs the PostgreSQL server binaries.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from venzory_fixture import MIGRATIONS, SCHEMA_PRISMA, SHIPPED_CONFIG, build_database  # noqa: E402

from exporter.pgcluster import start_cluster  # noqa: E402

EXPORTER = "import sys; from exporter.cli import main; sys.exit(main())"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
# Samples whose values are times or depend on the machine: the value is masked, the
# series (name and labels) are still compared.
VOLATILE = re.compile(r"^(venzory_db_(last_poll_timestamp|poll_duration|check_duration|"
                      r"last_migration_finished_timestamp)_seconds|process_|python_gc_)")


def exporter(*args: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
    # -P: `python -c` would put the working directory first on sys.path, and a checkout
    # there would win over the PYTHONPATH tree under test.
    return subprocess.Popen([sys.executable, "-P", "-c", EXPORTER, *args], env=env, **kwargs)


def masked_metrics(text: str) -> str:
    """Volatile values masked; the samples of each family sorted (the daemon lists the
    databases in the order their first polls finished)."""
    lines: list[str] = []
    family: list[str] = []
    for line in text.splitlines():
        if line.startswith("#"):
            lines += sorted(family) + [line]
            family = []
        elif VOLATILE.match(line):
            family.append(line.rsplit(" ", 1)[0] + " <masked>")
        else:
            family.append(line)
    return "\n".join(lines + sorted(family)) + "\n"


def masked_json(value):
    if isinstance(value, dict):
        return {k: "<masked>" if k == "duration_seconds" else masked_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked_json(v) for v in value]
    return value


def masked_text(text: str, port: int) -> str:
    text = re.sub(r", \d+\.\d\ds\):", ", <masked>s):", text)  # "Checks (full scan, 0.12s):"
    return text.replace(f"port={port}", "port=<port>")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str, accept: str | None = None) -> str:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def wait_ready(base: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the exporter exited with {process.returncode}")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the exporter did not become ready")


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    tree = os.environ.get("PYTHONPATH", str(REPO))
    cluster = start_cluster()
    try:
        dsns = {"problems": build_database(cluster, "snap_problems", seed="problems"),
                "clean": build_database(cluster, "snap_clean", seed="clean")}
        env = {**os.environ, "PYTHONPATH": tree, "PRISMA_MIGRATIONS_DIR": str(MIGRATIONS),
               "PRISMA_SCHEMA": str(SCHEMA_PRISMA), "SHADOW_DATABASE_URL": cluster.url("postgres")}
        for name, dsn in dsns.items():
            run_env = {**env, "DATABASE_URL": dsn}
            for args, suffix in ((["--json"], "verify.json"), ([], "verify.txt")):
                done = exporter("verify", "--config", str(SHIPPED_CONFIG), *args, env=run_env,
                                stdout=subprocess.PIPE, text=True)
                stdout, _ = done.communicate(timeout=300)
                if suffix.endswith("json"):
                    stdout = json.dumps(masked_json(json.loads(stdout)), indent=2) + "\n"
                else:
                    stdout = masked_text(stdout, cluster.port)
                (out / f"{name}.{suffix}").write_text(f"exit {done.returncode}\n{stdout}", encoding="utf-8")

        # One daemon, both databases: the shipped database entry twice, named apart.
        config = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
        template = config["databases"][0]
        config["databases"] = [{**template, "name": name, "dsn": dsn} for name, dsn in dsns.items()]
        config_path = out / "daemon-config.yaml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        port = free_port()
        daemon = exporter("run", "--config", str(config_path), "--listen", f"127.0.0.1:{port}", env=env,
                          stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, daemon)
            (out / "metrics.txt").write_text(masked_metrics(scrape(base + "/metrics")), encoding="utf-8")
            (out / "metrics.openmetrics.txt").write_text(masked_metrics(scrape(base + "/metrics", OPENMETRICS)),
                                                         encoding="utf-8")
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
        config_path.unlink()
    finally:
        cluster.destroy()
    print(f"captured in {out} (exporter from {tree})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
