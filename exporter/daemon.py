"""The long-running exporter: pollers + scheduler + store + HTTP server, and their lifecycle."""

from __future__ import annotations

import logging
import signal
import threading

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from exporter import __version__
from exporter.config import Config, parse_listen
from exporter.db import redact_dsn
from exporter.events import EventPipeline, KnownNames
from exporter.metrics import Store
from exporter.poll import Poller, PollResult
from exporter.scheduler import PollScheduler
from exporter.server import HttpServer, make_app

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, config: Config, listen: str | None = None):
        self.config = config
        self.store = Store(d.name for d in config.databases)
        self.pollers = [Poller(config, d) for d in config.databases]
        self.known = KnownNames.from_config(config)
        self.events = EventPipeline(config.events, [d.name for d in config.databases], self.known)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.store)
        self.registry.register(self.events.collector)
        # The exporter's own memory, CPU and file descriptors: it must be watched too.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        host, port = parse_listen(listen or config.exporter.listen)
        self.server = HttpServer(host, port, make_app(self.registry, self.store.ready, self.events.wsgi_app))
        self.scheduler = PollScheduler(
            self.pollers, self.on_result, self.store.count_skipped, config.exporter.max_concurrent_polls
        )
        self._stop = threading.Event()

    def on_result(self, result: PollResult) -> None:
        self.store.put(result)
        # Event labels may take the constraint and table names the schema knows: the
        # expected schema when there is one, else what the live catalog has.
        schema = result.migrations.expected if result.migrations and result.migrations.expected else result.schema
        if schema is not None:
            known = KnownNames.from_config(self.config).with_schema(schema)
            if known != self.known:
                self.known = known
                self.events.update_known(known)

    def start(self) -> "Daemon":
        self.events.start()
        self.server.start()
        for poller in self.pollers:
            db = poller.database.config
            log.info(
                "watching %s (%s) every %.0fs, full scan every %.0fs, %d checks",
                db.name, redact_dsn(db.dsn), db.poll_interval, db.full_scan_interval, len(poller.checks),
            )
            log.info("%s: %s", db.name, db.migrations.describe_off())
        self.scheduler.start()
        log.info("venzory-db-exporter %s listening on port %d", __version__, self.server.port)
        return self

    def stop(self) -> None:
        self.scheduler.stop()
        self.server.stop()
        self.events.stop()
        for poller in self.pollers:
            poller.close()

    def run_forever(self) -> None:
        """Start, block until SIGTERM or SIGINT, stop within a few seconds."""
        def on_signal(signum, frame):
            log.info("received %s, shutting down", signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        try:
            self._stop.wait()
        finally:
            self.stop()
