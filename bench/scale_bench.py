"""Scale: one exporter daemon watching N databases (default 50) on one PostgreSQL server.

    python bench/scale_bench.py [--databases 50] [--interval 30] [--duration 180]
                                [--scrape-every 0.25] [--seed mixed] [--migrations] [--keep]

Starts its own throwaway PostgreSQL 15 (exporter.pgcluster), builds two template databases
from the Prisma migrations fixture (tests/venzory_fixture.build_database):

  tmpl_clean     all 11 migrations + seed_clean.sql     (guards validated: catalog answers)
  tmpl_problems  steps 1-6 + seed_problems.sql          (no guards: every table is read)

and creates N databases from them with CREATE DATABASE ... TEMPLATE (--seed mixed:
alternately clean and problems). A role `venzory_monitor` with SELECT only is the
exporter's user. The config is config/venzory.yaml (its checks, constraints, events) with
N databases at --interval; --migrations turns the migrations feature on for all of them
(the fixture's folder and schema.prisma, the cluster itself as the shadow server).

Then the real daemon runs as a subprocess (`python -m exporter run --config GENERATED.yaml
--listen 127.0.0.1:PORT`) for --duration seconds, while this script samples:

  every 0.5 s   pg_stat_activity rows with application_name = 'venzory-db-exporter'
                (total and active) and the daemon's RSS, threads, CPU seconds, open fds
  every --scrape-every s
                GET /metrics: status, latency, size; from the body, every database's
                venzory_db_last_poll_timestamp_seconds and poll duration, i.e. every poll
                (start = finish - duration)

and reports: how the polls spread over the interval (per round: the spread of the k-th
poll of every database; phases of later polls in tenths of the interval; most polls
started in one second; most polls running at once), connections held (max, median),
RSS over time, /metrics latency (median/p99) and size (bytes, series, per database).
A table on stdout and everything in bench/out/scale_bench-<timestamp>.json.

The helpers at the top (config generation, the daemon as a subprocess, /proc sampling,
a light /metrics parser) are shared with bench/soak_bench.py.
"""

from __future__ import annotations

import argparse
import bisect
import copy
import gzip as _gzip
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from exporter.config import load_config  # noqa: E402
from exporter.db import APPLICATION_NAME  # noqa: E402
from exporter.pgcluster import free_port, start_cluster  # noqa: E402

SHIPPED_CONFIG = REPO / "config" / "venzory.yaml"
FIXTURE = REPO / "tests" / "fixtures" / "venzory"
MIGRATIONS = FIXTURE / "prisma" / "migrations"
SCHEMA_PRISMA = FIXTURE / "prisma" / "schema.prisma"
OUT = REPO / "bench" / "out"
MONITOR_ROLE = "venzory_monitor"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------
# Shared helpers (soak_bench.py imports these)

def load1() -> float:
    return round(os.getloadavg()[0], 2)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def summary(values: list[float], digits: int = 2) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "min": round(min(values), digits), "median": round(statistics.median(values), digits),
            "p90": round(percentile(values, 0.90), digits), "p99": round(percentile(values, 0.99), digits),
            "max": round(max(values), digits)}


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, in value units per hour."""
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return None if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den * 3600


def create_monitor_role(cluster) -> None:
    """A login role that can only read, like the production one (README, docs/configuration.md)."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [MONITOR_ROLE]).fetchone()
        if not exists:
            conn.execute(f"CREATE ROLE {MONITOR_ROLE} LOGIN")


