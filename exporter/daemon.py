"""The long-running exporter: pollers + scheduler + store + HTTP server, and their lifecycle:
start, reload on SIGHUP, stop on SIGTERM/SIGINT (docs/operations.md)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType
from collections.abc import Callable

from exporter import __version__
from exporter.checks.constraints import Source
from exporter.config import Config, ConfigError, DatabaseConfig, parse_listen
from exporter.config.dsn import redact_dsn
from exporter.db import ConnectionBudget
from exporter.events import EventPipeline, KnownNames
from exporter.metrics.endpoint import MetricsEndpoint
from exporter.poll import Poller, PollResult
from exporter.scheduler import PollScheduler
from exporter.store import ResultStore
from exporter.http import HttpServer, make_app, metrics_app
from exporter.config.web import WebSettings

log = logging.getLogger(__name__)


# Settings read once at start; a reload that changes them says they wait for a restart.
RESTART_ONLY = ("listen", "log_format", "log_level", "sentry_dsn", "web_config")
# How long a stop waits for polls it broke off before the process exits without them.
STOP_GRACE = 3.0


class Daemon:
    def __init__(self, config: Config, listen: str | None = None, load: Callable[[], Config] | None = None,
                 web: WebSettings | None = None):
        self.config = config
        self._load = load  # reads the config file again (SIGHUP); None: no reload
        self.budget = ConnectionBudget(config.exporter.connection_limit)
        self.store = ResultStore(d.name for d in config.databases)
        self.pollers = [Poller(config, d, self.budget) for d in config.databases]
        self.known = KnownNames.from_config(config)  # the config's names; each schema adds its own
        self.events = EventPipeline(config.events, [d.name for d in config.databases], self.known)
        # The event counters outlive reloads (a new pipeline keeps them): registered once.
        self.metrics = MetricsEndpoint(self.store, self.events.collector)
        host, port = parse_listen(listen or config.exporter.listen)
        # Through self.events at each request: a reload may replace the pipeline.
        # `web`: TLS, basic auth, headers (the web config); /events keeps its own token.
        self.server = HttpServer(host, port, make_app(
            metrics_app(self.metrics), self.store.ready, lambda environ, start: self.events.wsgi_app(environ, start)),
            web, events_authenticate=lambda: self.events.authenticates)
        self.scheduler = self._schedule()
        self._stopping: str | bool = False  # set by the signal handlers
        self._reload_requested = False
        self._reloading = threading.Lock()

    def _schedule(self) -> PollScheduler:
        return PollScheduler(
            self.pollers, self.on_result, self.store.count_skipped, self.config.exporter.max_concurrent_polls
        )

    def on_result(self, result: PollResult) -> None:
        self.store.put(result)
        self.metrics.prepare()
        # Event labels may take the constraint and table names the schema knows: the
        # expected schema when there is one, else what the live catalog has.
        schema = result.migrations.expected if result.migrations and result.migrations.expected else result.schema
        if schema is not None:
            # A configured constraint the app renamed: its events count under the configured name.
            renamed = {c.actual: c.name for c in result.constraints
                       if c.source == Source.CONFIG and c.actual and c.actual != c.name}
            self.events.learn(result.database, self.known.with_schema(schema).with_aliases(renamed))

    def start(self) -> Daemon:
        self.events.start()
        self.server.start()
        self._describe_pollers()
        self.scheduler.start()
        log.info("venzory-db-exporter %s listening on port %d", __version__, self.server.port)
        return self

    def reload(self) -> bool:
        """Read the config again and switch to it; False, with the old config still
        running, when the new one is invalid. The store, the event counters and the HTTP
        server stay: counters are not reset, /metrics is served throughout."""
        if self._load is None:
            log.warning("received SIGHUP, but this daemon has no config file to reload")
            return False
        try:
            config = self._load()
        except ConfigError as e:
            for problem in str(e).splitlines():
                log.error("config reload rejected, the running config stays: %s", problem)
            return False
        except Exception:  # noqa: BLE001 - a reload must never take the running exporter down
            log.exception("config reload failed, the running config stays")
            return False
        with self._reloading:
            restart_only = [k for k in RESTART_ONLY if getattr(config.exporter, k) != getattr(self.config.exporter, k)]
            if restart_only:
                log.warning("reload: exporter.%s changed and takes effect at the next restart",
                            ", exporter.".join(restart_only))
            self._stop_polls()
            old, self.config = self.config, config
            names = [d.name for d in config.databases]
            self.budget.resize(config.exporter.connection_limit)
            self.store.set_databases(names)
            self.pollers = [self._poller(config, d, old) for d in config.databases]
            self.known = KnownNames.from_config(config)
            if (config.events, names) != (old.events, [d.name for d in old.databases]):
                # New sources or databases: a new pipeline around the same counters.
                events = EventPipeline(config.events, names, self.known, self.events.counters)
                self.events.stop()
                self.events = events
                self.events.start()
            else:
                self.events.update_known(self.known)
            self.scheduler = self._schedule()
            self._describe_pollers()
            self.scheduler.start()
        log.info("config reloaded: %d databases (%s)", len(names), ", ".join(names))
        return True

    def _describe_pollers(self) -> None:
        for poller in self.pollers:
            db = poller.database.config
            log.info(
                "watching %s (%s) every %gs, full scan every %gs, %d checks",
                db.name, redact_dsn(db.dsn), db.poll_interval, db.full_scan_interval, len(poller.checks),
            )
            log.info("%s: %s", db.name, db.migrations.describe_off())

    def _poller(self, config: Config, database: DatabaseConfig, old: Config) -> Poller:
        poller = Poller(config, database, self.budget)
        previous = next((p for p in self.pollers if p.name == database.name), None)
        same_checks = old.checks_for(database) == config.checks_for(database)
        if previous and previous.database.config == database and same_checks:
            poller.last_full_scan = previous.last_full_scan  # a reload does not force full scans
        if previous:
            poller.adopt(previous)
        return poller

    def _stop_polls(self) -> None:
        """No more polls, no more results; polls in flight are broken off at once."""
        self.scheduler.stop()
        for poller in self.pollers:
            poller.close()

    def stop(self) -> None:
        with self._reloading:
            self._stop_polls()
            self.server.stop()
            self.events.stop()

    def run_forever(self) -> None:
        """Start, reload on SIGHUP, block until SIGTERM or SIGINT, stop within seconds."""
        def on_signal(signum: int, frame: FrameType | None) -> None:
            # Only flags: a handler runs between two bytecodes of the main thread, maybe
            # inside a lock it holds; the loop below does the work.
            if signum == signal.SIGHUP:
                self._reload_requested = True
            else:
                self._stopping = signal.Signals(signum).name

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, on_signal)
        try:
            # Inside the try: the HTTP server's worker threads exist from the constructor on
            # (it binds there) and would keep a process whose start failed from exiting.
            self.start()
            while not self._stopping:
                time.sleep(0.1)
                if self._reload_requested and not self._stopping:
                    self._reload_requested = False
                    log.info("received SIGHUP, reloading the config")
                    self.reload()
        finally:
            log.info("received %s, shutting down", self._stopping or "an error")
            self.stop()
        if not self.scheduler.wait_idle(STOP_GRACE):
            # A poll still connecting (at most connect_timeout) would hold the exit.
            log.warning("a poll did not end within %.0fs of the stop; exiting without it", STOP_GRACE)
            logging.shutdown()
            os._exit(0)
