"""Helpers shared by the events tests (no tests here): a real HTTP server for a WSGI
app, real HTTP requests, and reading the counters the way Prometheus does."""

from __future__ import annotations

import gzip
import http.client
import json
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.http import HttpServer


@contextmanager
def serving(app):
    """`app` on the exporter's own HTTP server at 127.0.0.1:<free port>; yields the port."""
    server = HttpServer("127.0.0.1", 0, app).start()
    try:
        yield server.port
    finally:
        server.stop()


def post(port: int, body: bytes | str, *, path: str = "/events", headers: dict | None = None,
         gzipped: bool = False, method: str = "POST") -> tuple[int, dict]:
    """One real HTTP request; returns (status, JSON answer)."""
    data = body.encode() if isinstance(body, str) else body
    headers = dict(headers or {})
    if gzipped:
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=data if method == "POST" else None, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        return response.status, json.loads(payload) if payload else {}
    finally:
        connection.close()


def scrape(collector) -> dict[str, dict[tuple, float]]:
    """The collector's exposition, parsed: metric name -> {label tuple: value}."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    text = generate_latest(registry).decode()
    metrics: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            metrics.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return metrics


def error_counts(collector, database: str | None = None) -> dict[tuple[str, str, str, str], float]:
    """Non-zero venzory_db_prisma_errors_total series as (code, kind, constraint, model) -> value."""
    counts = {}
    for labels, value in scrape(collector).get("venzory_db_prisma_errors_total", {}).items():
        label = dict(labels)
        if value and (database is None or label["database"] == database):
            key = (label["code"], label["kind"], label["constraint"], label["model"])
            counts[key] = counts.get(key, 0) + value
    return counts
