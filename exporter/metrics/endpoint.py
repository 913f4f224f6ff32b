"""/metrics: the registries, and the poll families rendered once per poll.

Families of a database are built once per result, and the merged families rendered once per
format, on the poll thread right after the result is stored (`prepare`): a scrape copies bytes instead of formatting
hundreds of samples, the bulk of /metrics (docs/performance.md). What changes between
polls is rendered per scrape: the event counters (up to `events.max_series` series) only
when an event changed them, build info, skipped polls and process metrics every time; the
whole answer is reused for REUSE_SECONDS while none of it has changed. A scrape never waits
for a poll and never touches a database.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, runtime_checkable

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

# A rendered /metrics answer is served again for this long while nothing it counts has
# changed (no poll, no event, no skipped poll): a burst of scrapers arriving together (50
# Prometheus servers whose intervals line up) costs one render, not fifty. Only the
# process metrics (CPU seconds, memory) can be this much older than the scrape.
REUSE_SECONDS = 0.25

# What Prometheus asks for first; the plain text format is prepared as well.
PREPARED_FORMAT = "application/openmetrics-text; version=1.0.0"


@runtime_checkable
class Changing(Protocol):
    """A collector whose `changes` counts every change of what it collects."""

    changes: int


class MetricsEndpoint:
    """`registry`: everything (prometheus_client's own app serves it for `name[]` filters);
    `body(accept, gzipped)`: the cached poll part plus the live part, in the format
    `accept` asks. Collectors that are `Changing` (the event counters) say when a rendered
    answer is stale; the others (process metrics) may be REUSE_SECONDS old."""

    def __init__(self, store: ResultStore, *collectors: Collector):
        self._store = store
        self._changing = [c for c in collectors if isinstance(c, Changing)]
        self.registry = CollectorRegistry(auto_describe=False)
        self._live = CollectorRegistry(auto_describe=False)  # small: rendered per scrape
        self._counted = CollectorRegistry(auto_describe=False)  # large (10,000 event series): per change
        for registry in (self.registry, self._live):
            registry.register(_LiveCounters(store))
            # The exporter's own memory, CPU and file descriptors: it must be watched too.
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
        for collector in collectors:
            self.registry.register(collector)
            (self._counted if collector in self._changing else self._live).register(collector)
        self._poll = _PollFamilies(store)
        self.registry.register(self._poll)
        self._lock = threading.Lock()
        self._rendered: dict[str, tuple[object, bytes]] = {}  # content type -> (families, bytes)
        self._counted_rendered: dict[str, tuple[tuple[int, ...], bytes]] = {}  # -> (changes, bytes)
        # (content type, gzip) -> (rendered at, its poll part, the changes it saw, body). One
        # render at a time: the other scrapes of a burst wait for it and reuse it.
        self._recent: dict[tuple[str, bool], tuple[float, bytes, tuple[int, ...], bytes]] = {}
        self._render_lock = threading.Lock()

    def prepare(self) -> None:
        """Build and render the poll part for the formats Prometheus asks for (OpenMetrics
        and text 0.0.4), called after each stored result: that work belongs to the poll,
        not to the first scrape after it."""
        for accept in (PREPARED_FORMAT, ""):
            self._poll_part(*choose_encoder(accept))

    def body(self, accept: str | None, gzipped: bool = False) -> tuple[str, bytes]:
        """(content type, body) for a plain GET with this Accept header, gzip-compressed
        when `gzipped`."""
        encoder, content_type = choose_encoder(accept or "")
        polls = self._poll_part(encoder, content_type)  # the same bytes object until the next poll
        with self._render_lock:
            changes = (self._store.changes, *(c.changes for c in self._changing))
            recent = self._recent.get((content_type, gzipped))
            if recent is not None and recent[1] is polls and recent[2] == changes \
                    and time.monotonic() - recent[0] <= REUSE_SECONDS:
                return content_type, recent[3]
            body = polls + self._counted_part(encoder, content_type, changes[1:]) + encoder(self._live)
            if gzipped:
                body = gzip.compress(body, compresslevel=1)  # 30 KB: level 1 is 3x faster, nearly as small
            self._recent[(content_type, gzipped)] = (time.monotonic(), polls, changes, body)
        return content_type, body

    def _poll_part(self, encoder: Encoder, content_type: str) -> bytes:
        families = self._poll.merged()
        with self._lock:
            cached = self._rendered.get(content_type)
        if cached is not None and cached[0] is families:
            return cached[1]
        text = _unterminated(encoder, _Families(families))
        with self._lock:
            self._rendered[content_type] = (families, text)
        return text

    def _counted_part(self, encoder: Encoder, content_type: str, changes: tuple[int, ...]) -> bytes:
        """The `Changing` collectors, rendered again only after they changed (called under
        the render lock): 10,000 event series cost a render per event batch, not per scrape."""
        cached = self._counted_rendered.get(content_type)
        if cached is not None and cached[0] == changes:
            return cached[1]
        text = _unterminated(encoder, self._counted)
        self._counted_rendered[content_type] = (changes, text)
        return text


def _unterminated(encoder: Encoder, collector: Collector) -> bytes:
    """`collector` rendered without the format's terminator (OpenMetrics: "# EOF"), which
    is what an empty collection renders as: the small live part, rendered last, carries the
    body's terminator."""
    text = encoder(collector)
    terminator = encoder(_Families([]))
    return text[: -len(terminator)] if terminator and text.endswith(terminator) else text


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