def grant_read(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {MONITOR_ROLE}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {MONITOR_ROLE}")


def write_config(path: Path, databases: list[tuple[str, str]], *, poll_interval: float,
                 migrations: dict | None = None, exporter: dict | None = None, events: dict | None = None) -> Path:
    """config/venzory.yaml (checks, constraints, events, the first database's settings) with
    `databases` (name, dsn) instead of its one database; validated with load_config."""
    shipped = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    template = shipped["databases"][0]
    entries = []
    for name, dsn in databases:
        entry = copy.deepcopy(template)
        entry.update({"name": name, "dsn": dsn, "poll_interval": f"{poll_interval:g}s"})
        entry["migrations"].update(migrations or {"dir": "", "schema_prisma": "", "shadow_dsn": "", "snapshot": ""})
        entries.append(entry)
    shipped["databases"] = entries
    shipped["exporter"].update({"log_format": "plain", "log_level": "info", "sentry_dsn": ""}, **(exporter or {}))
    if events is not None:
        shipped["events"] = {**shipped["events"], **events}
    path.write_text(yaml.safe_dump(shipped, sort_keys=False, width=200), encoding="utf-8")
    load_config(path, env={})  # raises ConfigError with file:line when something is wrong
    return path


def start_exporter(config: Path, port: int, log_path: Path) -> subprocess.Popen:
    """The real daemon, as production runs it."""
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "exporter", "run", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
        cwd=REPO, env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        stdout=log, stderr=subprocess.STDOUT,
    )


def wait_ready(proc: subprocess.Popen, port: int, log_path: Path, timeout: float = 600) -> float:
    """Seconds until /readyz says every database has completed its first poll."""
    started = time.monotonic()
    while True:
        try:
            status, _, _ = http_get(port, "/readyz", timeout=2)
            if status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the exporter exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the exporter was not ready in {timeout:.0f}s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)


def stop_exporter(proc: subprocess.Popen) -> dict:
    """SIGTERM, and how long the daemon took to exit (it promises a few seconds)."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
        return {"exit_code": code, "shutdown_s": None, "killed": True}
    return {"exit_code": code, "shutdown_s": round(time.monotonic() - started, 2), "killed": False}


def http_get(port: int, path: str = "/metrics", timeout: float = 10, gzip: bool = False) -> tuple[int, float, bytes]:
    """(status, seconds, body) of one GET on a fresh connection (the server speaks HTTP/1.0).
    With `gzip`, asks for Content-Encoding gzip as Prometheus does; the body returned is
    decoded, its size on the wire is in `http_get.wire_bytes`."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept-Encoding": "gzip"} if gzip else {})
        response = conn.getresponse()
        body = response.read()
        seconds = time.perf_counter() - started
        http_get.wire_bytes = len(body)
        if response.getheader("Content-Encoding") == "gzip":
            body = _gzip.decompress(body)
        return response.status, seconds, body
    finally:
        conn.close()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str, prefixes: tuple[str, ...] | None = None) -> dict[str, list[tuple[dict, float]]]:
    """Text exposition -> {sample name: [(labels, value)]}, only names starting with `prefixes`."""
    out: dict[str, list[tuple[dict, float]]] = {}
    for line in text.splitlines():
        if not line or line[0] == "#" or (prefixes and not line.startswith(prefixes)):
            continue
        m = _SAMPLE.match(line)
        if m:
            labels = dict(_LABEL.findall(m.group(2) or ""))
            out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def series_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and line[0] != "#")


def proc_sample(pid: int) -> dict:
    """RSS, peak RSS (MB), threads, CPU seconds (user + system) and open fds of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    kb = {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM|Threads):\s+(\d+)", status, re.M)}
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {"rss_mb": round(kb["VmRSS"] / 1024, 1), "hwm_mb": round(kb["VmHWM"] / 1024, 1), "threads": kb["Threads"],
            "cpu_s": (int(fields[11]) + int(fields[12])) / CLK_TCK, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def code_version() -> dict:
    """Which exporter code was measured: others edit it while benchmarks run (read-only git)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return {"head": git("rev-parse", "--short", "HEAD"),
            "modified": git("status", "--short", "--", "exporter").splitlines()}


