"""The event counters: a bounded dict behind a lock, exposed by a custom Collector.

Sources count into a local `Tally` (no lock per line) and merge it in one step. The
Collector emits plain counters with no `_created` series (the
PROMETHEUS_DISABLE_CREATED_SERIES semantics), whatever the process environment says.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.core import Metric

from exporter.events.classify import NONE, OTHER, UNKNOWN_CODE, ErrorFacts, Labels, Resolver
from exporter.events.known import ErrorKind, KnownNames
from exporter.events.parse import REASONS, Outcome, Rejected
from exporter.metrics.contract import EVENTS_IGNORED, EVENTS_RECEIVED, EVENTS_REJECTED, PRISMA_ERRORS, Family

# Codes whose series exist at 0 from the start, with the kind each one has.
MAIN_CODES = (("P2002", ErrorKind.UNIQUE), ("P2003", ErrorKind.FOREIGN_KEY), ("P2004", ErrorKind.CHECK),
              ("P2011", ErrorKind.NOT_NULL), ("P2025", ErrorKind.RECORD_NOT_FOUND),
              ("P2034", ErrorKind.WRITE_CONFLICT), ("P2039", ErrorKind.CHECK))
# How each kind of expected constraint arrives: a CHECK violation as P2039 (Prisma 7.9+),
# P2010 (raw queries), P2004 (the runbook's assumption) or with no code (Prisma 5/6).
CODES_BY_KIND: dict[str, tuple[str, ...]] = {
    ErrorKind.CHECK: ("P2039", "P2010", "P2004", UNKNOWN_CODE), ErrorKind.UNIQUE: ("P2002",),
    ErrorKind.FOREIGN_KEY: ("P2003",),
}

class EventTotals:
    """The accounting of event records: each one received is a Prisma error (accepted),
    ignored, or rejected (docs/events.md)."""

    __slots__ = ()
    errors: Mapping[Any, int]
    ignored: int
    rejected: Mapping[str, int]

    @property
    def accepted(self) -> int:
        return sum(self.errors.values())

    @property
    def received(self) -> int:
        return self.accepted + self.ignored + sum(self.rejected.values())


class Tally(EventTotals):
    """Outcomes of one batch (an HTTP body, a chunk of a file), counted without a lock."""

    __slots__ = ("errors", "ignored", "rejected")

    def __init__(self) -> None:
        self.errors: Counter[ErrorFacts] = Counter()
        self.ignored = 0
        self.rejected: Counter[str] = Counter()

    def add(self, outcome: Outcome) -> None:
        if outcome is None:
            self.ignored += 1
        elif isinstance(outcome, Rejected):
            self.rejected[outcome.reason] += 1
        else:
            self.errors[outcome] += 1

    def __bool__(self) -> bool:
        return bool(self.errors or self.ignored or self.rejected)

    def take(self) -> Tally:
        """What was counted so far, leaving this tally empty (its `add` stays bound)."""
        taken = Tally()
        taken.errors, taken.ignored, taken.rejected = self.errors, self.ignored, self.rejected
        self.errors, self.ignored, self.rejected = Counter(), 0, Counter()
        return taken


class EventCounters:
    def __init__(self, max_series: int = 10_000):
        self.max_series = max_series
        # Room kept for the overflow series (one per database and kind), so that the cap
        # holds with them: max_series is the most series there can ever be.
        self._reserved = len(ErrorKind)
        self._lock = threading.Lock()
        self._errors: dict[tuple[str, str, str, str, str], int] = {}
        self._received: dict[str, int] = {}
        self._ignored: dict[str, int] = {}
        self._rejected: dict[tuple[str, str], int] = {}
        self.changes = 0  # counts every change: a rendered /metrics holding the counters is stale

    def merge(self, source: str, database: str, tally: Tally, resolver: Resolver) -> dict[Labels, int]:
        """Add a batch; returns its errors by labels (a batch has few distinct facts, so
        each is classified once here rather than once per line)."""
        by_labels: Counter[Labels] = Counter()
        for facts, n in tally.errors.items():
            by_labels[resolver.classify(facts)] += n
        with self._lock:
            for labels, n in by_labels.items():
                key = self._bounded((database, labels.code, labels.kind, labels.constraint, labels.model))
                self._errors[key] = self._errors.get(key, 0) + n
            self._received[source] = self._received.get(source, 0) + tally.received
            self._ignored[source] = self._ignored.get(source, 0) + tally.ignored
            for reason, n in tally.rejected.items():
                self._rejected[(source, reason)] = self._rejected.get((source, reason), 0) + n
            self.changes += 1
        return dict(by_labels)

    def reject_request(self, source: str, reason: str) -> None:
        """A refused request (401, 413 body, bad gzip): one record received and rejected."""
        with self._lock:
            self._received[source] = self._received.get(source, 0) + 1
            self._rejected[(source, reason)] = self._rejected.get((source, reason), 0) + 1
            self.changes += 1

    def _bounded(self, key: tuple[str, str, str, str, str]) -> tuple[str, str, str, str, str]:
        # Labels are bounded by known names already; this cap also bounds the product
        # (10,000 possible codes x kinds x constraints x tables) whatever arrives.
        if key in self._errors or len(self._errors) < self.max_series - self._reserved:
            return key
        return (key[0], UNKNOWN_CODE, key[2], OTHER, OTHER)

    def precreate(self, sources: Iterable[str], databases: Iterable[str], known: KnownNames) -> None:
        """Series at 0 from the start, so `increase()` sees the first event: each source,
        the main codes, and every critical constraint with each code it may arrive with."""
        keys: list[tuple[str, str, str, str, str]] = []
        databases = list(databases)
        self._reserved = len(databases) * len(ErrorKind)
        for database in databases:
            keys += [(database, code, kind, NONE, NONE) for code, kind in MAIN_CODES]
            for table, name, kind in sorted(known.expected):
                if name in known.critical_constraints:
                    keys += [(database, code, kind, name, table) for code in CODES_BY_KIND.get(kind, ())]
        with self._lock:
            for key in keys:
                if len(self._errors) < self.max_series - self._reserved:
                    self._errors.setdefault(key, 0)
            for source in sources:
                self._received.setdefault(source, 0)
                self._ignored.setdefault(source, 0)
                for reason in REASONS:
                    self._rejected.setdefault((source, reason), 0)
            self.changes += 1

    def errors(self) -> dict[tuple[str, str, str, str, str], int]:
        with self._lock:
            return dict(self._errors)

    # -- prometheus_client Collector protocol ---------------------------------------------------
    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            errors, received = dict(self._errors), dict(self._received)
            ignored, rejected = dict(self._ignored), dict(self._rejected)
        families = self._families()
        errors_family, received_family, rejected_family, ignored_family = families
        for key, value in sorted(errors.items()):
            errors_family.add_metric(list(key), value)
        for source, value in sorted(received.items()):
            received_family.add_metric([source], value)
        for (source, reason), value in sorted(rejected.items()):
            rejected_family.add_metric([source, reason], value)
        for source, value in sorted(ignored.items()):
            ignored_family.add_metric([source], value)
        return families

    @staticmethod
    def _families() -> list[Family]:
        return [spec.family() for spec in (PRISMA_ERRORS, EVENTS_RECEIVED, EVENTS_REJECTED, EVENTS_IGNORED)]

