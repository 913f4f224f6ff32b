"""Soak: the real daemon for --minutes (default 30) under everything at once.

    python bench/soak_bench.py [--minutes 30] [--events-per-second 5000] [--batch 500]
                               [--tps 150] [--scale 0.05] [--kind problems] [--no-migrations]

Starts its own throwaway PostgreSQL 15 with pg_stat_statements (exporter.pgcluster) and
builds one Venzory database with core_bench.build_database at --scale (0.05: 50,000 Item
and LocationInventory rows, 25,000 Order and OrderItem rows, ...). --kind problems (the
default): steps 1-6 with violations, no guards, so every poll reads every table and runs
the deploy prediction; --kind hardened: all 11 steps, clean (guarded polls).

The exporter (`python -m exporter run`, a subprocess) connects as the role
`venzory_monitor` (SELECT only), so pg_stat_statements can tell its statements from the
application's by userid. Its config is config/venzory.yaml with poll_interval 10s and,
unless --no-migrations, the migrations feature on (the fixture's folder and
schema.prisma; the shadow server is the same cluster, as the superuser).

For the whole soak, at once:
  - pgbench (the server's own binary) runs a custom write transaction on the app's
    tables (UPDATE LocationInventory, INSERT StockAdjustment, UPDATE Item) as the
    superuser, rate-limited to --tps with 4 clients;
  - a poster process POSTs --events-per-second NDJSON lines to /events, gzip, in
    batches of --batch: the real Prisma 7 logs of tests/prisma_app/samples (pino with
    stacks, Prisma `log` events) and Prisma 5/6 shapes (P2002 by fields, P2003 by field
    name, P2025, P2034, P2010 with SQLSTATE 23514, an unknown request error with the
    PostgreSQL text, a log shipper's envelope, the runbook's shape), each line unique;
  - GET /metrics every second: status, latency, size, and from the body every poll
    (venzory_db_last_poll_timestamp_seconds changes) with its up, check_success,
    migrations_part_success;
  - every 10 s: the daemon's RSS, threads, fds, CPU seconds (/proc), its sessions in
    pg_stat_activity, and the CPU seconds of every backend of the database (/proc/PID/stat,
    by role).

At the end: errors (scrapes not 200, POSTs not 2xx, rejected events, polls with up=0 or a
check with success=0, skipped polls, warnings in the daemon's log, pgbench failures),
memory (RSS: first vs last 5 minutes, slope), the database time of the exporter vs all
statements on that database (pg_stat_statements: total_exec_time + total_plan_time, by
userid; and backend CPU seconds from /proc), and the daemon's own CPU seconds.
A report on stdout; everything in bench/out/soak_bench-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from scale_bench import (  # noqa: E402 - shared helpers
    CLK_TCK, MIGRATIONS, code_version, MONITOR_ROLE, OUT, REPO, SCHEMA_PRISMA, Sampler, create_monitor_role, exporter_log_problems,
    grant_read, http_get, load1, parse_metrics, proc_sample, series_count, slope_per_hour, start_exporter,
    stop_exporter, summary, uptime, wait_ready, write_config,
)

SAMPLES = REPO / "tests" / "prisma_app" / "samples"
DB = "venzory_soak"


# ------------------------------------------------------------------------------------------
# The events

def _pino(level: int, err: dict, msg: str, **extra) -> dict:
    return {"level": level, "time": 1795494232476, "pid": 4242, "hostname": "web-1", **extra, "err": err, "msg": msg}


PRISMA5_6_SHAPES = [
    # Prisma 5: a unique violation names the fields only; the runbook's flat shape.
    {"level": "error", "error": "PrismaClientKnownRequestError", "code": "P2002", "clientVersion": "5.22.0",
     "meta": {"modelName": "Item", "target": ["practiceId", "name"]},
     "msg": "Unique constraint failed on the fields: (`practiceId`,`name`)"},
    # Prisma 5: a foreign key by "field" (really the constraint name with " (index)").
    _pino(50, {"type": "PrismaClientKnownRequestError", "code": "P2003", "clientVersion": "5.22.0",
               "message": "\nInvalid `prisma.order.create()` invocation:\n\n\nForeign key constraint failed on the "
                          "field: `Order_supplierId_fkey (index)`",
               "meta": {"modelName": "Order", "field_name": "Order_supplierId_fkey (index)"}},
          "order create failed", route="/api/orders"),
    # Prisma 6: record not found on update.
    _pino(50, {"type": "PrismaClientKnownRequestError", "code": "P2025", "clientVersion": "6.4.1",
               "message": "\nInvalid `prisma.locationInventory.update()` invocation:\n\n\nAn operation failed because "
                          "it depends on one or more records that were required but not found. Record to update not found.",
               "meta": {"modelName": "LocationInventory", "cause": "Record to update not found."}},
          "inventory update failed", route="/api/inventory"),
    # Prisma 6: serialization failure in an interactive transaction.
    _pino(40, {"type": "PrismaClientKnownRequestError", "code": "P2034", "clientVersion": "6.4.1",
               "message": "Transaction failed due to a write conflict or a deadlock. Please retry your transaction"},
          "transfer retried", route="/api/transfers"),
    # Prisma 6: $executeRaw hitting a CHECK constraint: P2010 with the SQLSTATE.
    _pino(50, {"type": "PrismaClientKnownRequestError", "code": "P2010", "clientVersion": "6.4.1",
               "message": "Raw query failed. Code: `23514`. Message: `new row for relation \"LocationInventory\" "
                          "violates check constraint \"check_quantity_non_negative\"`",
               "meta": {"code": "23514", "message": "new row for relation \"LocationInventory\" violates check "
                                                    "constraint \"check_quantity_non_negative\""}},
          "stock count failed", route="/api/stock-counts"),
    # Prisma 5: a CHECK violation arrives with no code at all, as the connector's debug text.
    _pino(50, {"type": "PrismaClientUnknownRequestError", "clientVersion": "5.22.0",
               "message": "\nInvalid `prisma.orderItem.create()` invocation:\n\n\nError occurred during query "
                          "execution:\nConnectorError(ConnectorError { user_facing_error: None, kind: QueryError("
                          "PostgresError { code: \"23514\", message: \"new row for relation \\\"OrderItem\\\" violates "
                          "check constraint \\\"check_quantity_positive\\\"\", severity: \"ERROR\", detail: "
                          "Some(\"Failing row contains (...).\"), column: None, hint: None }), transient: false })"},
          "order item create failed", route="/api/orders"),
]
ORDINARY = [
    {"level": 30, "time": 1795494232476, "pid": 4242, "hostname": "web-1", "route": "/api/items", "status": 200,
     "ms": 12, "msg": "request served"},
    {"level": 30, "time": 1795494232476, "pid": 4242, "hostname": "web-2", "route": "/api/orders", "status": 201,
     "ms": 48, "msg": "request served"},
    {"level": 40, "time": 1795494232476, "pid": 4242, "hostname": "web-2", "msg": "slow request", "ms": 1450,
     "route": "/api/reports/inventory"},
]


def event_lines() -> list[bytes]:
    """One cycle of the workload: JSON lines without the newline."""
    lines = [line for name in ("prisma7-pino.jsonl", "prisma7-log-events.jsonl")
             for line in (SAMPLES / name).read_bytes().splitlines() if line.strip()]
    lines += [json.dumps(shape, separators=(",", ":")).encode() for shape in PRISMA5_6_SHAPES + ORDINARY]
    # A log shipper (Vector, Fluent Bit) that wraps the app's line in its own envelope.
    lines.append(json.dumps({"message": lines[1].decode(), "host": "web-1", "source_type": "file",
                             "file": "/var/log/venzory/app.log"}, separators=(",", ":")).encode())
    return lines


def bodies(count: int, batch: int) -> list[tuple[bytes, int]]:
    """`count` distinct gzip NDJSON bodies of `batch` lines, every line unique ("seq")."""
    cycle = event_lines()
    out, n = [], 0
    for _ in range(count):
        chunk = []
        for _ in range(batch):
            line = cycle[n % len(cycle)]
            chunk.append(b'{"seq":%d,' % n + line[1:] + b"\n")
            n += 1
        out.append((gzip.compress(b"".join(chunk), 6), batch))
    return out


def role_poster(port: int, rate: float, batch: int, seconds: float, distinct: int) -> None:
    """POST `rate` lines per second for `seconds`; print one JSON summary."""
    payloads = bodies(distinct, batch)
    raw_bytes = sum(len(gzip.decompress(p)) for p, _ in payloads) / len(payloads)
    print(json.dumps({"ready": True, "raw_bytes_per_body": raw_bytes,
                      "gzip_bytes_per_body": sum(len(p) for p, _ in payloads) / len(payloads)}), flush=True)
    every = batch / rate
    statuses: dict[int, int] = {}
    latencies, lags = [], []
    sent = accepted = ignored = rejected = errors = 0
    bad: list[str] = []
    started = time.monotonic()
    cpu_started = time.process_time()
    k = 0
    while True:
        due = started + k * every
        now = time.monotonic()
        if due - started >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        lags.append(max(0.0, time.monotonic() - due))
        body, lines = payloads[k % len(payloads)]
        t = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", "/events", body, {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
            response = conn.getresponse()
            answer = response.read()
            conn.close()
            latencies.append(time.perf_counter() - t)
            statuses[response.status] = statuses.get(response.status, 0) + 1
            sent += lines
            if 200 <= response.status < 300:
                a = json.loads(answer)
                accepted += a["accepted"]
                ignored += a["ignored"]
                rejected += a["rejected"]
            elif len(bad) < 10:
                bad.append(f"{response.status} {answer[:200]!r}")
        except OSError as e:
            errors += 1
            if len(bad) < 10:
                bad.append(f"{type(e).__name__}: {e}")
        k += 1
    elapsed = time.monotonic() - started
    ms = [x * 1000 for x in latencies]
    print(json.dumps({
        "posts": k, "lines_sent": sent, "seconds": elapsed, "lines_per_second": sent / elapsed,
        "statuses": statuses, "connection_errors": errors, "bad": bad,
        "accepted": accepted, "ignored": ignored, "rejected": rejected,
        "latency_ms": summary(ms, 2), "lag_s": summary(lags, 3), "poster_cpu_s": time.process_time() - cpu_started,
    }), flush=True)


# ------------------------------------------------------------------------------------------
# The write load

# Ids as core_bench's pg_temp.vid(prefix, n): 'cl' || prefix || lpad(n, 12, '0') || 'k7q2m9x4b'.
# Item n sits at location n % P + P * ((n / P) % 20) and belongs to practice n % P.
PGBENCH_SCRIPT = r"""
\set i random(0, :nitems - 1)
\set loc (:i % :practices) + :practices * ((:i / :practices) % 20)
\set pr :i % :practices
\set usr (:i % :practices) + :practices * ((:i / :practices) % 20)
\set q random(1, 5)
BEGIN;
UPDATE "LocationInventory" SET "quantity" = "quantity" + :q, "updatedAt" = now() WHERE "locationId" = 'cllo' || lpad(CAST(:loc AS text), 12, '0') || 'k7q2m9x4b' AND "itemId" = 'clit' || lpad(CAST(:i AS text), 12, '0') || 'k7q2m9x4b';
INSERT INTO "StockAdjustment" ("id", "itemId", "locationId", "practiceId", "quantity", "reason", "createdById") VALUES (gen_random_uuid()::text, 'clit' || lpad(CAST(:i AS text), 12, '0') || 'k7q2m9x4b', 'cllo' || lpad(CAST(:loc AS text), 12, '0') || 'k7q2m9x4b', 'clpr' || lpad(CAST(:pr AS text), 12, '0') || 'k7q2m9x4b', :q, 'soak', 'clus' || lpad(CAST(:usr AS text), 12, '0') || 'k7q2m9x4b');
UPDATE "Item" SET "updatedAt" = now() WHERE "id" = 'clit' || lpad(CAST(:i AS text), 12, '0') || 'k7q2m9x4b';
END;
"""


def pgbench_binary(cluster) -> str:
    """The cluster's own pgbench, else the newest installed one (Debian's /usr/lib/postgresql/N/bin)."""
    candidates = [cluster.bindir / "pgbench", *sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True)]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("pgbench")
    if not found:
        raise RuntimeError("pgbench not found (Debian: apt-get install postgresql-client or postgresql)")
    return found


def start_pgbench(cluster, script: Path, practices: int, items: int, tps: float, seconds: int, clients: int,
                  log_path: Path) -> subprocess.Popen:
    cmd = [pgbench_binary(cluster), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", cluster.user,
           "-n", "-f", str(script), "-c", str(clients), "-j", "2", "-T", str(seconds), "-P", "60",
           "-D", f"practices={practices}", "-D", f"nitems={items}", DB]
    if tps > 0:
        cmd[cmd.index("-T"):cmd.index("-T")] = ["-R", f"{tps:g}"]
    log = open(log_path, "w")  # noqa: SIM115
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PGAPPNAME": "pgbench"})


def pgbench_summary(log_path: Path) -> dict:
    text = log_path.read_text(errors="replace")
    out: dict = {"tail": text.strip().splitlines()[-14:]}
    for key, pattern in (("transactions", r"number of transactions actually processed: (\d+)"),
                         ("failed", r"number of failed transactions: (\d+)"),
                         ("tps", r"tps = ([\d.]+)"), ("latency_avg_ms", r"latency average = ([\d.]+) ms"),
                         ("skipped", r"number of transactions skipped: (\d+)"),
                         ("lag_avg_ms", r"rate limit schedule lag: avg ([\d.]+)")):
        m = re.search(pattern, text)
        out[key] = float(m.group(1)) if m else None
    out["aborted"] = "aborted" in text.lower() or "error" in text.lower()
    return out


# ------------------------------------------------------------------------------------------
# The database side

class BackendCpu(threading.Thread):
    """CPU seconds of the server's backends by who they are, from /proc every `every` s.

    The exporter opens a session per poll that lives well under a second, so a slow
    sampler would miss it: the process title (`postgres: USER DB HOST(PORT) STATE`, or
    `parallel worker for PID N`, `autovacuum worker DB`) says whose a backend is, and its
    CPU (utime + stime) is kept at its last sample. What a backend spends after its last
    sample is lost; the postmaster's cutime + cstime (reaped children, exact) bounds it:
    `unattributed_s` is the difference. Connection start-up (fork, authentication, catalog
    caches) is included, unlike in pg_stat_statements."""

    def __init__(self, cluster, every: float = 0.1):
        super().__init__(daemon=True, name="backend-cpu")
        self.every = every
        self.postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
        self.last: dict[int, tuple[str, float]] = {}  # pid -> (who, cpu seconds at its last sample)
        self.titles: dict[int, str] = {}
        self.final_other: dict[int, tuple[str, float]] = {}  # pid -> the process title, shortened (what "other" is made of)
        self.gone: dict[str, float] = {}  # who -> CPU of backends that exited
        self.sessions: list[int] = []  # exporter backends alive at each sample
        self.started_pids: dict[str, int] = {}
        self._halt = threading.Event()
        self.reaped_start = self._reaped()

    def _reaped(self) -> float:
        fields = Path(f"/proc/{self.postmaster}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[13]) + int(fields[14])) / CLK_TCK

    def _who(self, pid: int, title: str, alive: dict[int, tuple[str, float]]) -> str:
        if f" {MONITOR_ROLE} " in title:
            return "exporter"
        if "parallel worker for PID" in title:
            leader = int(title.rsplit(" ", 1)[1])
            return (alive.get(leader) or self.last.get(leader) or ("other",))[0]
        if title.startswith("postgres: postgres ") and f" {DB} " in title:
            return "pgbench"  # the superuser sessions on the soak database: pgbench's clients
        if "autovacuum" in title:
            return "autovacuum"
        return "other"

    def sample(self) -> None:
        # Who a backend is, is decided once, from the first non-empty title: a title read
        # while PostgreSQL rewrites it, or of a zombie (exited, not yet reaped), is empty.
        alive: dict[int, tuple[str, float]] = {}
        try:
            children = Path(f"/proc/{self.postmaster}/task/{self.postmaster}/children").read_text().split()
        except OSError:
            return
        parallel = []
        for child in map(int, children):
            try:
                title = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
            known = self.last.get(child)
            if known and known[0] != "unknown":
                alive[child] = (known[0], cpu)
            elif not title:
                alive[child] = ("unknown", cpu)
            elif "parallel worker for PID" in title:
                parallel.append((child, title, cpu))
            else:
                alive[child] = (self._who(child, title, alive), cpu)
                self.titles[child] = " ".join(title.split()[:3])
        for child, title, cpu in parallel:  # after their leaders
            alive[child] = (self._who(child, title, alive), cpu)
            self.titles[child] = " ".join(title.split()[:3])
        for pid, (who, cpu) in self.last.items():
            if pid not in alive:
                self.gone[who] = self.gone.get(who, 0.0) + cpu
                if who in ("other", "unknown"):
                    self.final_other[pid] = (who, cpu)
        for pid, (who, _) in alive.items():
            if pid not in self.last:
                self.started_pids[who] = self.started_pids.get(who, 0) + 1
        self.last = alive
        self.sessions.append(sum(1 for who, _ in alive.values() if who == "exporter"))

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._halt.is_set():
            self.sample()
            next_at += self.every
            self._halt.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> dict:
        self._halt.set()
        self.join(timeout=5)
        by_who = dict(self.gone)
        for who, cpu in self.last.values():
            by_who[who] = by_who.get(who, 0.0) + cpu
        reaped = self._reaped() - self.reaped_start
        gone_total = sum(self.gone.values())
        other: dict[str, float] = {}
        for pid, (_who, cpu) in {**self.final_other, **{p: v for p, v in self.last.items() if v[0] in ("other", "unknown")}}.items():
            other[self.titles.get(pid, "?")] = other.get(self.titles.get(pid, "?"), 0.0) + cpu
        return {"cpu_s": {k: round(v, 2) for k, v in sorted(by_who.items())},
                "backends_started": self.started_pids,
                "other_by_title": {k: round(v, 2) for k, v in sorted(other.items(), key=lambda kv: -kv[1])[:12]},
                "reaped_cpu_s": round(reaped, 2), "unattributed_s": round(reaped - gone_total, 2),
                "exporter_sessions": {"max": max(self.sessions, default=0),
                                      "mean": round(statistics.fmean(self.sessions), 3) if self.sessions else None,
                                      "samples": len(self.sessions)}}


def postgres_cpu_seconds(cluster) -> float:
    """The whole server's CPU: the postmaster, its live children, and the reaped ones
    (cutime/cstime of the postmaster: backends and parallel workers that exited)."""
    pid = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            f = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except OSError:
            pass
    return total / CLK_TCK


STATEMENTS_BY_USER = """
SELECT r.rolname, count(*), sum(s.calls)::bigint, sum(s.total_exec_time), sum(s.total_plan_time),
       sum(s.shared_blks_hit + s.shared_blks_read)::bigint, sum(s.rows)::bigint
FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = %s)
GROUP BY r.rolname ORDER BY 4 DESC
"""
TOP_EXPORTER_STATEMENTS = """
SELECT s.calls, s.total_exec_time, s.total_plan_time, s.mean_exec_time, s.shared_blks_hit + s.shared_blks_read,
       regexp_replace(left(s.query, 160), '\\s+', ' ', 'g')
FROM pg_stat_statements s
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = %s) AND s.userid = %s::regrole
ORDER BY s.total_exec_time + s.total_plan_time DESC LIMIT 12
"""


def statements(cluster) -> dict:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        by_user = {r[0]: {"statements": r[1], "calls": r[2], "exec_ms": round(r[3], 1), "plan_ms": round(r[4], 1),
                          "blocks": r[5], "rows": r[6]} for r in conn.execute(STATEMENTS_BY_USER, [DB]).fetchall()}
        top = [{"calls": r[0], "exec_ms": round(r[1], 1), "plan_ms": round(r[2], 1), "mean_ms": round(r[3], 3),
                "blocks": r[4], "query": r[5]} for r in conn.execute(TOP_EXPORTER_STATEMENTS, [DB, MONITOR_ROLE])]
        dealloc = conn.execute("SELECT dealloc FROM pg_stat_statements_info").fetchone()[0]
    return {"by_user": by_user, "top_exporter": top, "dealloc": dealloc}


# ------------------------------------------------------------------------------------------

def session_cost(sessions: int = 300) -> None:
    """Server CPU (the postmaster's reaped-children CPU) and client time of one short
    session of the exporter's kind: connect and close; connect, one lock-watcher query,
    close. On a throwaway cluster of its own."""
    from exporter.config import Config
    from exporter.db import session_options
    from exporter.pgcluster import start_cluster

    cluster = start_cluster()
    try:
        create_monitor_role(cluster)
        postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])

        def reaped() -> float:
            fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[13]) + int(fields[14])) / CLK_TCK

        config = Config.model_validate({"databases": [{"name": "x", "dsn": cluster.dsn("postgres", user=MONITOR_ROLE)}],
                                        "checks": []})
        options = session_options(config.databases[0])
        print(f"load {load1()}; {sessions} sessions each")
        for label, queries in (("connect + close", 0), ("connect + 1 lock-watcher query + close", 1)):
            cpu, started = reaped(), time.perf_counter()
            for _ in range(sessions):
                with psycopg.connect(config.databases[0].dsn, **options) as conn:
                    for _ in range(queries):
                        conn.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                                     [1]).fetchone()
            wall = time.perf_counter() - started
            time.sleep(1)  # the last backends are reaped
            print(f"  {label}: server CPU {1000 * (reaped() - cpu) / sessions:.2f} ms, "
                  f"client {1000 * wall / sessions:.2f} ms per session")
    finally:
        cluster.destroy()


def build(cluster, args) -> dict:
    import core_bench  # bench/core_bench.py: the large-database builder

    create_monitor_role(cluster)
    built = core_bench.build_database(cluster, DB, args.scale, hardened=args.kind == "hardened")
    grant_read(cluster.dsn(DB))
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    practices, sizes = core_bench.table_sizes(args.scale)
    return {"seconds": built["seconds"], "bytes": built["bytes"], "practices": practices, "rows": sizes}


def run(args) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    seconds = int(args.minutes * 60)
    result: dict = {"args": vars(args), "uptime_start": uptime(), "code": code_version()}
    print(f"load at start: {result['uptime_start']}", flush=True)
    from exporter.pgcluster import free_port, start_cluster

    cluster = start_cluster(settings={"shared_buffers": "'512MB'", "pg_stat_statements.max": "10000",
                                      "pg_stat_statements.track_planning": "on", "track_io_timing": "on"})
    print(f"cluster on port {cluster.port}, data in {cluster.datadir}", flush=True)
    exporter = pgbench = poster = None
    work = Path(tempfile.mkdtemp(prefix="soak-bench-"))
    try:
        result["database"] = build(cluster, args)
        print(f"database built in {result['database']['seconds']}s "
              f"({result['database']['bytes'] / 1e6:.0f} MB, {result['database']['practices']} practices)", flush=True)
        migrations = None if args.no_migrations else {
            "dir": str(MIGRATIONS), "schema_prisma": str(SCHEMA_PRISMA), "shadow_dsn": cluster.dsn("postgres")}
        config = write_config(OUT / f"soak_bench-{stamp}.yaml", [("venzory", cluster.dsn(DB, user=MONITOR_ROLE))],
                              poll_interval=args.poll_interval, migrations=migrations)
        port = free_port()
        log_path = OUT / f"soak_bench-{stamp}.log"
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_stat_statements_reset()")
        pg_cpu_start = postgres_cpu_seconds(cluster)
        exporter = start_exporter(config, port, log_path)
        ready_s = wait_ready(exporter, port, log_path)
        print(f"exporter ready in {ready_s:.1f}s; soak of {args.minutes} min starts, load {load1()}", flush=True)

        script = work / "writes.sql"
        script.write_text(PGBENCH_SCRIPT)
        pgbench_log = OUT / f"soak_bench-{stamp}-pgbench.log"
        pgbench = start_pgbench(cluster, script, result["database"]["practices"], result["database"]["rows"]["Item"],
                                args.tps, seconds, args.clients, pgbench_log)
        poster = subprocess.Popen([sys.executable, __file__, "--role", "poster", "--port", str(port),
                                   "--events-per-second", str(args.events_per_second), "--batch", str(args.batch),
                                   "--seconds", str(seconds), "--distinct-bodies", str(args.distinct_bodies)],
                                  stdout=subprocess.PIPE, text=True)
        poster_info = json.loads(poster.stdout.readline())

        cpu0 = proc_sample(exporter.pid)["cpu_s"]
        t0 = time.time()
        memory = Sampler(10, lambda: proc_sample(exporter.pid), "proc")
        backends = BackendCpu(cluster)
        memory.start()
        backends.start()

        scrapes: list[dict] = []
        polls: dict[float, dict] = {}
        last_text = ""
        next_at = time.monotonic()
        next_report = t0 + 60
        end = t0 + seconds
        while time.time() < end:
            at = time.time()
            try:
                status, took, body = http_get(port)
            except OSError as e:
                scrapes.append({"t": at, "status": 0, "ms": None, "bytes": 0, "error": str(e)})
            else:
                scrapes.append({"t": at, "status": status, "ms": took * 1000, "bytes": len(body)})
                if status == 200:
                    last_text = body.decode()
                    record_poll(polls, last_text)
            if time.time() >= next_report:
                m = memory.samples[-1][1] if memory.samples else {}
                print(f"  {(time.time() - t0) / 60:5.1f} min: scrapes {len(scrapes)} (non-200 "
                      f"{sum(1 for s in scrapes if s['status'] != 200)}), polls {len(polls)} "
                      f"(bad {sum(1 for p in polls.values() if p['problems'])}), rss {m.get('rss_mb')} MB, "
                      f"cpu {m.get('cpu_s', 0) - cpu0:.0f} s, load {load1()}", flush=True)
                next_report += 60
            next_at += 1.0
            time.sleep(max(0.0, next_at - time.monotonic()))

        poster_result = json.loads(poster.stdout.readline())
        poster.wait(timeout=60)
        pgbench.wait(timeout=120)
        time.sleep(2)
        status, took, body = http_get(port)  # the counters after the last POST
        final_text = body.decode() if status == 200 else last_text
        record_poll(polls, final_text)
        memory.stop()
        db_side = backends.stop()
        final_proc = proc_sample(exporter.pid)
        pg_cpu = postgres_cpu_seconds(cluster) - pg_cpu_start
        stmts = statements(cluster)
        with psycopg.connect(cluster.dsn(DB), autocommit=True) as conn:  # the tables pgbench writes grow
            result["database"]["rows_end"] = dict(conn.execute(
                "SELECT relname, n_live_tup FROM pg_stat_user_tables WHERE relname IN "
                "('StockAdjustment', 'LocationInventory', 'Item')").fetchall())
        result["uptime_end"] = uptime()
        result["shutdown"] = stop_exporter(exporter)
        result["exporter_log"] = exporter_log_problems(log_path)
        result["pgbench"] = pgbench_summary(pgbench_log)
        result["poster"] = {**poster_info, **poster_result}
        result.update(analyse(t0, seconds, scrapes, polls, memory.samples, cpu0, final_proc, final_text, stmts,
                              db_side, pg_cpu))
        result["sampler_errors"] = memory.errors[:5]
        path = OUT / f"soak_bench-{stamp}.json"
        path.write_text(json.dumps(result, indent=1, default=str))
        (OUT / f"soak_bench-{stamp}.prom").write_text(final_text)
        result["json"] = str(path)
        return result
    finally:
        for p in (poster, pgbench):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        if exporter is not None and exporter.poll() is None:
            exporter.kill()
            exporter.wait()
        if args.keep:
            print(f"cluster kept: {cluster.dsn()} (data {cluster.datadir})")
        else:
            cluster.destroy()


def record_poll(polls: dict[float, dict], text: str) -> None:
    """A new venzory_db_last_poll_timestamp_seconds value is a new poll: keep its health."""
    m = parse_metrics(text, ("venzory_db_last_poll", "venzory_db_up", "venzory_db_poll_", "venzory_db_check_success",
                             "venzory_db_migrations_part_success", "venzory_db_polls_skipped"))
    finished = m.get("venzory_db_last_poll_timestamp_seconds", [({}, None)])[0][1]
    if finished is None or finished in polls:
        return
    up = m.get("venzory_db_up", [({}, 0)])[0][1]
    failed_checks = [l["check"] for l, v in m.get("venzory_db_check_success", []) if v != 1]
    failed_parts = [l["part"] for l, v in m.get("venzory_db_migrations_part_success", []) if v != 1]
    problems = ([] if up == 1 else ["up=0"]) + [f"check {c}" for c in failed_checks] + \
               [f"migrations part {p}" for p in failed_parts]
    polls[finished] = {"finished": finished, "duration": m.get("venzory_db_poll_duration_seconds", [({}, 0)])[0][1],
                       "full_scan": m.get("venzory_db_poll_full_scan", [({}, 0)])[0][1],
                       "checks": len(m.get("venzory_db_check_success", [])), "problems": problems,
                       "skipped_total": sum(v for _, v in m.get("venzory_db_polls_skipped_total", []))}


def analyse(t0, seconds, scrapes, polls, mem_samples, cpu0, final_proc, text, stmts, db_side, pg_cpu) -> dict:
    ok = [s for s in scrapes if s["status"] == 200]
    poll_list = sorted(polls.values(), key=lambda p: p["finished"])
    in_window = [p for p in poll_list if p["finished"] >= t0]
    gaps = [b["finished"] - a["finished"] for a, b in zip(in_window, in_window[1:])]

    # Memory: RSS every 10 s; windows of 5 minutes (a third of the run when shorter).
    points = [(t - t0, s["rss_mb"]) for t, s in mem_samples]
    window = min(300.0, seconds / 3)
    first = [v for x, v in points if x <= window]
    last = [v for x, v in points if x >= seconds - window]
    half = [(x, v) for x, v in points if x >= seconds / 2]
    memory = {
        "samples": len(points), "window_s": window,
        "first_window_mb": summary(first, 1), "last_window_mb": summary(last, 1),
        "median_change_mb": round(statistics.median(last) - statistics.median(first), 1) if first and last else None,
        "slope_mb_per_hour": _round(slope_per_hour(points), 2),
        "slope_second_half_mb_per_hour": _round(slope_per_hour(half), 2),
        "hwm_mb": final_proc["hwm_mb"], "threads": final_proc["threads"], "fds": final_proc["fds"],
        "timeline": [{"min": round(x / 60, 1), "rss_mb": v} for x, v in points[::max(1, len(points) // 15)]],
    }
    exporter_cpu = final_proc["cpu_s"] - cpu0

    # The database's time: pg_stat_statements by role on the soak database, and backend CPU.
    by_user = stmts["by_user"]
    ours = by_user.get(MONITOR_ROLE, {"exec_ms": 0, "plan_ms": 0, "calls": 0})
    total_ms = sum(u["exec_ms"] + u["plan_ms"] for u in by_user.values())
    ours_ms = ours["exec_ms"] + ours["plan_ms"]
    # other: the server's own processes; unknown: backends never seen with a title
    cpu_by_who = {k: v for k, v in db_side["cpu_s"].items() if k not in ("other", "unknown")}
    backend_total = sum(cpu_by_who.values())
    parsed = parse_metrics(text, ("venzory_db_events_", "venzory_db_prisma_errors", "process_cpu_seconds",
                                  "process_resident_memory", "venzory_db_polls_skipped"))
    errors_by = {}
    for labels, value in parsed.get("venzory_db_prisma_errors_total", []):
        if value:
            errors_by[f"{labels['code']} {labels['kind']} {labels['constraint']} {labels['model']}"] = int(value)
    received = {l["source"]: v for l, v in parsed.get("venzory_db_events_received_total", [])}
    rejected = {f"{l['source']}/{l['reason']}": v for l, v in parsed.get("venzory_db_events_rejected_total", []) if v}
    ignored = {l["source"]: v for l, v in parsed.get("venzory_db_events_ignored_total", [])}
    return {
        "duration_s": seconds,
        "scrapes": {"n": len(scrapes), "non_200": len(scrapes) - len(ok),
                    "errors": [s for s in scrapes if s["status"] != 200][:5],
                    "latency_ms": summary([s["ms"] for s in ok], 2),
                    "bytes": ok[-1]["bytes"] if ok else None, "series": series_count(text)},
        "polls": {"n": len(in_window), "expected": round(seconds / polls_interval(poll_list)) if poll_list else None,
                  "with_problems": [p for p in poll_list if p["problems"]][:10],
                  "bad": sum(1 for p in poll_list if p["problems"]),
                  "full_scans": sum(1 for p in in_window if p["full_scan"]),
                  "checks_per_poll": poll_list[-1]["checks"] if poll_list else None,
                  "skipped_total": poll_list[-1]["skipped_total"] if poll_list else None,
                  "duration_s": summary([p["duration"] for p in in_window], 3),
                  "interval_s": summary(gaps, 2),
                  "timeline": [{"min": round((p["finished"] - t0) / 60, 2), "duration_s": round(p["duration"], 3)}
                               for p in poll_list]},
        "events": {"received": received, "ignored": ignored, "rejected_nonzero": rejected,
                   "prisma_errors_total": int(sum(errors_by.values())), "prisma_errors_by_labels": errors_by},
        "memory": memory,
        "exporter_cpu": {"seconds": round(exporter_cpu, 1), "share_of_one_core": round(exporter_cpu / seconds, 4),
                         "process_cpu_seconds_total_metric": parsed.get("process_cpu_seconds_total", [({}, None)])[0][1]},
        "database_time": {
            "by_user": by_user, "exporter_ms": round(ours_ms, 1), "all_ms": round(total_ms, 1),
            "exporter_share": round(ours_ms / total_ms, 4) if total_ms else None,
            # Every poll runs each table pass once: the most calls of one statement = the polls.
            "polls_in_statistics": max((t["calls"] for t in stmts["top_exporter"]), default=0),
            "exporter_ms_per_poll": round(ours_ms / max(1, max((t["calls"] for t in stmts["top_exporter"]), default=1)), 1),
            "exporter_calls": ours["calls"], "top_exporter_statements": stmts["top_exporter"],
            "pg_stat_statements_dealloc": stmts["dealloc"],
            "backend_cpu": db_side,
            "exporter_backend_cpu_share": round(cpu_by_who.get("exporter", 0) / backend_total, 4) if backend_total else None,
            "server_cpu_s": round(pg_cpu, 1),
            "exporter_backend_cpu_share_of_server": round(cpu_by_who.get("exporter", 0) / pg_cpu, 4) if pg_cpu else None,
        },
    }


def polls_interval(poll_list) -> float:
    gaps = [b["finished"] - a["finished"] for a, b in zip(poll_list, poll_list[1:])]
    return statistics.median(gaps) if gaps else 10.0


def _round(value, digits):
    return None if value is None else round(value, digits)


def print_report(r: dict) -> None:
    a, s, p, e, m, c, d = (r["args"], r["scrapes"], r["polls"], r["events"], r["memory"], r["exporter_cpu"],
                           r["database_time"])
    po, pg = r["poster"], r["pgbench"]
    print()
    print(f"== soak: {a['minutes']} min, {a['kind']} database at scale {a['scale']} "
          f"({r['database']['bytes'] / 1e6:.0f} MB), poll_interval {a['poll_interval']}s, "
          f"migrations {'off' if a['no_migrations'] else 'on'} ==")
    print(f"load: start [{r['uptime_start']}]  end [{r['uptime_end']}]")
    print(f"code: {r['code']}")
    print(f"\n/metrics every 1 s: {s['n']} scrapes, non-200 {s['non_200']}, latency ms {s['latency_ms']}, "
          f"{s['bytes']} bytes, {s['series']} series")
    print(f"POST /events: {po['posts']} POSTs of {a['batch']} lines ({po['raw_bytes_per_body'] / 1024:.0f} KiB, "
          f"{po['gzip_bytes_per_body'] / 1024:.0f} KiB gzip), statuses {po['statuses']}, connection errors "
          f"{po['connection_errors']}; {po['lines_per_second']:.0f} lines/s achieved; latency ms {po['latency_ms']}; "
          f"schedule lag s p99 {po['lag_s'].get('p99')} max {po['lag_s'].get('max')}")
    print(f"  answers: accepted {po['accepted']}, ignored {po['ignored']}, rejected {po['rejected']}; metrics: "
          f"received {e['received']}, rejected {e['rejected_nonzero'] or 0}, prisma errors {e['prisma_errors_total']}")
    print(f"polls: {p['n']} (about {p['expected']} expected), with a problem {p['bad']}, skipped {p['skipped_total']}, "
          f"{p['checks_per_poll']} checks each; duration s {p['duration_s']}; interval s {p['interval_s']}")
    first = [x["duration_s"] for x in p["timeline"] if x["min"] <= 5]
    last = [x["duration_s"] for x in p["timeline"] if x["min"] >= a["minutes"] - 5]
    if first and last:
        print(f"  poll duration median: first 5 min {statistics.median(first):.2f} s, last 5 min "
              f"{statistics.median(last):.2f} s (StockAdjustment rows: {r['database']['rows']['StockAdjustment']} -> "
              f"{r['database'].get('rows_end', {}).get('StockAdjustment')})")
    print(f"pgbench: {pg.get('transactions')} transactions, tps {pg.get('tps')}, failed {pg.get('failed')}, "
          f"latency avg {pg.get('latency_avg_ms')} ms, schedule lag avg {pg.get('lag_avg_ms')} ms")
    print(f"\nRSS: first {m['window_s'] / 60:.0f} min {m['first_window_mb']}\n     last  {m['window_s'] / 60:.0f} min "
          f"{m['last_window_mb']}\n     median change {m['median_change_mb']} MB, slope {m['slope_mb_per_hour']} MB/h "
          f"(second half {m['slope_second_half_mb_per_hour']} MB/h), peak {m['hwm_mb']} MB, threads {m['threads']}, "
          f"fds {m['fds']}")
    print("     " + ", ".join(f"{x['min']}m:{x['rss_mb']}" for x in m["timeline"]))
    print(f"exporter CPU: {c['seconds']} s = {c['share_of_one_core'] * 100:.1f} % of one core")
    print(f"\ndatabase time on {DB} (pg_stat_statements, exec + plan): exporter {d['exporter_ms'] / 1000:.1f} s of "
          f"{d['all_ms'] / 1000:.1f} s = {(d['exporter_share'] or 0) * 100:.2f} %; {d['exporter_ms_per_poll']} ms per poll, "
          f"{d['exporter_calls']} calls")
    for user, u in d["by_user"].items():
        print(f"  {user:16} calls {u['calls']:>9}  exec {u['exec_ms'] / 1000:8.1f} s  plan {u['plan_ms'] / 1000:6.1f} s  "
              f"blocks {u['blocks']}")
    b = d["backend_cpu"]
    print(f"backend CPU s (/proc every 0.1 s, by process title): {b['cpu_s']}; exporter's share of the backends' "
          f"(exporter + pgbench + autovacuum) {(d['exporter_backend_cpu_share'] or 0) * 100:.2f} %, of the whole server "
          f"({d['server_cpu_s']} s) {(d['exporter_backend_cpu_share_of_server'] or 0) * 100:.2f} %; "
          f"unattributed (exited between samples) {b['unattributed_s']} s")
    print(f"backends started: {b['backends_started']}; exporter sessions alive: {b['exporter_sessions']}")
    print("top exporter statements:")
    for t in d["top_exporter_statements"][:6]:
        print(f"  {t['calls']:>6} calls {t['exec_ms']:>9.1f} ms exec {t['plan_ms']:>7.1f} ms plan  {t['query'][:90]}")
    print(f"\nshutdown {r['shutdown']}; exporter log: {r['exporter_log']['warnings_or_errors']} warnings/errors "
          f"{r['exporter_log']['first'][:3]}")
    errors = (s["non_200"] + sum(v for k, v in po["statuses"].items() if not 200 <= int(k) < 300)
              + po["connection_errors"] + po["rejected"] + p["bad"] + (p["skipped_total"] or 0)
              + (pg.get("failed") or 0))
    print(f"ERRORS (non-200 scrapes + non-2xx POSTs + rejected events + bad polls + skipped + pgbench failures): {errors}")
    print(f"JSON: {r['json']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--events-per-second", type=float, default=5000.0)
    parser.add_argument("--batch", type=int, default=500, help="lines per POST")
    parser.add_argument("--distinct-bodies", type=int, default=40)
    parser.add_argument("--tps", type=float, default=300.0, help="pgbench rate limit (0: unthrottled)")
    parser.add_argument("--clients", type=int, default=4, help="pgbench clients")
    parser.add_argument("--scale", type=float, default=0.05, help="core_bench scale of the database")
    parser.add_argument("--kind", choices=["problems", "hardened"], default="problems")
    parser.add_argument("--poll-interval", type=float, default=10.0)
    parser.add_argument("--no-migrations", action="store_true")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--session-cost", action="store_true",
                        help="only measure what one short exporter session costs the server, then exit")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.session_cost:
        session_cost()
        return 0
    if args.role == "poster":
        role_poster(args.port, args.events_per_second, args.batch, args.seconds, args.distinct_bodies)
        return 0
    print_report(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
