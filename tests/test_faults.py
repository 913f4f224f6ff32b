"""Faults, against real PostgreSQL servers, real sockets and real processes: a server
killed in the middle of a poll, a network that silently swallows the traffic, a check
slower than its timeout, a server out of connection slots, many databases under one
connection cap, migration inputs half-written by a deploy. Each test asserts what
on-call sees in /metrics, and how long it takes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import psycopg
import pytest

from exporter.config import Config, ConfigError, load_config
from exporter.daemon import Daemon
from exporter.db import APPLICATION_NAME, Database
from exporter.pgcluster import start_cluster
from exporter.poll import Poller
from support import exposition, get, samples, wait_for
from venzory_fixture import MIGRATIONS, SCHEMA_PRISMA

pytestmark = pytest.mark.db  # starts PostgreSQL clusters of its own


def config(databases: list[dict], checks: list[dict], **exporter) -> Config:
    return Config.model_validate({"exporter": exporter, "databases": databases, "checks": checks})


def row_check(name: str, table: str, rule: str, **extra) -> dict:
    return {"name": name, "kind": "row", "table": table, "category": "test", "severity": "warning",
            "rule": rule, **extra}


def value(text: str, name: str, **labels) -> float | None:
    return samples(text).get((name, *sorted(labels.items())))


class Exporter:
    """A Daemon in this process on a free port, scraped over real HTTP."""

    def __init__(self, cfg: Config):
        self.daemon = Daemon(cfg, "127.0.0.1:0")
        self.base = f"http://127.0.0.1:{self.daemon.server.port}"

    def __enter__(self) -> Exporter:
        self.daemon.start()
        return self

    def __exit__(self, *exc) -> None:
        self.daemon.stop()

    def metrics(self) -> str:
        status, text = get(self.base + "/metrics")
        assert status == 200
        return text

    def value(self, name: str, **labels) -> float | None:
        return value(self.metrics(), name, **labels)

    def wait_value(self, expected: float, name: str, timeout: float = 20, **labels) -> float:
        wait_for(lambda: self.value(name, **labels) == expected, timeout=timeout)
        return time.monotonic()


def active_sleeps(admin_dsn: str) -> int:
    """Queries of the exporter running pg_sleep right now, seen from the server."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'active' "
            "AND query LIKE '%%pg_sleep%%'", [APPLICATION_NAME]).fetchone()[0]


def exporter_sessions(admin_dsn: str, databases: str = "faults_many_%") -> int:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND datname LIKE %s",
                            [APPLICATION_NAME, databases]).fetchone()[0]


