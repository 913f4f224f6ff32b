"""Event ingest throughput and memory, against mtail, in one run.

    python bench/events_bench.py [--seconds 10] [--rate 60000] [--out bench/out/events.json]

The workload is the real Prisma 7 log of tests/prisma_app/samples/prisma7-pino.jsonl
(pino lines with the serialized error and its stack, ~1.5 KB each, 9 of 11 lines are
Prisma errors), each line made unique. Measured, each in its own process so its peak
resident memory (VmHWM) is its own:

1. catch-up: the exporter's file follower reads a file already written (start to end);
   mtail --one_shot counts the same file with an equivalent program (counts by code and
   constraint name, by regex: mtail reads no JSON).
2. live follow: a writer appends at --rate lines/s for --seconds while the follower
   (and, in a second round, mtail in follow mode) counts; reported: lines/s from the
   first write to the last line counted, and the lag when the writer stopped.
3. HTTP: batches of 1,000 lines, gzip NDJSON, POSTed one after another to /events on a
   real threaded HTTP server (wsgiref), from this process; then the worst case for
   memory: 6 clients at once sending the largest bodies allowed.

A benchmark, not a test: it prints numbers (and writes them as JSON with --out).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "prisma_app" / "samples" / "prisma7-pino.jsonl"
KNOWN_CONSTRAINTS = ["Item_practiceId_name_key", "Item_practiceId_fkey", "check_quantity_non_negative"]
KNOWN_TABLES = ["Item", "Location", "LocationInventory", "Practice"]

# Counts by code and constraint name, as the exporter does, with regexes (mtail reads
# no JSON). Written for mtail's speed: one cheap test per line, the captures only on
# the lines that have a Prisma code (`/^/` is much cheaper than `/$/` in mtail).
MTAIL_PROGRAM = r'''
counter venzory_db_prisma_errors_total by code, constraint
counter venzory_db_events_received_total

/^/ {
  venzory_db_events_received_total++
}
/"code":"(?P<code>P\d{4})"/ {
  /"constraint":\{"index":"(?P<constraint>[^"]+)"\}/ {
    venzory_db_prisma_errors_total[$code][$constraint]++
  } else {
    /violates check constraint \\"(?P<check>[^"\\]+)\\"/ {
      venzory_db_prisma_errors_total[$code][$check]++
    } else {
      venzory_db_prisma_errors_total[$code]["none"]++
    }
  }
}
'''


# -- the workload ----------------------------------------------------------------------------------

def workload_lines() -> list[bytes]:
    return [line + b"\n" for line in SAMPLE.read_bytes().splitlines() if line.strip()]


def numbered(lines: list[bytes], start: int, count: int) -> bytes:
    """`count` lines cycling through the sample, each with its own "time" value."""
    out = []
    for n in range(start, start + count):
        line = lines[n % len(lines)]
        out.append(line.replace(b'"time":', b'"time":%d,"seq":' % n, 1))
    return b"".join(out)


def errors_in(count: int, lines: list[bytes]) -> int:
    per_cycle = sum(1 for line in lines if b'"err"' in line or b'"error"' in line or b'"e":' in line)
    full, rest = divmod(count, len(lines))
    return full * per_cycle + sum(1 for line in lines[:rest] if b'"err"' in line or b'"error"' in line
                                  or b'"e":' in line)


# -- roles run in child processes -----------------------------------------------------------------

def _pipeline(files: list[str]):
    sys.path.insert(0, str(ROOT))
    from exporter.config.events import EventsConfig
    from exporter.events import EventPipeline, KnownNames

    config = EventsConfig.model_validate({"files": [{"path": f} for f in files], "start_at": "beginning",
                                          "poll_interval": "50ms", "http": {"max_body_bytes": "32MiB"}})
    known = KnownNames(constraints=frozenset(KNOWN_CONSTRAINTS), tables=frozenset(KNOWN_TABLES))
    return EventPipeline(config, ["venzory"], known)


def _received(pipeline, source: str) -> int:
    received = pipeline.counters.collect()[1]  # venzory_db_events_received_total
    return int(sum(s.value for s in received.samples if s.labels["source"] == source))


def role_follow(path: str, expect: int) -> None:
    """Follow `path` until `expect` lines are counted; print timings as JSON."""
    pipeline = _pipeline([path])
    print(json.dumps({"ready": True}), flush=True)
    started = time.monotonic()
    cpu_started = time.process_time()
    pipeline.start()
    while _received(pipeline, path) < expect:
        time.sleep(0.01)
    done = time.monotonic()
    cpu = time.process_time() - cpu_started
    pipeline.stop()
    errors = int(sum(pipeline.counters.errors().values()))
    print(json.dumps({"done_at": time.time(), "elapsed": done - started, "cpu": cpu, "errors": errors,
                      "vmhwm_kb": _vmhwm_kb()}), flush=True)


def role_serve() -> None:
    """Serve /events on a free port until stdin closes; then print counts and memory."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    pipeline = _pipeline([])
    server = make_server("127.0.0.1", 0, pipeline.wsgi_app, Server, Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"port": server.server_port}), flush=True)
    sys.stdin.read()
    server.shutdown()
    print(json.dumps({"received": _received(pipeline, "http"), "errors": int(sum(pipeline.counters.errors().values())),
                      "cpu": time.process_time(), "vmhwm_kb": _vmhwm_kb()}), flush=True)


