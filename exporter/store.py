"""The latest poll of each database, readiness, and the skipped-poll counts.

Written by the scheduler's threads, read by scrapes, /readyz and the daemon: replacing
the whole mapping under a lock is all the coordination needed, and a reader gets a
snapshot that never changes under it. The store outlives config reloads, so the counts
are never reset by one.
"""

from __future__ import annotations

import threading
from types import MappingProxyType
from collections.abc import Iterable, Mapping

from exporter.poll import PollResult


class ResultStore:
    def __init__(self, databases: Iterable[str]):
        self._lock = threading.Lock()
        self._databases = list(databases)
        self._latest: Mapping[str, PollResult] = MappingProxyType({})
        self._skipped = {name: 0 for name in self._databases}
        self._was_ready = False
        # Counts changes of the skipped counts: a rendered /metrics showing them is stale
        # (a new result is seen by `results()` being another mapping).
        self.changes = 0

    def put(self, result: PollResult) -> None:
        with self._lock:
            if result.database not in self._databases:
                return  # a database a reload removed
            self._latest = MappingProxyType({**self._latest, result.database: result})

    def set_databases(self, databases: Iterable[str]) -> None:
        """After a reload: the results of removed databases go, the others stay as they are
        until their next poll, and the counts of the databases kept keep counting."""
        with self._lock:
            self._databases = list(databases)
            self._latest = MappingProxyType(
                {name: r for name, r in self._latest.items() if name in self._databases})
            self._skipped = {name: self._skipped.get(name, 0) for name in self._databases}

    def results(self) -> Mapping[str, PollResult]:
        """The latest result of each database: a snapshot, replaced (never changed) by a
        later put, so `is` tells whether anything changed since."""
        with self._lock:
            return self._latest

    def latest(self, database: str) -> PollResult | None:
        return self.results().get(database)

    def count_skipped(self, database: str) -> None:
        with self._lock:
            self._skipped[database] = self._skipped.get(database, 0) + 1
            self.changes += 1

    def skipped(self) -> dict[str, int]:
        with self._lock:
            return dict(self._skipped)

    def ready(self) -> bool:
        """Every database has completed a poll (up or down). Once ready, a reload does not
        make it unready: a database it adds shows in /metrics after its first poll."""
        with self._lock:
            self._was_ready = self._was_ready or all(name in self._latest for name in self._databases)
            return self._was_ready
