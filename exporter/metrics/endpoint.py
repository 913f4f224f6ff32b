"""/metrics: the registries, and the poll families rendered once per poll.

Families of a database are built the first time a scrape sees its new result, and the
merged families rendered once per format: a scrape copies bytes instead of formatting
hundreds of samples, the bulk of /metrics (docs/performance.md). What changes between
polls - build info, skipped polls, event counters, process metrics - is rendered per
scrape. A scrape never waits for a poll and never touches a database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.metrics import contract
from exporter.metrics.render import families_for
from exporter.poll import PollResult
from exporter.store import ResultStore

Encoder = Callable[[Collector], bytes]


class MetricsEndpoint:
    """`registry`: everything (prometheus_client's own app serves it for `name[]` filters);
    `body(accept)`: the cached poll part plus the live part, in the format `accept` asks."""

    def __init__(self, store: ResultStore, *collectors: Collector):
        self.registry = CollectorRegistry(auto_describe=False)
        self._live = CollectorRegistry(auto_describe=False)
        for registry in (self.registry, self._live):
            registry.register(_LiveCounters(store))
            for collector in collectors:
                registry.register(collector)
            # The exporter's own memory, CPU and file descriptors: it must be watched too.
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
        self._poll = _PollFamilies(store)
        self.registry.register(self._poll)
        self._lock = threading.Lock()
        self._rendered: dict[str, tuple[object, bytes]] = {}  # content type -> (families, bytes)

    def body(self, accept: str | None) -> tuple[str, bytes]:
        """(content type, body) for a plain GET with this Accept header."""
        encoder, content_type = choose_encoder(accept or "")
        return content_type, self._poll_part(encoder, content_type) + encoder(self._live)

    def _poll_part(self, encoder: Encoder, content_type: str) -> bytes:
        families = self._poll.merged()
        with self._lock:
            cached = self._rendered.get(content_type)
        if cached is not None and cached[0] is families:
            return cached[1]
        # Every format renders as its families plus a terminator (OpenMetrics: "# EOF"),
        # which is what an empty collection renders as; the live part, rendered after this
        # one, carries the body's terminator.
        text = encoder(_Families(families))
        terminator = encoder(_Families([]))
        if terminator and text.endswith(terminator):
            text = text[: -len(terminator)]
        with self._lock:
            self._rendered[content_type] = (families, text)
        return text


class _PollFamilies(Collector):
    """The latest results' families, one family per metric name across databases; each
    database's families built once per result."""

    def __init__(self, store: ResultStore):
        self.store = store
        self._lock = threading.Lock()
        self._per_result: dict[str, tuple[PollResult, list[Metric]]] = {}
        self._merged_from: Mapping[str, PollResult] | None = None
        self._merged: list[Metric] = []

    def merged(self) -> list[Metric]:
        results = self.store.results()
        with self._lock:
            if results is not self._merged_from:
                per_result = {}
                for name, result in results.items():
                    built = self._per_result.get(name)
                    per_result[name] = built if built and built[0] is result else (result, families_for(result))
                self._per_result, self._merged_from = per_result, results
                self._merged = _merge(families for _, families in per_result.values())
            return self._merged

    def collect(self) -> Iterable[Metric]:
        return iter(self.merged())


class _LiveCounters(Collector):
    """What changes between polls: build info and the skipped-poll counts."""

    def __init__(self, store: ResultStore):
        self.store = store

    def collect(self) -> Iterable[Metric]:
        info = contract.BUILD_INFO.family()
        info.add_metric([__version__], 1)
        yield info
        skipped = contract.POLLS_SKIPPED.family()
        for name, count in self.store.skipped().items():
            skipped.add_metric([name], count)
        yield skipped


class _Families(Collector):
    """A fixed list of families, in the shape prometheus_client's encoders render."""

    def __init__(self, families: list[Metric]):
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


def _merge(per_database: Iterable[list[Metric]]) -> list[Metric]:
    """One family per metric name across databases: one HELP/TYPE block each."""
    merged: dict[str, Metric] = {}
    for families in per_database:
        for family in families:
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(family.name, family.documentation, family.type)
            target.samples.extend(family.samples)
    return list(merged.values())