def _vmhwm_kb() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1))


# -- measurements ----------------------------------------------------------------------------------

def spawn(*args: str, stdin=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, stdin=stdin, text=True)


def wait4(process: subprocess.Popen) -> dict:
    """CPU seconds of a finished child. (Not its ru_maxrss: on Linux a child starts from
    its parent's high-water mark; peak memory is read from /proc instead.)"""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {"cpu": usage.ru_utime + usage.ru_stime}


class PeakMemory:
    """Samples a running process's VmHWM (peak resident memory) from /proc."""

    def __init__(self, pid: int):
        self.pid, self.kb = pid, 0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while True:
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            match = re.search(r"VmHWM:\s+(\d+)", status)
            if not match:
                return
            self.kb = max(self.kb, int(match.group(1)))
            time.sleep(0.02)

    @property
    def mb(self) -> float:
        return round(self.kb / 1024, 1)


def catch_up(path: Path, count: int) -> dict:
    child = spawn("--role", "follow", "--path", str(path), "--expect", str(count))
    json.loads(child.stdout.readline())
    result = json.loads(child.stdout.readline())
    wait4(child)
    return {"lines": count, "errors": result["errors"], "seconds": round(result["elapsed"], 3),
            "lines_per_second": round(count / result["elapsed"]),
            "lines_per_cpu_second": round(count / result["cpu"]), "peak_rss_mb": round(result["vmhwm_kb"] / 1024, 1)}


