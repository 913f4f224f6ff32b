"""A burst of scrapers with events posted at the same time (issue 14, item 2).

    python bench/http_bench.py [--scrapers 50] [--interval 1] [--duration 30] [--posters 2]
                               [--processes 5] [--source DIR]

Starts its own throwaway PostgreSQL (exporter.pgcluster) with the problems fixture
(tests/venzory_fixture), the real daemon as a subprocess (`python -m exporter run`,
config/venzory.yaml, the least-privilege role), and then, for --duration seconds:

  --scrapers    clients doing GET /metrics, each on a new connection (no keep-alive, the
                worst case for the listen queue), all at once every --interval seconds
                (a burst: 50 Prometheus servers whose scrapes line up; 0 = each in a tight
                loop, a throughput test where latency is concurrency / throughput), spread
                over --processes client processes: coroutines (--client asyncio, the
                default: cheap, so the server is what is measured) or one thread each with
                http.client (--client threads);
  --posters     clients doing POST /events: an NDJSON body of 100 Prisma error lines every
                --post-every seconds each (default 2 x 10/s: 2,000 events/s; 0 = as fast
                as the server takes them, 429s of events.http.rate_limit counted).

Reports scrape latency (p50, p99, p99.9, max), scrapes over 1 s, errors, the POST
statuses, and the kernel's listen-queue overflows during the run (`nstat`
TcpExtListenOverflows, when available). JSON in bench/out/http_bench-<timestamp>.json.

--source DIR runs the daemon from another checkout (e.g. `git archive f8d1559 | tar -x -C
/tmp/old`), to measure the server before and after on the same machine and load.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from scale_bench import (  # noqa: E402 - the shared daemon/cluster helpers
    MONITOR_ROLE, create_monitor_role, load1, percentile, stop_exporter, wait_ready, write_config,
)

from exporter.pgcluster import free_port, start_cluster  # noqa: E402

EVENT = json.dumps({"level": 50, "msg": "x", "err": {"code": "P2002", "meta": {"modelName": "Item"}}})
BODY = ("\n".join([EVENT] * 100) + "\n").encode()


def scrape_loop(port: int, threads: int, until: float, interval: float, out) -> None:
    """One client process: `threads` scrapers until `until` (time.time()), each scraping at
    every multiple of `interval` (wall clock: all processes burst together); -> [seconds], errors."""
    import threading

    durations: list[float] = []
    errors: list[str] = []

    def scraper() -> None:
        while time.time() < until:
            if interval:
                time.sleep(interval - time.time() % interval)
            started = time.perf_counter()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
                response = conn.getresponse()
                response.read()
                conn.close()
                if response.status != 200:
                    errors.append(str(response.status))
            except OSError as e:
                errors.append(type(e).__name__)
            durations.append(time.perf_counter() - started)

    workers = [threading.Thread(target=scraper) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put((durations, errors))


def async_scrape_loop(port: int, scrapers: int, until: float, interval: float, out) -> None:
    """The same scrapers as coroutines in one process: a client that costs far less CPU
    than 50 threads of http.client, so that on a shared 2-core machine the server, not the
    client, is what is measured (the default; --client threads for the other)."""
    import asyncio

    durations: list[float] = []
    errors: list[str] = []
    request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"

    async def one() -> None:
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
            writer.write(request)
            answer = await asyncio.wait_for(reader.read(-1), 30)  # the server closes after the answer
            writer.close()
            if answer[9:12] != b"200":
                errors.append(answer[9:12].decode() or "empty")
        except (TimeoutError, OSError) as e:
            errors.append(type(e).__name__)
        durations.append(time.perf_counter() - started)

    async def scraper() -> None:
        while time.time() < until:
            if interval:
                await asyncio.sleep(interval - time.time() % interval)
            await one()

    async def everyone() -> None:
        await asyncio.gather(*(scraper() for _ in range(scrapers)))

    asyncio.run(everyone())
    out.put((durations, errors))


def post_loop(port: int, until: float, every: float, out) -> None:
    statuses: dict[str, int] = {}
    while time.time() < until:
        if every:
            time.sleep(every - time.time() % every)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", "/events", body=BODY, headers={"Content-Type": "application/x-ndjson"})
            response = conn.getresponse()
            response.read()
            conn.close()
            key = str(response.status)
        except OSError as e:
            key = type(e).__name__
        statuses[key] = statuses.get(key, 0) + 1
        if key == "429":
            time.sleep(0.05)
    out.put(("posts", statuses))


def start_exporter(config: Path, port: int, log_path: Path, source: Path | None) -> subprocess.Popen:
    """The real daemon, from this checkout or `source` (python -m exporter finds the
    package in its working directory first)."""
    import os

    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "exporter", "run", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
        cwd=source or REPO, env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        stdout=log, stderr=subprocess.STDOUT,
    )


def listen_overflows() -> int | None:
    nstat = shutil.which("nstat")
    if nstat is None:
        return None
    text = subprocess.run([nstat, "-az", "TcpExtListenOverflows"], capture_output=True, text=True).stdout
    for line in text.splitlines():
        if line.startswith("TcpExtListenOverflows"):
            return int(line.split()[1])
    return None


def run(args) -> dict:
    from venzory_fixture import build_database

    cluster = start_cluster()
    work = Path(tempfile.mkdtemp(prefix="http_bench-"))
    try:
        create_monitor_role(cluster)
        dsn = build_database(cluster, "venzory", seed="problems")
        with __import__("psycopg").connect(dsn, autocommit=True) as conn:
            conn.execute(f"GRANT USAGE ON SCHEMA public TO {MONITOR_ROLE}")
            conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {MONITOR_ROLE}")
        config = write_config(work / "config.yaml", [("venzory", cluster.dsn("venzory", user=MONITOR_ROLE))],
                              poll_interval=10, events={"database": "venzory"})
        port = free_port()
        log_path = work / "exporter.log"
        proc = start_exporter(config, port, log_path, args.source)
        try:
            wait_ready(proc, port, log_path)
            overflows_before = listen_overflows()
            until = time.time() + args.duration
            out = multiprocessing.Queue()
            per_process = [args.scrapers // args.processes + (i < args.scrapers % args.processes)
                           for i in range(args.processes)]
            loop = async_scrape_loop if args.client == "asyncio" else scrape_loop
            clients = [multiprocessing.Process(target=loop, args=(port, n, until, args.interval, out))
                       for n in per_process]
            clients += [multiprocessing.Process(target=post_loop, args=(port, until, args.post_every, out))
                        for _ in range(args.posters)]
            load_before = load1()
            for client in clients:
                client.start()
            durations: list[float] = []
            errors: list[str] = []
            posts: dict[str, int] = {}
            for _ in clients:
                first, second = out.get(timeout=args.duration + 120)
                if first == "posts":
                    for k, v in second.items():
                        posts[k] = posts.get(k, 0) + v
                else:
                    durations += first
                    errors += second
            for client in clients:
                client.join()
            overflows_after = listen_overflows()
        finally:
            shutdown = stop_exporter(proc)
        durations.sort()
        return {
            "scrapers": args.scrapers, "interval_s": args.interval, "posters": args.posters,
            "post_every_s": args.post_every,
            "duration_s": args.duration, "source": str(args.source or REPO),
            "client": args.client, "client_processes": args.processes, "load1_before": load_before, "load1_after": load1(),
            "scrapes": len(durations), "errors": len(errors), "error_kinds": sorted(set(errors)),
            "p50_ms": round(percentile(durations, 0.50) * 1000, 1),
            "p99_ms": round(percentile(durations, 0.99) * 1000, 1),
            "p999_ms": round(percentile(durations, 0.999) * 1000, 1),
            "max_ms": round(durations[-1] * 1000, 1),
            "over_1s": sum(1 for d in durations if d >= 1.0),
            "posts": posts,
            "listen_overflows": (overflows_after - overflows_before) if overflows_before is not None
            and overflows_after is not None else None,
            "shutdown": shutdown,
        }
    finally:
        cluster.destroy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapers", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--posters", type=int, default=2)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--client", choices=("asyncio", "threads"), default="asyncio")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--post-every", type=float, default=0.1)
    args = parser.parse_args()
    result = run(args)
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    path = out / f"http_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    for key, value in result.items():
        print(f"{key:>18}: {value}")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
