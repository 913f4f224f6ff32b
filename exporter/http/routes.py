"""The exporter's paths: /metrics, /healthz, /readyz, /events, and an index page.

/metrics is prometheus_client's exposition (content negotiation, OpenMetrics, gzip,
`name[]` filtering) over the store's pre-rendered poll families plus the live collectors.
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
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


# A rendered /metrics answer is served again for this long while nothing it counts has
# changed (no poll, no event, no skipped poll): a burst of scrapers arriving together (50
# Prometheus servers whose intervals line up) costs one render, not fifty. Only the
# process metrics (CPU seconds, memory) can be this much older than the scrape.
REUSE_SECONDS = 0.25


def metrics_app(store: Store, live: CollectorRegistry, everything: CollectorRegistry,
                changes: Callable[[], object] = lambda: None) -> WSGIApp:
    """/metrics: the store's poll families, rendered once per poll, plus what changes
    between polls (`live`: counters, process metrics), rendered per scrape, or reused for
    REUSE_SECONDS while `changes()` (of the live counters) stays the same. Anything but a
    plain GET (a `name[]` filter, say) takes prometheus_client's own app over `everything`."""
    library = make_wsgi_app(everything)
    # (content type, gzip) -> (rendered at, what it was made of: the poll part and changes(), body)
    recent: dict[tuple[str, bool], tuple[float, tuple, bytes]] = {}
    lock = threading.Lock()

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("QUERY_STRING") or environ.get("REQUEST_METHOD") != "GET":
            return library(environ, start_response)
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT"))
        gzipped = gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", ""))
        polls = store.rendered(encoder, content_type)  # the same bytes object until the next poll
        with lock:  # one render at a time: the others of a burst wait for it and reuse it
            made_of = (polls, changes())
            rendered_at, was_made_of, body = recent.get((content_type, gzipped), (0.0, (b"", None), b""))
            if was_made_of[0] is not polls or was_made_of[1] != made_of[1] \
                    or time.monotonic() - rendered_at > REUSE_SECONDS:
                body = polls + encoder(live)
                if gzipped:
                    body = gzip.compress(body, compresslevel=1)  # 30 KB: level 1 is 3x faster, nearly as small
                recent[(content_type, gzipped)] = (time.monotonic(), made_of, body)
        headers = [("Content-Type", content_type)]
        if gzipped:
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
