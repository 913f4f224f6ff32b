"""The event sources wired to the counters: what the server and daemon hold."""

from __future__ import annotations

import json
import threading
from types import MappingProxyType
from collections.abc import Iterable, Mapping
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from exporter.config.events import EventsConfig, default_database, file_sources
from exporter.events.classify import Labels, Resolver
from exporter.events.counters import EventCounters, Tally
from exporter.http.events import SOURCE as HTTP_SOURCE, EventsApp
from exporter.events.known import KnownNames
from exporter.events.tail import Followers, SourceSpec


class Sink:
    """Where sources put their tallies. A database's events are classified with the names
    its own schema knows (learned from its polls), until then with the config's names.

    Sources read the resolvers without a lock: `_by_database` is replaced, never changed,
    so a reader sees the old mapping or the new one. Writers (the scheduler's threads,
    a reload) take the lock, so no update is lost to another.
    """

    def __init__(self, counters: EventCounters, known: KnownNames):
        self.counters = counters
        self._lock = threading.Lock()
        self._default = Resolver(known)
        self._by_database: Mapping[str, Resolver] = MappingProxyType({})

    def resolver(self, database: str) -> Resolver:
        return self._by_database.get(database, self._default)

    def learn(self, database: str, known: KnownNames) -> None:
        with self._lock:
            if self.resolver(database).known != known:  # a new Resolver starts with an empty cache
                self._by_database = MappingProxyType({**self._by_database, database: Resolver(known)})

    def reset(self, known: KnownNames) -> None:
        with self._lock:
            self._default, self._by_database = Resolver(known), MappingProxyType({})

    def merge(self, source: str, database: str, tally: Tally) -> dict[Labels, int]:
        return self.counters.merge(source, database, tally, self.resolver(database))

    def reject(self, source: str, reason: str) -> None:
        self.counters.reject_request(source, reason)


class EventPipeline:
    """`.collector` (all event metrics), `.wsgi_app` (POST /events), `.start()` /
    `.stop()` (the file followers), `.learn()` (after a poll read a database's schema)."""

    def __init__(self, config: EventsConfig, databases: list[str], known: KnownNames,
                 counters: EventCounters | None = None):
        self.config = config
        # A config reload builds a new pipeline around the same counters: never reset.
        self.counters = counters or EventCounters(config.max_series)
        self.counters.max_series = config.max_series
        self.sink = Sink(self.counters, known)
        default = default_database(config, databases)
        self.wsgi_app: WSGIApplication = (EventsApp(config.http, databases, default, self.sink, config.max_line_bytes)
                                  if config.http.enabled else _disabled)
        specs = [SourceSpec(path, database) for path, database in file_sources(config, databases)]
        self.followers = Followers(
            specs, self.sink, max_line_bytes=config.max_line_bytes, poll_interval=config.poll_interval,
            rotate_wait=config.rotate_wait, state_path=config.state_file, start_at_end=config.start_at == "end",
        )
        self._sources = ([HTTP_SOURCE] if config.http.enabled else []) + [s.pattern for s in specs]
        self._databases = (list(databases) if config.http.enabled else []) + [s.database for s in specs]
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
        """New names from the config (a reload): for every database until its next poll."""
        self.sink.reset(known)
        self.counters.precreate(self._sources, dict.fromkeys(self._databases), known)

    def learn(self, database: str, known: KnownNames) -> None:
        """The names `database`'s schema knows (the config's among them), after a poll."""
        self.sink.learn(database, known)


def _disabled(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    payload = json.dumps({"error": "the events endpoint is disabled (events.http.enabled)"}).encode()
    start_response("404 Not Found", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]