def exporter_log_problems(log_path: Path) -> dict:
    """Warnings, errors and tracebacks in the daemon's log."""
    lines = log_path.read_text(errors="replace").splitlines()
    bad = [line for line in lines if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", line)]
    return {"lines": len(lines), "warnings_or_errors": len(bad), "first": bad[:10]}


class Sampler(threading.Thread):
    """Calls `fn()` every `every` seconds (absolute schedule) and keeps (t, value) pairs."""

    def __init__(self, every: float, fn, name: str):
        super().__init__(daemon=True, name=name)
        self.every, self.fn = every, fn
        self.samples: list[tuple[float, object]] = []
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._halt.is_set():
            try:
                self.samples.append((time.time(), self.fn()))
            except Exception as e:  # noqa: BLE001 - a sampler reports, never stops the bench
                self.errors.append(f"{time.time():.1f} {type(e).__name__}: {e}")
            next_at += self.every
            self._halt.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def activity_counter(cluster) -> callable:
    """A function counting the exporter's sessions in pg_stat_activity (on a connection of its own)."""
    conn = psycopg.connect(cluster.dsn(), autocommit=True, application_name="scale-bench-sampler")
    lock = threading.Lock()

    def count() -> dict:
        with lock:
            total, active, dbs = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE state = 'active'), count(DISTINCT datname) "
                "FROM pg_stat_activity WHERE application_name = %s", [APPLICATION_NAME]).fetchone()
        return {"total": total, "active": active, "databases": dbs}

    count.close = conn.close  # type: ignore[attr-defined]
    return count


# ------------------------------------------------------------------------------------------
# Building N databases

