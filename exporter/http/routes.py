"""The exporter's paths: /metrics, /healthz, /readyz, /events, and an index page.

/metrics is prometheus_client's exposition (content negotiation, OpenMetrics, gzip,
`name[]` filtering) over the store's pre-rendered poll families plus the live collectors.
"""

from __future__ import annotations

import gzip
import logging
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import choose_encoder, gzip_accepted

from exporter.metrics import Store

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

INDEX = b"""<html><head><title>venzory-db-exporter</title></head><body>
<h1>venzory-db-exporter</h1>
<ul><li><a href="metrics">metrics</a></li><li><a href="healthz">healthz</a></li>
<li><a href="readyz">readyz</a></li><li>POST /events</li></ul></body></html>
"""


def _text(start_response: Callable, status: str, body: bytes, content_type: str = "text/plain; charset=utf-8"):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def metrics_app(store: Store, live: CollectorRegistry, everything: CollectorRegistry) -> WSGIApp:
    """/metrics: the store's poll families, rendered once per poll, plus what changes
    between polls (`live`: counters, process metrics), rendered per scrape. Anything but a
    plain GET (a `name[]` filter, say) takes prometheus_client's own app over `everything`."""
    library = make_wsgi_app(everything)

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("QUERY_STRING") or environ.get("REQUEST_METHOD") != "GET":
            return library(environ, start_response)
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT"))
        body = store.rendered(encoder, content_type) + encoder(live)
        headers = [("Content-Type", content_type)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            body = gzip.compress(body, compresslevel=1)  # 30 KB: level 1 is 3x faster, nearly as small
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [body]

    return app


def make_app(metrics: WSGIApp, ready: Callable[[], bool], events_app: WSGIApp | None = None) -> WSGIApp:
    metrics_app = metrics

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            return _text(start_response, "200 OK", b"ok\n")
        if path == "/readyz":
            if ready():
                return _text(start_response, "200 OK", b"ready\n")
            return _text(start_response, "503 Service Unavailable", b"not ready: a database has not completed its first poll\n")
        if path == "/events" and events_app is not None:
            return events_app(environ, start_response)
        if path == "/":
            return _text(start_response, "200 OK", INDEX, "text/html; charset=utf-8")
        return _text(start_response, "404 Not Found", b"not found\n")

    return app