def mtail_one_shot(mtail: str, progs: Path, path: Path, count: int) -> dict:
    started = time.monotonic()
    process = subprocess.Popen([mtail, "--progs", str(progs), "--logs", str(path), "--one_shot",
                                "--one_shot_format", "prometheus", "--logtostderr"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = PeakMemory(process.pid)
    output = process.stdout.read()
    usage = wait4(process)
    elapsed = time.monotonic() - started
    received = _prom_sum(output, "venzory_db_events_received_total")
    errors = _prom_sum(output, "venzory_db_prisma_errors_total")
    return {"lines": int(received), "errors": int(errors), "seconds": round(elapsed, 3),
            "lines_per_second": round(count / elapsed), "lines_per_cpu_second": round(count / usage["cpu"]),
            "peak_rss_mb": peak.mb}


def _prom_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def write_at_rate(path: Path, lines: list[bytes], rate: int, seconds: float) -> tuple[int, float, float]:
    """Append `rate` lines/s for `seconds` in 10 ms steps; returns (lines, first, last write time)."""
    step = 0.01
    per_step = max(1, int(rate * step))
    total = int(rate * seconds)
    written = 0
    with open(path, "ab", buffering=0) as f:
        first = time.time()
        next_at = time.monotonic()
        while written < total:
            n = min(per_step, total - written)
            f.write(numbered(lines, written, n))
            written += n
            next_at += step
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        last = time.time()
    return written, first, last


def live_follow(path: Path, lines: list[bytes], rate: int, seconds: float) -> dict:
    child = spawn("--role", "follow", "--path", str(path), "--expect", str(int(rate * seconds)))
    json.loads(child.stdout.readline())
    time.sleep(0.3)
    written, first, last = write_at_rate(path, lines, rate, seconds)
    result = json.loads(child.stdout.readline())
    wait4(child)
    span = result["done_at"] - first
    return {"target_rate": rate, "lines": written, "write_seconds": round(last - first, 2),
            "lines_per_second": round(written / span), "lag_after_writer_stopped_s": round(result["done_at"] - last, 3),
            "peak_rss_mb": round(result["vmhwm_kb"] / 1024, 1)}


def mtail_live(mtail: str, progs: Path, path: Path, lines: list[bytes], rate: int, seconds: float) -> dict:
    port = _free_port()
    path.touch()
    process = subprocess.Popen([mtail, "--progs", str(progs), "--logs", str(path), "--address", "127.0.0.1",
                                "--port", str(port), "--logtostderr", "--poll_interval", "50ms"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = PeakMemory(process.pid)
    try:
        _wait_http(port)
        time.sleep(0.3)
        total = int(rate * seconds)
        result: dict = {}

        def watch():
            while True:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                if _prom_sum(text, "venzory_db_events_received_total") >= total:
                    result["done_at"] = time.time()
                    return
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        written, first, last = write_at_rate(path, lines, rate, seconds)
        watcher.join(120)
        time.sleep(0.05)  # a last memory sample
    finally:
        process.terminate()
        wait4(process)
    if "done_at" not in result:
        return {"target_rate": rate, "error": "mtail did not count every line within 120 s"}
    span = result["done_at"] - first
    return {"target_rate": rate, "lines": written, "lines_per_second": round(written / span),
            "lag_after_writer_stopped_s": round(result["done_at"] - last, 3), "peak_rss_mb": peak.mb}


def http_batches(lines: list[bytes], total: int, batch: int) -> dict:
    child = spawn("--role", "serve", stdin=subprocess.PIPE)
    port = json.loads(child.stdout.readline())["port"]
    bodies = [gzip.compress(numbered(lines, start, batch), 1) for start in range(0, total, batch)]
    started = time.monotonic()
    for body in bodies:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("POST", "/events", body=body, headers={
            "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
        response = connection.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200 and answer["rejected"] == 0, answer
        connection.close()
    elapsed = time.monotonic() - started
    child.stdin.close()
    result = json.loads(child.stdout.readline())
    wait4(child)
    assert result["received"] == total, result
    return {"lines": total, "batch": batch, "errors": result["errors"], "seconds": round(elapsed, 3),
            "lines_per_second": round(total / elapsed), "peak_rss_mb": round(result["vmhwm_kb"] / 1024, 1)}


def http_largest_bodies(clients: int, bodies_each: int) -> dict:
    """Worst case for memory: `clients` at once, each sending bodies of the largest size
    allowed (8 MiB decompressed, gzip) made of short records (the most objects per
    byte), as NDJSON and as a JSON array, one after the other."""
    child = spawn("--role", "serve", stdin=subprocess.PIPE)
    port = json.loads(child.stdout.readline())["port"]
    short = b'{"level":30,"time":1732000000000,"pid":7,"hostname":"web-1","msg":"request served \xe2\x86\x92"}'
    count = 8 * 1024 * 1024 // (len(short) + 1) - 1
    ndjson = gzip.compress((short + b"\n") * count, 1)
    array = gzip.compress(b"[" + b",".join([short] * count) + b"]", 1)  # non-ASCII: decoded as UCS-2
    statuses: list[int] = []

    def client():
        for n in range(bodies_each):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            kind, body = ("application/json", array) if n % 2 else ("application/x-ndjson", ndjson)
            connection.request("POST", "/events", body=body, headers={
                "Content-Type": kind, "Content-Encoding": "gzip"})
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
            connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    child.stdin.close()
    result = json.loads(child.stdout.readline())
    wait4(child)
    return {"clients": clients, "bodies": len(statuses), "statuses": sorted(set(statuses)),
            "lines": result["received"], "seconds": round(elapsed, 2),
            "lines_per_second": round(result["received"] / elapsed), "peak_rss_mb": round(result["vmhwm_kb"] / 1024, 1)}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mtail did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["follow", "serve"])
    parser.add_argument("--path")
    parser.add_argument("--expect", type=int)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=60_000, help="lines/s the live writer appends")
    parser.add_argument("--catch-up-lines", type=int, default=300_000)
    parser.add_argument("--http-lines", type=int, default=200_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.role == "follow":
        return role_follow(args.path, args.expect)
    if args.role == "serve":
        return role_serve()

    lines = workload_lines()
    mtail = shutil.which("mtail")
    results: dict = {"machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
                     "line_bytes_avg": round(sum(map(len, lines)) / len(lines))}
    with tempfile.TemporaryDirectory(prefix="events-bench-") as tmp:
        tmp = Path(tmp)
        progs = tmp / "progs"
        progs.mkdir()
        (progs / "prisma.mtail").write_text(MTAIL_PROGRAM)

        written = tmp / "written.log"
        with open(written, "wb") as f:
            for start in range(0, args.catch_up_lines, 10_000):
                f.write(numbered(lines, start, min(10_000, args.catch_up_lines - start)))
        expected_errors = errors_in(args.catch_up_lines, lines)
        results["catch_up"] = {"exporter": catch_up(written, args.catch_up_lines)}
        assert results["catch_up"]["exporter"]["errors"] == expected_errors
        if mtail:
            results["catch_up"]["mtail"] = mtail_one_shot(mtail, progs, written, args.catch_up_lines)
        written.unlink()
        _show("catch-up", results["catch_up"])

        results["live_follow"] = {"exporter": live_follow(tmp / "live.log", lines, args.rate, args.seconds)}
        if mtail:
            results["live_follow"]["mtail"] = mtail_live(mtail, progs, tmp / "live-mtail.log", lines, args.rate,
                                                         args.seconds)
        _show("live follow", results["live_follow"])

        results["http"] = {"exporter": http_batches(lines, args.http_lines, 1000)}
        _show("http", results["http"])
        results["http_largest_bodies"] = {"exporter": http_largest_bodies(clients=6, bodies_each=3)}
        _show("http 8 MiB", results["http_largest_bodies"])
    results["machine"]["load_average_at_end"] = os.getloadavg()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results["machine"]))


def _show(what: str, result: dict) -> None:
    for who, numbers in result.items():
        print(f"{what:12} {who:9} " + "  ".join(f"{k}={v}" for k, v in numbers.items()), flush=True)


if __name__ == "__main__":
    main()
