"""Scheduling: first poll at once, no overlapping polls of one database, overruns skipped
and counted rather than queued."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from exporter.config import Config
from exporter.poll import Poller
from exporter.scheduler import PollScheduler
from exporter.store import ResultStore


@pytest.fixture(scope="module")
def slow_dsn(pg_server):
    dsn = pg_server.create_database("scheduler_slow")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE slow (id int)")
        conn.execute("INSERT INTO slow VALUES (1)")
    return dsn


def config_for(dsn: str, interval: float, sleep: float) -> Config:
    return Config.model_validate({
        "databases": [{"name": "slow", "dsn": dsn, "poll_interval": interval}],
        "checks": [{"name": "sleepy", "kind": "row", "table": "slow", "category": "test",
                    "severity": "warning", "rule": f"pg_sleep({sleep}) IS NOT NULL"}],
    })


def test_overrunning_polls_are_skipped_and_never_overlap(slow_dsn):
    config = config_for(slow_dsn, interval=0.2, sleep=1.0)
    store = ResultStore(["slow"])
    running, overlaps, done = [], [], []
    lock = threading.Lock()

    class Tracking(Poller):
        def poll(self, **kwargs):
            with lock:
                running.append(1)
                if len(running) > 1:
                    overlaps.append(time.monotonic())
            try:
                return super().poll(**kwargs)
            finally:
                with lock:
                    running.pop()

    poller = Tracking(config, config.databases[0])
    started = time.monotonic()
    scheduler = PollScheduler([poller], lambda r: (done.append(time.monotonic() - started), store.put(r)),
                              store.count_skipped, max_concurrent=4)
    scheduler.start()
    try:
        deadline = time.monotonic() + 15
        while len(done) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.stop()
        poller.close()
    assert len(done) >= 2
    assert done[0] < 2.0  # the first poll started at once (1 s of sleep in it)
    assert overlaps == []
    assert store.skipped()["slow"] >= 2
    assert store.latest("slow").checks[0].violations == 0


def test_later_polls_are_spread_over_the_interval(slow_dsn):
    # Four databases, one interval: the first polls start at once, the later ones at
    # phases 0, 1/4, 2/4, 3/4 of the interval (within the jitter), not all together.
    interval = 2.0
    config = Config.model_validate({
        "databases": [{"name": f"db{i}", "dsn": slow_dsn, "poll_interval": interval} for i in range(4)],
        "checks": [{"name": "quick", "kind": "row", "table": "slow", "category": "test",
                    "severity": "warning", "rule": "id > 0"}],
    })
    starts: dict[str, list[float]] = {}
    origin = time.monotonic()

    class Recording(Poller):
        def poll(self, **kwargs):
            starts.setdefault(self.name, []).append(time.monotonic() - origin)
            return super().poll(**kwargs)

    pollers = [Recording(config, db) for db in config.databases]
    scheduler = PollScheduler(pollers, lambda r: None, lambda name: None, max_concurrent=4)
    scheduler.start()
    try:
        deadline = time.monotonic() + 15
        while min((len(s) for s in starts.values()), default=0) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.stop()
        for poller in pollers:
            poller.close()
    assert all(s[0] < 1.0 for s in starts.values()), starts  # the first polls at once
    second = sorted(starts[f"db{i}"][1] for i in range(4))
    gaps = [b - a for a, b in zip(second, second[1:])]
    assert all(0.25 < gap < 0.75 for gap in gaps), (second, gaps)  # 0.5 s apart, +-jitter (0.1 s)
