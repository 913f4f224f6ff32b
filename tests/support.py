"""Helpers the test modules share: paths, tools, metric parsing, pollers."""

from __future__ import annotations

import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.metrics.contract import METRICS
from exporter.metrics.endpoint import MetricsEndpoint
from exporter.config import Config
from exporter.poll import Poller, PollResult
from exporter.store import ResultStore

REPO = Path(__file__).resolve().parent.parent


def need(tool: str) -> str:
    """The path of an external tool the test needs; skipped (saying which) when missing."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (.ci/run installs it)")
    return path


def get(url: str) -> tuple[int, str]:
    """(status, body) of a real HTTP GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05):
    """The predicate's first true value; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def samples(text: str) -> dict[tuple, float]:
    """{(name, (label, value), ...): value} for every sample of an exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, *sorted(s.labels.items()))] = s.value
    return found


def value(text: str, name: str, **labels) -> float | None:
    return samples(text).get((name, *sorted(labels.items())))


def poll_once(config: Config, *, full_scan: bool | None = None) -> PollResult:
    """One poll of the config's first database."""
    with Poller(config, config.databases[0]) as poller:
        return poller.poll(full_scan=full_scan)


def exposition(*results: PollResult) -> str:
    """What /metrics serves for these results (everything, text format)."""
    store = ResultStore(r.database for r in results)
    for result in results:
        store.put(result)
    return generate_latest(MetricsEndpoint(store).registry).decode()


METRICS_DOC = REPO / "docs" / "metrics.md"
# A row of a metric table in docs/metrics.md: | `name` | type | label, label | meaning |
_DOC_ROW = re.compile(r"^\| `(venzory_db_[a-z_]+)` \| (\w+) \| ([a-z_, ]*) \|", re.MULTILINE)


def documented_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """docs/metrics.md's tables: exposed name -> (type, label names)."""
    rows = _DOC_ROW.findall(METRICS_DOC.read_text(encoding="utf-8"))
    return {name: (kind, tuple(label.strip() for label in labels.split(",") if label.strip()))
            for name, kind, labels in rows}


def declared_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The declaration (exporter.metrics.contract), in the shape of `documented_metrics`."""
    return {spec.exposed_name: (str(spec.type), spec.labels) for spec in METRICS}


# The only venzory_db_ metric names alerts and dashboards may query.
CONTRACT_METRICS = frozenset(declared_metrics())
# Those of them with a `database` label (a dashboard query must filter them by it).
DATABASE_METRICS = frozenset(name for name, (_, labels) in declared_metrics().items() if "database" in labels)