def one_row_table(dsn: str, grant_to: str | None = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE stock (id int, quantity int)")
        conn.execute("INSERT INTO stock VALUES (1, -1)")
        if grant_to:
            conn.execute(f"GRANT SELECT ON stock TO {grant_to}")
        conn.execute("CHECKPOINT")  # the test clusters run with fsync off


# -- 1. the server killed in the middle of a poll -------------------------------------------------

def kill_postmaster(cluster) -> None:
    pid = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
    children = [p for p in os.listdir("/proc") if p.isdigit() and _is_child_of(p, pid)]
    os.kill(pid, signal.SIGKILL)
    # Its children notice and exit; the server cannot start again before they have.
    wait_for(lambda: not any(_alive(p) for p in [str(pid), *children]), timeout=20)
    if _stat(str(pid)):
        # A zombie (this container's init does not reap it; systemd would), which
        # PostgreSQL takes for a live postmaster: its lock files are stale.
        for lock in [cluster.datadir / "postmaster.pid", *cluster.datadir.parent.glob(".s.PGSQL.*.lock")]:
            lock.unlink()


def _stat(proc: str) -> list[str]:
    """state, ppid, ... of a process (after its name)."""
    try:
        return Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _is_child_of(proc: str, parent: int) -> bool:
    return _stat(proc)[1:2] == [str(parent)]


def _alive(proc: str) -> bool:
    return _stat(proc)[:1] not in ([], ["Z"])  # a zombie no init reaps is gone too


@pytest.mark.parametrize("kill", ["pg_ctl_immediate", "kill_9_postmaster"])
def test_server_killed_mid_poll_goes_down_and_comes_back(kill):
    cluster = start_cluster()
    try:
        dsn = cluster.create_database("killed")
        one_row_table(dsn)
        cfg = config([{"name": "main", "dsn": dsn, "poll_interval": "1s", "connect_timeout": "2s"}],
                     [row_check("slow", "stock", "pg_sleep(1) IS NOT NULL"),
                      row_check("negative", "stock", "quantity >= 0")])
        with Exporter(cfg) as exporter:
            exporter.wait_value(1, "venzory_db_up", database="main")
            wait_for(lambda: active_sleeps(cluster.dsn()) == 1)  # a poll is in the middle of its scan
            killed = time.monotonic()
            if kill == "pg_ctl_immediate":
                cluster.stop("immediate")
            else:
                kill_postmaster(cluster)
            down = exporter.wait_value(0, "venzory_db_up", database="main")
            text = exporter.metrics()
            assert value(text, "venzory_db_down_reason", database="main", reason="connection_lost") == 1 or \
                value(text, "venzory_db_down_reason", database="main", reason="connect_failed") == 1
            assert value(text, "venzory_db_check_violations", database="main", check="negative", table="stock",
                         category="test", severity="warning") is None  # absent, not stale
            # The poll in flight ends with the server, not at some timeout.
            assert down - killed < 2.5, f"down reported {down - killed:.1f}s after the kill"
            exporter.wait_value(1, "venzory_db_down_reason", database="main", reason="connect_failed")

            cluster.start()
            restarted = time.monotonic()
            back = exporter.wait_value(1, "venzory_db_up", database="main")  # same exporter, no restart
            assert back - restarted < 4, f"up again {back - restarted:.1f}s after the restart"
            print(f"\n{kill}: down {down - killed:.2f}s after the kill, up {back - restarted:.2f}s after the restart")
            text = exporter.metrics()
            assert value(text, "venzory_db_check_violations", database="main", check="negative", table="stock",
                         category="test", severity="warning") == 1
            assert not [k for k in samples(text) if k[0] == "venzory_db_down_reason"]
    finally:
        cluster.destroy()


# -- 2. the network silently dropping the traffic -------------------------------------------------

class BlackHoleProxy:
    """A TCP proxy on 127.0.0.1 to a PostgreSQL server that can turn into a black hole:
    connections are still accepted (the kernel still acknowledges every packet) but
    nothing is forwarded or answered any more, on new and established connections alike -
    what a hung proxy or load balancer does. TCP keepalives cannot see it."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.black_hole = False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.sockets.append(client)
            if self.black_hole:
                threading.Thread(target=self._pump, args=(client, None), daemon=True).start()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket | None) -> None:
        try:
            while data := source.recv(65536):
                if target is not None and not self.black_hole:  # swallowed, never answered
                    target.sendall(data)
            if target is not None and not self.black_hole:
                target.shutdown(socket.SHUT_WR)  # pass the end of the stream on, as a proxy does
        except OSError:
            pass

    def close(self) -> None:
        for s in self.sockets:
            s.close()


@pytest.fixture
def proxied_dsn(pg_server):
    dsn = pg_server.create_database("faults_black_hole")
    one_row_table(dsn)
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    proxy = BlackHoleProxy(int(params["port"]))
    yield psycopg.conninfo.make_conninfo(dsn, host="127.0.0.1", port=str(proxy.port)), proxy
    proxy.close()


def test_black_holed_network_ends_polls_within_the_timeouts_and_scrapes_stay_fast(pg_server, proxied_dsn):
    dsn, proxy = proxied_dsn
    statement_timeout, connect_timeout = 2, 2  # connect_timeout: libpq's minimum
    cfg = config([{"name": "main", "dsn": dsn, "poll_interval": "1s", "statement_timeout": statement_timeout,
                   "connect_timeout": connect_timeout}],
                 [row_check("slow", "stock", "pg_sleep(0.5) IS NOT NULL")])
    scrapes: list[float] = []
    with Exporter(cfg) as exporter:
        exporter.wait_value(1, "venzory_db_up", database="main")
        stop_scraping = threading.Event()

        def scrape_all_along():
            while not stop_scraping.is_set():
                started = time.monotonic()
                exporter.metrics()
                scrapes.append(time.monotonic() - started)
                time.sleep(0.05)

        scraper = threading.Thread(target=scrape_all_along)
        scraper.start()
        try:
            wait_for(lambda: active_sleeps(pg_server.admin_dsn) == 1)  # a poll is waiting for its answer
            proxy.black_hole = True
            swallowed = time.monotonic()
            down = exporter.wait_value(1, "venzory_db_down_reason", database="main", reason="no_answer")
            mid_query = exporter.value("venzory_db_poll_duration_seconds", database="main")
            # New polls cannot even connect: the connect timeout ends them.
            exporter.wait_value(1, "venzory_db_down_reason", database="main", reason="connect_timeout")
            wait_for(lambda: exporter.value("venzory_db_last_poll_timestamp_seconds", database="main") > time.time() - 1)
            connecting = exporter.value("venzory_db_poll_duration_seconds", database="main")

            proxy.black_hole = False
            healed = time.monotonic()
            back = exporter.wait_value(1, "venzory_db_up", database="main")
        finally:
            stop_scraping.set()
            scraper.join()
    bound = statement_timeout + connect_timeout
    print(f"\nblack hole: poll in flight ended after {mid_query:.2f}s (down {down - swallowed:.2f}s after the "
          f"switch), connecting poll {connecting:.2f}s, up {back - healed:.2f}s after healing; "
          f"{len(scrapes)} scrapes, slowest {max(scrapes) * 1000:.1f} ms")
    assert mid_query <= bound + 1.0, "a statement the server never answers is abandoned after its deadline"
    assert connecting <= connect_timeout + 0.5
    # a connect attempt begun just before the healing times out, the next poll succeeds
    assert back - healed < connect_timeout + 1 + 2
    assert len(scrapes) > 40 and max(scrapes) < 0.05, "scrapes never wait for a poll"


def test_sessions_carry_tcp_user_timeout_and_keepalives(clean_dsn):
    cfg = config([{"name": "main", "dsn": clean_dsn}], [])
    with Database(cfg.databases[0]).connection() as session:
        parameters = session.info.get_parameters()
    assert parameters["tcp_user_timeout"] == "25000"
    assert (parameters["keepalives_idle"], parameters["keepalives_count"]) == ("10", "3")


# -- 3. a check slower than its own timeout -------------------------------------------------------

def test_a_check_with_its_own_timeout_fails_alone(pg_server):
    dsn = pg_server.create_database("faults_check_timeout")
    one_row_table(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE item (sku text)")
        conn.execute("INSERT INTO item VALUES ('a'), ('a')")
    cfg = config(
        [{"name": "main", "dsn": dsn, "statement_timeout": "1s"}],
        [row_check("too_slow", "stock", "pg_sleep(3) IS NOT NULL", timeout="300ms"),
         row_check("negative", "stock", "quantity >= 0"),
         row_check("positive_id", "stock", "id > 0"),
         # longer than the database's statement_timeout, within its own: it succeeds
         row_check("slow_but_allowed", "stock", "pg_sleep(1.5) IS NOT NULL", timeout="5s"),
         # runs after both on the same session: the database's 1 s applies again
         {"name": "slow_duplicates", "kind": "duplicate", "table": "item", "category": "test",
          "severity": "warning", "columns": ["sku"], "where": "pg_sleep(0.8) IS NOT NULL"}],
    )
    with Poller(cfg, cfg.databases[0]) as poller:
        started = time.monotonic()
        result = poller.poll(full_scan=True)
        seconds = time.monotonic() - started
    checks = {c.check.name: c for c in result.checks}
    assert result.up
    assert (checks["too_slow"].status, checks["too_slow"].reason) == ("failed", "timeout")
    assert (checks["negative"].status, checks["negative"].violations) == ("violated", 1)
    assert (checks["positive_id"].status, checks["positive_id"].violations) == ("ok", 0)
    assert (checks["slow_but_allowed"].status, checks["slow_but_allowed"].violations) == ("ok", 0)
    assert (checks["slow_duplicates"].status, checks["slow_duplicates"].reason) == ("failed", "timeout")
    assert seconds < 0.3 + 1.5 + 1.0 + 1.5, "each slow query ended at its own timeout"
    print(f"\nper-check timeouts: poll of 5 checks {seconds:.2f}s (0.3 s + 1.5 s + 1.0 s of timeouts and sleeps)")

    text = exposition(result)
    assert value(text, "venzory_db_check_success", database="main", check="too_slow") == 0
    assert value(text, "venzory_db_check_success", database="main", check="negative") == 1
    assert value(text, "venzory_db_check_success", database="main", check="slow_but_allowed") == 1


# -- 4. no connection slots, and the exporter's own connection cap ---------------------------------

def test_server_out_of_connection_slots_is_reported_bounded_and_recovered():
    cluster = start_cluster(settings={"max_connections": "8", "superuser_reserved_connections": "3"})
    held: list[psycopg.Connection] = []
    try:
        dsn = cluster.create_database("crowded")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE ROLE app LOGIN; CREATE ROLE monitor LOGIN")
        one_row_table(dsn, grant_to="monitor")
        # The application takes every slot a role without SUPERUSER may have.
        while True:
            try:
                held.append(psycopg.connect(cluster.dsn("crowded", user="app")))
            except psycopg.OperationalError:
                break
        cfg = config([{"name": "main", "dsn": cluster.dsn("crowded", user="monitor")}],
                     [row_check("negative", "stock", "quantity >= 0")])
        poller = Poller(cfg, cfg.databases[0])
        crowded = poller.poll()
        text = exposition(crowded)
        assert not crowded.up and crowded.duration < 1.0, "refused at once, no waiting for a slot"
        print(f"\nout of slots: poll refused after {crowded.duration * 1000:.0f} ms")
        assert "connection slots are reserved" in crowded.error
        assert value(text, "venzory_db_up", database="main") == 0
        assert value(text, "venzory_db_down_reason", database="main", reason="too_many_connections") == 1

        held.pop().close()
        text = exposition(poller.poll())
        assert value(text, "venzory_db_up", database="main") == 1
        assert value(text, "venzory_db_check_violations", database="main", check="negative", table="stock",
                     category="test", severity="warning") == 1
        poller.close()
    finally:
        for conn in held:
            conn.close()
        cluster.destroy()


def test_the_connection_cap_is_bounded_by_default_and_validated(tmp_path):
    fifty = [{"name": f"db{i}", "dsn": "host=127.0.0.1"} for i in range(50)]
    assert config(fifty, []).exporter.connection_limit == 8  # not 50 x pool_size
    assert config(fifty, [], max_concurrent_polls=10).exporter.connection_limit == 20
    file = tmp_path / "exporter.yaml"
    file.write_text("exporter:\n  max_connections: 2\ndatabases:\n  - {name: a, dsn: host=x}\n")
    with pytest.raises(ConfigError, match=r"exporter.yaml:1: exporter: max_connections \(2\) must be at least "
                                          r"max_concurrent_polls \(4\)"):
        load_config(file)


@pytest.fixture(scope="module")
def many_dsns(pg_server):
    dsns = []
    for i in range(16):
        dsn = pg_server.create_database(f"faults_many_{i}")
        one_row_table(dsn)
        dsns.append(dsn)
    return dsns


def test_connections_to_many_databases_never_exceed_max_connections(pg_server, many_dsns):
    # Every poll holds its session 0.3 s and wants a lock watcher's after 0.2 s.
    cfg = config([{"name": f"db{i}", "dsn": dsn, "poll_interval": "1s"} for i, dsn in enumerate(many_dsns)],
                 [row_check("slow", "stock", "pg_sleep(0.3) IS NOT NULL")],
                 max_concurrent_polls=3, max_connections=4)
    counts: list[int] = []
    with Exporter(cfg) as exporter:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            counts.append(exporter_sessions(pg_server.admin_dsn))
            time.sleep(0.02)
        text = exporter.metrics()
    print(f"\nsessions of the exporter: max {max(counts)} over {len(counts)} samples (cap 4)")
    assert max(counts) <= 4, "exporter.max_connections is a hard cap"
    assert max(counts) >= 3, "the polls did run concurrently"
    assert all(value(text, "venzory_db_up", database=f"db{i}") == 1 for i in range(16))
    wait_for(lambda: exporter_sessions(pg_server.admin_dsn) == 0, timeout=3)  # nothing kept open after a stop


def test_between_polls_no_session_is_kept_open(pg_server, many_dsns):
    cfg = config([{"name": f"db{i}", "dsn": dsn, "poll_interval": "1h"} for i, dsn in enumerate(many_dsns)],
                 [row_check("fast", "stock", "quantity >= 0")])
    with Exporter(cfg) as exporter:
        wait_for(lambda: exporter.daemon.store.ready())
        assert exporter_sessions(pg_server.admin_dsn) == 0, "16 databases polled, none held open"


# -- 5. migration inputs half-written by a deploy while the daemon runs ----------------------------

def test_migration_inputs_broken_mid_deploy_are_reported_and_picked_up_when_whole(clean_dsn, tmp_path):
    folder = shutil.copytree(MIGRATIONS, tmp_path / "migrations")
    schema = tmp_path / "schema.prisma"
    whole = SCHEMA_PRISMA.read_text()
    schema.write_text(whole)
    cfg = config([{"name": "main", "dsn": clean_dsn, "poll_interval": "300ms",
                   "migrations": {"dir": str(folder), "schema_prisma": str(schema)}}],
                 [row_check("negative", "LocationInventory", "quantity >= 0")])
    parts = ("history", "schema_prisma")
    with Exporter(cfg) as exporter:
        for part in parts:
            exporter.wait_value(1, "venzory_db_migrations_part_success", database="main", part=part)
        assert exporter.value("venzory_db_migrations", database="main", state="pending") == 0

        # The deploy moves the old folder away before copying the new one, and is half-way
        # through writing schema.prisma.
        folder.rename(tmp_path / "migrations.old")
        schema.write_text(whole[: len(whole) // 2])
        for part in parts:
            exporter.wait_value(0, "venzory_db_migrations_part_success", database="main", part=part)
        text = exporter.metrics()
        assert value(text, "venzory_db_up", database="main") == 1  # the rest still answers
        assert value(text, "venzory_db_migrations", database="main", state="pending") is None  # unknown
        assert value(text, "venzory_db_migrations", database="main", state="applied") == 11
        assert value(text, "venzory_db_check_success", database="main", check="negative") == 1

        # A file that is not text yet, then the whole file and folder.
        schema.write_bytes(b"\xff\xfe\x00garbage")
        time.sleep(0.7)
        assert exporter.value("venzory_db_migrations_part_success", database="main", part="schema_prisma") == 0
        (tmp_path / "migrations.old").rename(folder)
        schema.write_text(whole)
        for part in parts:
            exporter.wait_value(1, "venzory_db_migrations_part_success", database="main", part=part)
        assert exporter.value("venzory_db_migrations", database="main", state="pending") == 0
        assert exporter.daemon.scheduler._scheduler.running  # never crashed
