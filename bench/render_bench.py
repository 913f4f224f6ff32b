"""What one /metrics answer costs with 10,000 event series (the `events.max_series` cap).

    python bench/render_bench.py [--series 10000] [--scrapes 200]

In-process, no HTTP and no database: an EventPipeline is fed N distinct Prisma codes through
its own WSGI app (the cap folds what is over it), and `MetricsEndpoint.body()` is timed
with the burst reuse off (REUSE_SECONDS = 0, as for scrapes more than 0.25 s apart):

  unchanged        no event between two scrapes (the usual case: scrapes every 15-30 s, the
                   counters move only when the app reports errors)
  event between    one event posted before every scrape (an error storm)
  peer             prometheus_client's own `generate_latest` of the same registry: what
                   every scrape cost before the counters' render was cached
  floor            `generate_latest` of the process and platform collectors alone: the least
                   a scrape of this process can render

Medians and p99 in ms on stdout, and bench/out/render_bench-<timestamp>.json; numbers in
docs/performance.md.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest  # noqa: E402

import exporter.metrics.endpoint as endpoint_module  # noqa: E402
from exporter.config.events import EventsConfig  # noqa: E402
from exporter.events.known import KnownNames  # noqa: E402
from exporter.events.pipeline import EventPipeline  # noqa: E402
from exporter.metrics.endpoint import MetricsEndpoint  # noqa: E402
from exporter.store import ResultStore  # noqa: E402
from timing import time_runs  # noqa: E402 - bench/timing.py, beside this script

OUT = REPO / "bench" / "out"


def line(code: str) -> str:
    return json.dumps({"level": 50, "err": {"code": code, "meta": {"modelName": "Item"}}})


def post(pipeline: EventPipeline, body: str) -> None:
    data = body.encode()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/events", "CONTENT_TYPE": "application/x-ndjson",
               "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data), "REMOTE_ADDR": "127.0.0.1"}
    status: list[str] = []
    b"".join(pipeline.wsgi_app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status and status[0].startswith("200"), status


def timed(action, scrapes: int) -> dict[str, float]:
    times, _ = time_runs(action, scrapes)
    return {"median_ms": statistics.median(times), "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=10_000, help="distinct Prisma codes posted (P0000-P9999)")
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    pipeline = EventPipeline(EventsConfig(), ["venzory"], KnownNames())
    post(pipeline, "\n".join(line(f"P{n:04d}") for n in range(min(args.series, 10_000))))
    endpoint_module.REUSE_SECONDS = 0.0
    endpoint = MetricsEndpoint(ResultStore(["venzory"]), pipeline.collector)
    floor = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=floor)
    PlatformCollector(registry=floor)
    body = endpoint.body(None)[1]
    print(f"{len(pipeline.counters.errors())} error series, /metrics {len(body) / 1024:.0f} KiB", flush=True)

    results = {
        "unchanged": timed(lambda: endpoint.body(None), args.scrapes),
        "event_between": timed(lambda: (post(pipeline, line("P2002")), endpoint.body(None)), args.scrapes),
        "peer_generate_latest": timed(lambda: generate_latest(endpoint.registry), args.scrapes),
        "floor_process_only": timed(lambda: generate_latest(floor), args.scrapes),
    }
    for name, r in results.items():
        print(f"  {name:22s} median {r['median_ms']:8.2f} ms   p99 {r['p99_ms']:8.2f} ms", flush=True)
    unchanged, peer, floor_ms = (results[k]["median_ms"] for k in ("unchanged", "peer_generate_latest",
                                                                    "floor_process_only"))
    print(f"  unchanged / floor {unchanged / floor_ms:.2f}x, peer / unchanged {peer / unchanged:.0f}x")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"render_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "series": len(pipeline.counters.errors()),
                                "bytes": len(body), "results": results}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
