"""The daemon as operators run it - a real process - across SIGHUP reloads (good and bad
configs) and a SIGTERM in the middle of a long query."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from exporter.pgcluster import free_port
from support import get, samples, wait_for
from test_faults import active_sleeps, one_row_table

CHECKS = """\
checks:
  - {name: sleepy, kind: row, table: stock, category: test, severity: warning, rule: "pg_sleep(0.4) IS NOT NULL"}
  - {name: negative, kind: row, table: stock, category: test, severity: warning, rule: "quantity >= 0"}
  - {name: long, kind: row, table: stock, category: test, severity: warning, rule: "pg_sleep(30) IS NOT NULL"}
"""

EVENTS = (b'{"level":50,"err":{"type":"PrismaClientKnownRequestError","code":"P2002","message":"Unique constraint '
          b'failed on the fields: (`sku`)","meta":{"modelName":"Item"}}}\n'
          b'{"level":30,"msg":"GET /api/items 200"}\n')


def write_config(path: Path, databases: dict[str, tuple[str, list[str]]], events_database: str,
                 extra: str = "", statement_timeout: str = "30s") -> None:
    lines = ["exporter:", "  log_level: info", "events:", f"  database: {events_database}", "databases:"]
    for name, (dsn, checks) in databases.items():
        lines += [f"  - name: {name}", f'    dsn: "{dsn}"', "    poll_interval: 300ms",
                  f"    statement_timeout: {statement_timeout}", f"    checks: [{', '.join(checks)}]"]
        if extra:
            lines.append(extra)
            extra = ""  # under the first database only
    path.write_text("\n".join(lines) + "\n" + CHECKS)


class Process:
    """`python -m exporter run` with its stderr collected line by line."""

    def __init__(self, config: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", "--config", str(config), "--listen", f"127.0.0.1:{self.port}"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )
        self.log: list[str] = []
        threading.Thread(target=lambda: self.log.extend(iter(self.proc.stderr.readline, "")), daemon=True).start()
        wait_for(lambda: any("listening on port" in line for line in self.log), timeout=30)

    def value(self, name: str, **labels) -> float | None:
        return samples(get(self.base + "/metrics")[1]).get((name, *sorted(labels.items())))

    def total(self, name: str) -> float:
        return sum(v for k, v in samples(get(self.base + "/metrics")[1]).items() if k[0] == name)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.log)

    def stop(self) -> float:
        started = time.monotonic()
        self.signal(signal.SIGTERM)
        assert self.proc.wait(timeout=10) == 0, "".join(self.log[-20:])
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def two_databases(pg_server):
    dsns = {}
    for name in ("alpha", "beta"):
        dsns[name] = pg_server.create_database(f"reload_{name}")
        one_row_table(dsns[name])
    return dsns


def test_sighup_reload_switches_databases_keeps_counters_and_rejects_a_bad_config(two_databases, tmp_path):
    alpha, beta = two_databases["alpha"], two_databases["beta"]
    config = tmp_path / "exporter.yaml"
    write_config(config, {"alpha": (alpha, ["sleepy", "negative"])}, "alpha")
    exporter = Process(config)
    readiness: list[int] = []
    watching = threading.Event()
    try:
        wait_for(lambda: get(exporter.base + "/readyz")[0] == 200)
        request = urllib.request.Request(exporter.base + "/events", data=EVENTS, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        # alpha's polls (0.4 s) overrun its 300 ms interval: skipped polls are counted
        wait_for(lambda: (exporter.value("venzory_db_polls_skipped_total", database="alpha") or 0) >= 2)

        def watch_readiness():
            while not watching.is_set():
                readiness.append(get(exporter.base + "/readyz")[0])
                time.sleep(0.05)

        watcher = threading.Thread(target=watch_readiness)
        watcher.start()

        # 1. A valid config adds a database and changes alpha's checks.
        skipped = exporter.value("venzory_db_polls_skipped_total", database="alpha")
        write_config(config, {"alpha": (alpha, ["negative"]), "beta": (beta, ["negative"])}, "alpha")
        exporter.signal(signal.SIGHUP)
        wait_for(lambda: exporter.value("venzory_db_up", database="beta") == 1)
        wait_for(lambda: exporter.value("venzory_db_check_success", database="alpha", check="sleepy") is None)
        assert exporter.logged("config reloaded: 2 databases (alpha, beta)")
        assert exporter.value("venzory_db_polls_skipped_total", database="alpha") >= skipped, "not reset"
        assert exporter.value("venzory_db_events_received_total", source="http") == 2
        assert exporter.total("venzory_db_prisma_errors_total") == 1

        # 2. An invalid config is rejected with file:line: key: problem; the old one runs on.
        write_config(config, {"alpha": (alpha, ["negative"]), "beta": (beta, ["negative"])}, "alpha",
                     extra="    bogus: 1")
        line = config.read_text().splitlines().index("    bogus: 1") + 1
        exporter.signal(signal.SIGHUP)
        wait_for(lambda: exporter.logged(f"{config}:{line}: databases[0].bogus: unknown key"))
        assert exporter.logged("config reload rejected, the running config stays")
        polled = exporter.value("venzory_db_last_poll_timestamp_seconds", database="beta")
        wait_for(lambda: exporter.value("venzory_db_last_poll_timestamp_seconds", database="beta") > polled)
        assert exporter.value("venzory_db_up", database="alpha") == 1

        # 3. A config without alpha (and events now labelled beta): alpha's series go,
        # the event counters stay.
        write_config(config, {"beta": (beta, ["negative"])}, "beta")
        exporter.signal(signal.SIGHUP)
        wait_for(lambda: exporter.value("venzory_db_up", database="alpha") is None)
        assert exporter.value("venzory_db_up", database="beta") == 1
        assert exporter.value("venzory_db_polls_skipped_total", database="alpha") is None
        assert exporter.value("venzory_db_events_received_total", source="http") == 2
        assert exporter.total("venzory_db_prisma_errors_total") == 1
        watching.set()
        watcher.join()
        assert readiness and set(readiness) == {200}, "a reload never makes the exporter unready"
        assert exporter.stop() < 5
    finally:
        watching.set()
        exporter.kill()


def test_sigterm_during_a_long_query_exits_within_5s_and_cancels_it(pg_server, two_databases, tmp_path):
    config = tmp_path / "exporter.yaml"
    write_config(config, {"alpha": (two_databases["alpha"], ["long"])}, "alpha", statement_timeout="60s")
    exporter = Process(config)
    try:
        wait_for(lambda: active_sleeps(pg_server.admin_dsn) == 1, timeout=20)  # 30 s of pg_sleep under way
        seconds = exporter.stop()
        print(f"\nSIGTERM during a 30 s query: exited after {seconds:.2f}s")
        assert seconds < 5
        wait_for(lambda: active_sleeps(pg_server.admin_dsn) == 0, timeout=3)  # cancelled, not left running
    finally:
        exporter.kill()