def build_templates(cluster, seeds: set[str]) -> dict[str, float]:
    from venzory_fixture import build_database  # tests/venzory_fixture.py: the suite's own builder

    took = {}
    for seed in sorted(seeds):
        started = time.monotonic()
        dsn = build_database(cluster, f"tmpl_{seed}", seed=seed)
        grant_read(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
        took[seed] = round(time.monotonic() - started, 2)
    return took


def create_databases(cluster, count: int, seed: str) -> list[tuple[str, str, str]]:
    """(name, kind, monitor DSN) of `count` databases copied from the templates."""
    out = []
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        for i in range(count):
            kind = seed if seed != "mixed" else ("clean" if i % 2 == 0 else "problems")
            name = f"venzory_{i:03d}"
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "tmpl_{kind}"')
            out.append((name, kind, cluster.dsn(name, user=MONITOR_ROLE)))
    return out


# ------------------------------------------------------------------------------------------
# Analysis

def polls_from_scrapes(observations: list[tuple[float, dict]]) -> dict[str, list[dict]]:
    """Every distinct (database, last poll finish) seen in the scrapes -> one poll."""
    polls: dict[str, dict[float, dict]] = {}
    for _, per_db in observations:
        for db, (finished, duration, up) in per_db.items():
            polls.setdefault(db, {})[finished] = {"finished": finished, "started": finished - duration,
                                                  "duration": duration, "up": up}
    return {db: sorted(p.values(), key=lambda x: x["started"]) for db, p in polls.items()}


def spread_report(polls: dict[str, list[dict]], interval: float) -> dict:
    all_polls = [p for ps in polls.values() for p in ps]
    if not all_polls:
        return {}
    origin = min(p["started"] for p in all_polls)
    rounds = []
    k = 0
    while True:
        kth = [ps[k] for ps in polls.values() if len(ps) > k]
        if len(kth) < len(polls):  # a round not every database has finished yet
            break
        starts = [p["started"] - origin for p in kth]
        finishes = [p["finished"] - origin for p in kth]
        rounds.append({"round": k + 1, "first_start_s": round(min(starts), 2), "last_start_s": round(max(starts), 2),
                       "start_spread_s": round(max(starts) - min(starts), 2),
                       "all_done_s": round(max(finishes), 2),
                       "start_to_all_done_s": round(max(finishes) - min(starts), 2)})
        k += 1
    later = [p for ps in polls.values() for p in ps[1:]]
    tenths = [0] * 10
    for p in later:
        tenths[int(((p["started"] - origin) % interval) / interval * 10) % 10] += 1
    starts = sorted(p["started"] for p in all_polls)
    later_starts = sorted(p["started"] for p in later)

    def most_in_window(times: list[float], width: float) -> int:
        best, j = 0, 0
        for i, t in enumerate(times):
            while times[j] < t - width:
                j += 1
            best = max(best, i - j + 1)
        return best

    events = sorted([(p["started"], 1) for p in later] + [(p["finished"], -1) for p in later])
    running = most_running = 0
    for _, delta in events:
        running += delta
        most_running = max(most_running, running)
    gaps = [b["started"] - a["started"] for ps in polls.values() for a, b in zip(ps, ps[1:])]
    durations = [p["duration"] for p in all_polls]
    first = [ps[0]["duration"] for ps in polls.values()]
    return {
        "databases": len(polls), "polls_seen": len(all_polls), "rounds": rounds,
        "later_polls_start_phase_tenths_of_interval": tenths,
        "ideal_per_tenth": round(len(later) / 10, 1),
        "most_polls_started_in_1s": most_in_window(later_starts, 1.0) if later_starts else None,
        "most_polls_started_in_1s_incl_first_round": most_in_window(starts, 1.0),
        "ideal_polls_per_1s": round(len(polls) / interval, 2),
        "most_later_polls_running_at_once": most_running,
        "observed_interval_s": summary(gaps, 2),
        "poll_duration_s": summary(durations, 3),
        "first_poll_duration_s": summary(first, 3),
        "later_poll_duration_s": summary([p["duration"] for p in later], 3),
        "polls_down": sum(1 for p in all_polls if not p["up"]),
    }


def per_database_size(text: str, databases: list[str]) -> dict:
    """Bytes and series of one database's lines (the `database` label), averaged per kind."""
    per_db = {db: [0, 0] for db in databases}
    shared_bytes = shared_series = 0
    pattern = re.compile(r'database="([^"]+)"')
    for line in text.splitlines(keepends=True):
        if line.startswith("#"):
            shared_bytes += len(line.encode())
            continue
        m = pattern.search(line)
        if m and m.group(1) in per_db:
            per_db[m.group(1)][0] += len(line.encode())
            per_db[m.group(1)][1] += 1
        else:
            shared_bytes += len(line.encode())
            shared_series += 1 if line.strip() else 0
    return {"per_db": per_db, "shared_bytes": shared_bytes, "shared_series": shared_series}


# ------------------------------------------------------------------------------------------

def run(args) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    print(f"load at start: {uptime()}", flush=True)
    cluster = start_cluster(settings={"max_connections": str(max(200, 3 * args.databases + 50)),
                                      "shared_buffers": "'256MB'"})
    print(f"cluster on port {cluster.port}, data in {cluster.datadir}", flush=True)
    result: dict = {"args": vars(args), "uptime_start": uptime(), "code": code_version()}
    proc = None
    try:
        create_monitor_role(cluster)
        seeds = {"clean", "problems"} if args.seed == "mixed" else {args.seed}
        build_started = time.monotonic()
        result["templates_s"] = build_templates(cluster, seeds)
        dbs = create_databases(cluster, args.databases, args.seed)
        result["build_s"] = round(time.monotonic() - build_started, 1)
        kinds = {name: kind for name, kind, _ in dbs}
        print(f"{len(dbs)} databases built in {result['build_s']}s", flush=True)

        migrations = None
        if args.migrations:
            migrations = {"dir": str(MIGRATIONS), "schema_prisma": str(SCHEMA_PRISMA),
                          "shadow_dsn": cluster.dsn("postgres")}
        config = write_config(OUT / f"scale_bench-{stamp}.yaml", [(n, dsn) for n, _, dsn in dbs],
                              poll_interval=args.interval, migrations=migrations)
        loaded = load_config(config, env={})
        limits = {"max_concurrent_polls": loaded.exporter.max_concurrent_polls,
                  "max_connections": getattr(loaded.exporter, "connection_limit", None),
                  "pool_size": loaded.databases[0].pool_size}
        port = free_port()
        log_path = OUT / f"scale_bench-{stamp}.log"
        count_activity = activity_counter(cluster)
        proc = start_exporter(config, port, log_path)
        started_at = time.time()
        activity = Sampler(0.5, count_activity, "activity")
        memory = Sampler(0.5, lambda: proc_sample(proc.pid), "proc")
        activity.start()
        memory.start()
        ready_s = wait_ready(proc, port, log_path)
        print(f"ready after {ready_s:.1f}s (every database polled once); observing for {args.duration}s "
              f"({args.duration / args.interval:.1f} intervals), load {load1()}", flush=True)

        scrapes: list[dict] = []
        observations: list[tuple[float, dict]] = []
        last_body = b""
        deadline = started_at + args.duration
        next_at = time.monotonic()
        next_report = time.time() + 30
        while time.time() < deadline or len(scrapes) < args.min_scrapes:
            at = time.time()
            compressed = len(scrapes) % 2 == 1  # every other scrape asks for gzip, as Prometheus does
            status, seconds, body = http_get(port, gzip=compressed)
            scrapes.append({"t": at, "status": status, "ms": seconds * 1000, "bytes": len(body),
                            "wire_bytes": http_get.wire_bytes, "gzip": compressed})
            if status == 200:
                last_body = body
                parsed = parse_metrics(body.decode(), ("venzory_db_last_poll", "venzory_db_poll_duration", "venzory_db_up"))
                per_db = {}
                dur = {l["database"]: v for l, v in parsed.get("venzory_db_poll_duration_seconds", [])}
                up = {l["database"]: v for l, v in parsed.get("venzory_db_up", [])}
                for labels, value in parsed.get("venzory_db_last_poll_timestamp_seconds", []):
                    db = labels["database"]
                    per_db[db] = (value, dur.get(db, 0.0), up.get(db) == 1)
                observations.append((at, per_db))
            if time.time() >= next_report:
                m = memory.samples[-1][1] if memory.samples else {}
                a = activity.samples[-1][1] if activity.samples else {}
                print(f"  t={time.time() - started_at:5.0f}s scrapes={len(scrapes)} rss={m.get('rss_mb')}MB "
                      f"threads={m.get('threads')} connections={a.get('total')} load={load1()}", flush=True)
                next_report += 30
            next_at += args.scrape_every
            time.sleep(max(0.0, next_at - time.monotonic()))
        result["uptime_end_of_observation"] = uptime()
        activity.stop()
        memory.stop()
        final = proc_sample(proc.pid)
        result["shutdown"] = stop_exporter(proc)
        count_activity.close()
        result["exporter_log"] = exporter_log_problems(log_path)

        # -- analysis --------------------------------------------------------------------------
        text = last_body.decode()
        polls = polls_from_scrapes(observations)
        spread = spread_report(polls, args.interval)
        totals = [s["total"] for _, s in activity.samples]
        actives = [s["active"] for _, s in activity.samples]
        after_ready = [s["total"] for t, s in activity.samples if t >= started_at + ready_s]
        conn_hist: dict[int, int] = {}
        for n in after_ready:
            conn_hist[n] = conn_hist.get(n, 0) + 1
        ok = [s for s in scrapes if s["status"] == 200]
        windows = [(p["started"], p["finished"]) for ps in polls.values() for p in ps]

        def during_polls(scrape: dict) -> bool:
            a, b = scrape["t"], scrape["t"] + scrape["ms"] / 1000
            return any(start <= b and a <= end for start, end in windows)

        # A scrape after a poll finished (since the previous scrape) finds the store's
        # rendered bytes invalidated and renders the body again; the others copy them.
        finishes = sorted(end for _, end in windows)

        def after_a_poll(i: int) -> bool:
            if i == 0:
                return True
            a, b = scrapes[i - 1]["t"], scrapes[i]["t"]
            j = bisect.bisect_right(finishes, a)
            return j < len(finishes) and finishes[j] <= b

        for i, x in enumerate(scrapes):
            x["after_poll"] = after_a_poll(i)
        latency = {}
        for label, compressed in (("plain", False), ("gzip", True)):
            group = [x for x in ok if x["gzip"] == compressed and x["t"] >= started_at + ready_s]
            latency[label] = {"all": summary([x["ms"] for x in group], 2),
                              "during_polls": summary([x["ms"] for x in group if during_polls(x)], 2),
                              "no_poll_running": summary([x["ms"] for x in group if not during_polls(x)], 2),
                              "no_poll_running_first_after_a_poll": summary(
                                  [x["ms"] for x in group if not during_polls(x) and x["after_poll"]], 2),
                              "no_poll_running_nothing_new": summary(
                                  [x["ms"] for x in group if not during_polls(x) and not x["after_poll"]], 2),
                              "wire_bytes": group[-1]["wire_bytes"] if group else None}
        sizes = per_database_size(text, list(kinds))
        db_bytes = [v[0] for v in sizes["per_db"].values()]
        db_series = [v[1] for v in sizes["per_db"].values()]
        by_kind = {}
        for kind in sorted(set(kinds.values())):
            names = [n for n in kinds if kinds[n] == kind]
            by_kind[kind] = {"bytes": round(statistics.fmean(sizes["per_db"][n][0] for n in names)),
                             "series": round(statistics.fmean(sizes["per_db"][n][1] for n in names), 1)}
        mem = [(t - started_at, s) for t, s in memory.samples]
        rss_timeline = []
        step = max(1, len(mem) // 12)
        for t, s in mem[::step]:
            rss_timeline.append({"t_s": round(t), "rss_mb": s["rss_mb"], "threads": s["threads"], "fds": s["fds"]})
        parsed = parse_metrics(text, ("venzory_db_check_success", "venzory_db_up", "venzory_db_polls_skipped",
                                      "venzory_db_migrations_part_success"))
        result.update({
            "databases": {"count": len(dbs), "kinds": {k: sum(1 for v in kinds.values() if v == k)
                                                       for k in set(kinds.values())}},
            "ready_s": round(ready_s, 1),
            "spread": spread,
            "polls_raw": {db: [[round(p["started"] - started_at, 3), round(p["duration"], 4)] for p in ps]
                          for db, ps in polls.items()},
            "connections": {"samples": len(totals), "max": max(totals), "median": statistics.median(totals),
                            "median_after_ready": statistics.median(after_ready) if after_ready else None,
                            "max_active": max(actives), "median_active": statistics.median(actives),
                            "histogram_after_ready": dict(sorted(conn_hist.items())),
                            "sampler_errors": activity.errors[:5], **limits},
            "memory": {"rss_at_ready_mb": next((s["rss_mb"] for t, s in mem if t >= ready_s), None),
                       "rss_end_mb": final["rss_mb"], "rss_max_mb": max(s["rss_mb"] for _, s in mem),
                       "hwm_mb": final["hwm_mb"], "threads_end": final["threads"], "fds_end": final["fds"],
                       "cpu_s": round(final["cpu_s"], 1), "timeline": rss_timeline,
                       "rss_slope_mb_per_hour_after_ready": slope_per_hour(
                           [(t, s["rss_mb"]) for t, s in mem if t >= ready_s])},
            "scrapes": {"n": len(scrapes), "non_200": len(scrapes) - len(ok), **summary([s["ms"] for s in ok], 2),
                        "latency": latency, "raw": [[round(x["t"] - started_at, 3), round(x["ms"], 2), x["gzip"],
                                                     x["after_poll"]] for x in scrapes],
                        "bytes": len(last_body), "series": series_count(text),
                        "bytes_per_database": round(statistics.fmean(db_bytes)) if db_bytes else None,
                        "series_per_database": round(statistics.fmean(db_series), 1) if db_series else None,
                        "per_kind": by_kind, "shared_bytes": sizes["shared_bytes"],
                        "shared_series": sizes["shared_series"]},
            "health_at_end": {
                "up_0": sum(1 for _, v in parsed.get("venzory_db_up", []) if v != 1),
                "check_success_0": sum(1 for _, v in parsed.get("venzory_db_check_success", []) if v != 1),
                "checks": len(parsed.get("venzory_db_check_success", [])),
                "polls_skipped": sum(v for _, v in parsed.get("venzory_db_polls_skipped_total", [])),
                "migration_parts_failed": sum(1 for _, v in parsed.get("venzory_db_migrations_part_success", []) if v != 1),
            },
            "uptime_end": uptime(),
        })
        (OUT / f"scale_bench-{stamp}.prom").write_text(text)
        path = OUT / f"scale_bench-{stamp}.json"
        path.write_text(json.dumps(result, indent=1, default=str))
        result["json"] = str(path)
        return result
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if args.keep:
            print(f"cluster kept: {cluster.dsn()} (data {cluster.datadir})")
        else:
            cluster.destroy()


def scheduler_probe(count: int = 10, interval: float = 4.0, rounds: int = 4) -> None:
    """The daemon's PollScheduler with `count` pollers that return at once (no database):
    when does each one's k-th poll start? Phases spread evenly would be interval/count apart."""
    from types import SimpleNamespace

    from exporter.scheduler import PollScheduler

    starts: list[tuple[float, str]] = []
    lock = threading.Lock()

    class Instant:
        def __init__(self, i: int):
            self.name = f"db{i}"
            self.database = SimpleNamespace(name=self.name, config=SimpleNamespace(poll_interval=interval))

        def poll(self):
            with lock:
                starts.append((time.time(), self.name))
            return None

        def close(self) -> None:
            pass

    scheduler = PollScheduler([Instant(i) for i in range(count)], lambda result: None, lambda name: None, 4)
    t0 = time.time()
    scheduler.start()
    time.sleep(interval * (rounds - 1) + interval / 2)
    scheduler.stop()
    per_db: dict[str, list[float]] = {}
    for t, name in sorted(starts):
        per_db.setdefault(name, []).append(t - t0)
    print(f"{count} pollers, interval {interval:g} s; an even spread starts them {interval / count:g} s apart")
    for k in range(rounds):
        kth = sorted(v[k] for v in per_db.values() if len(v) > k)
        print(f"  poll {k + 1} of each: starts at {[round(x, 2) for x in kth]} s")


def print_report(r: dict) -> None:
    s, c, m, sc = r["spread"], r["connections"], r["memory"], r["scrapes"]
    a = r["args"]
    print()
    print(f"== {r['databases']['count']} databases {r['databases']['kinds']}, poll_interval {a['interval']}s, "
          f"migrations {'on' if a['migrations'] else 'off'}, observed {a['duration']}s ==")
    print(f"load: start [{r['uptime_start']}]  end [{r['uptime_end']}]")
    print(f"code: {r['code']}")
    print(f"ready (first poll of every database done): {r['ready_s']} s")
    print("\npolls per round (k-th poll of every database; seconds from the first poll's start):")
    print("  round  first start  last start  start spread  all done")
    for row in s["rounds"]:
        print(f"  {row['round']:>5}  {row['first_start_s']:>11}  {row['last_start_s']:>10}  "
              f"{row['start_spread_s']:>12}  {row['all_done_s']:>8}")
    print(f"later polls' start phase in tenths of the interval: {s['later_polls_start_phase_tenths_of_interval']}"
          f" (even spread: {s['ideal_per_tenth']} each)")
    print(f"most later polls started within 1 s: {s['most_polls_started_in_1s']} "
          f"(even spread: {s['ideal_polls_per_1s']}); most running at once: {s['most_later_polls_running_at_once']}")
    print(f"observed interval between polls of a database: {s['observed_interval_s']}")
    print(f"poll duration s: first {s['first_poll_duration_s']}\n                 later {s['later_poll_duration_s']}")
    print(f"\nconnections (application_name={APPLICATION_NAME}, every 0.5 s, {c['samples']} samples): "
          f"max {c['max']}, median after ready {c['median_after_ready']}, max active {c['max_active']} "
          f"(max_concurrent_polls {c['max_concurrent_polls']}, max_connections {c['max_connections']}, "
          f"pool_size {c['pool_size']})")
    print(f"  histogram after ready (connections: samples): {c['histogram_after_ready']}")
    print(f"\nRSS: at ready {m['rss_at_ready_mb']} MB, end {m['rss_end_mb']} MB, max {m['rss_max_mb']} MB, "
          f"peak {m['hwm_mb']} MB; threads {m['threads_end']}, fds {m['fds_end']}, CPU {m['cpu_s']} s; "
          f"slope after ready {m['rss_slope_mb_per_hour_after_ready'] and round(m['rss_slope_mb_per_hour_after_ready'], 1)} MB/h")
    print("  " + ", ".join(f"{x['t_s']}s:{x['rss_mb']}" for x in m["timeline"]))
    print(f"\n/metrics: {sc['n']} scrapes, non-200 {sc['non_200']}, median {sc.get('median')} ms, "
          f"p90 {sc.get('p90')} ms, p99 {sc.get('p99')} ms, max {sc.get('max')} ms")
    for label, v in sc["latency"].items():
        print(f"  {label:5} ({v['wire_bytes']} bytes on the wire): all {v['all'].get('median')} / {v['all'].get('p99')} ms, "
              f"no poll running {v['no_poll_running'].get('median')} / {v['no_poll_running'].get('p99')} ms "
              f"(n={v['no_poll_running']['n']}), during polls {v['during_polls'].get('median')} / "
              f"{v['during_polls'].get('p99')} ms (n={v['during_polls']['n']})   [median / p99]")
        print(f"        no poll running: first scrape after a poll finished {v['no_poll_running_first_after_a_poll'].get('median')}"
              f" / {v['no_poll_running_first_after_a_poll'].get('p99')} ms "
              f"(n={v['no_poll_running_first_after_a_poll']['n']}), nothing new since the previous scrape "
              f"{v['no_poll_running_nothing_new'].get('median')} / {v['no_poll_running_nothing_new'].get('p99')} ms "
              f"(n={v['no_poll_running_nothing_new']['n']})")
    print(f"  body {sc['bytes']} bytes, {sc['series']} series; per database {sc['bytes_per_database']} bytes, "
          f"{sc['series_per_database']} series {sc['per_kind']}; shared {sc['shared_bytes']} bytes")
    print(f"\nhealth at end: {r['health_at_end']}; shutdown {r['shutdown']}")
    print(f"exporter log: {r['exporter_log']['lines']} lines, {r['exporter_log']['warnings_or_errors']} warnings/errors "
          f"{r['exporter_log']['first'][:3]}")
    print(f"\nJSON: {r['json']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", type=int, default=50)
    parser.add_argument("--interval", type=float, default=30.0, help="poll_interval of every database, seconds")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds from the daemon's start")
    parser.add_argument("--scrape-every", type=float, default=0.25)
    parser.add_argument("--min-scrapes", type=int, default=500)
    parser.add_argument("--seed", choices=["mixed", "clean", "problems"], default="mixed")
    parser.add_argument("--migrations", action="store_true", help="turn the migrations feature on")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--scheduler-probe", action="store_true",
                        help="only run the scheduler with 10 instant pollers (no database) and print when they start")
    args = parser.parse_args()
    if args.scheduler_probe:
        scheduler_probe()
        return 0
    print_report(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
