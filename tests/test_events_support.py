"""Helpers shared by the events tests (no tests here): a real HTTP server for a WSGI
app, real HTTP requests, and reading the counters the way Prometheus does."""

from __future__ import annotations

import gzip
import http.client
import json
import threading
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextmanager
def serving(app):
    """`app` on a real threaded HTTP server at 127.0.0.1:<free port>; yields the port."""
    server = make_server("127.0.0.1", 0, app, _ThreadingWSGIServer, _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


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
