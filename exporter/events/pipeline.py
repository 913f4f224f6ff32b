"""The event sources wired to the counters: what the server and daemon hold."""

from __future__ import annotations

import json
import threading
from typing import Callable, Iterable

from exporter.config.events import EventsConfig, default_database
from exporter.events.classify import Labels, Resolver
from exporter.events.counters import EventCounters, Tally
from exporter.http.events import SOURCE as HTTP_SOURCE, EventsApp
from exporter.events.known import KnownNames
from exporter.events.tail import Followers, SourceSpec


class Sink:
    """Where sources put their tallies; classification uses the latest known names."""

    def __init__(self, counters: EventCounters, known: KnownNames):
        self.counters = counters
        self.resolver = Resolver(known)

    def merge(self, source: str, database: str, tally: Tally) -> dict[Labels, int]:
        return self.counters.merge(source, database, tally, self.resolver)

    def reject(self, source: str, reason: str) -> None:
        self.counters.reject_request(source, reason)


class EventPipeline:
    """`.collector` (all event metrics), `.wsgi_app` (POST /events), `.start()` /
    `.stop()` (the file followers), `.update_known()` (after a poll learned the schema)."""

    def __init__(self, config: EventsConfig, databases: list[str], known: KnownNames,
                 counters: EventCounters | None = None):
        self.config = config
        # A config reload builds a new pipeline around the same counters: never reset.
        self.counters = counters or EventCounters(config.max_series)
        self.counters.max_series = config.max_series
        self.sink = Sink(self.counters, known)
        default = default_database(config, databases)
        self.wsgi_app: Callable = (EventsApp(config.http, databases, default, self.sink, config.max_line_bytes)
                                   if config.http.enabled else _disabled)
        specs = [SourceSpec(f.path, f.database or default) for f in config.files]
        if any(spec.database is None for spec in specs):
            raise ValueError("events.files: a file source has no database (see validate_events)")
        self.followers = Followers(
            specs, self.sink, max_line_bytes=config.max_line_bytes, poll_interval=config.poll_interval,
            rotate_wait=config.rotate_wait, state_path=config.state_file, start_at_end=config.start_at == "end",
        )
        self._sources = ([HTTP_SOURCE] if config.http.enabled else []) + [s.pattern for s in specs]
        self._databases = (list(databases) if config.http.enabled else []) + [s.database for s in specs]
        self._lock = threading.Lock()
        self.counters.precreate(self._sources, dict.fromkeys(self._databases), known)

    @property
    def authenticates(self) -> bool:
        """POST /events checks a bearer token of its own (events.http.token)."""
        return isinstance(self.wsgi_app, EventsApp) and self.wsgi_app.authenticates

    @property
    def collector(self) -> EventCounters:
        return self.counters

    def start(self) -> None:
        self.followers.start()

    def stop(self) -> None:
        """Within 1 s: the followers' thread is joined, the offsets saved."""
        self.followers.stop()

    def update_known(self, known: KnownNames) -> None:
        with self._lock:
            self.sink.resolver = Resolver(known)  # one reference swap: sources see old or new
            self.counters.precreate(self._sources, dict.fromkeys(self._databases), known)


def _disabled(environ: dict, start_response: Callable) -> Iterable[bytes]:
    payload = json.dumps({"error": "the events endpoint is disabled (events.http.enabled)"}).encode()
    start_response("404 Not Found", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]
