"""The exporter's paths: /metrics, /healthz, /readyz, /events, and an index page.

/metrics is prometheus_client's exposition (content negotiation, OpenMetrics, gzip,
`name[]` filtering) over the metrics endpoint (exporter.metrics.endpoint).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import gzip_accepted

from exporter.metrics.endpoint import MetricsEndpoint

INDEX = b"""<html><head><title>venzory-db-exporter</title></head><body>
<h1>venzory-db-exporter</h1>
<ul><li><a href="metrics">metrics</a></li><li><a href="healthz">healthz</a></li>
<li><a href="readyz">readyz</a></li><li>POST /events</li></ul></body></html>
"""


def _text(start_response: StartResponse, status: str, body: bytes,
          content_type: str = "text/plain; charset=utf-8") -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def metrics_app(endpoint: MetricsEndpoint) -> WSGIApplication:
    """/metrics: the endpoint's body (poll families rendered once per poll, the rest per
    scrape or reused briefly while unchanged). Anything but a plain GET (a `name[]`
    filter, say) takes prometheus_client's own app over the endpoint's registry."""
    library = make_wsgi_app(endpoint.registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("QUERY_STRING") or environ.get("REQUEST_METHOD") != "GET":
            answer: Iterable[bytes] = library(environ, start_response)  # prometheus_client is untyped here
            return answer
        gzipped = gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", ""))
        content_type, body = endpoint.body(environ.get("HTTP_ACCEPT"), gzipped)
        headers = [("Content-Type", content_type)]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [body]

    return app


def make_app(metrics: WSGIApplication, ready: Callable[[], bool],
             events_app: WSGIApplication | None = None) -> WSGIApplication:
    metrics_app = metrics

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            return _text(start_response, "200 OK", b"ok\n")
        if path == "/readyz":
            if ready():
                return _text(start_response, "200 OK", b"ready\n")
            return _text(start_response, "503 Service Unavailable",
                         b"not ready: a database has not completed its first poll\n")
        if path == "/events" and events_app is not None:
            return events_app(environ, start_response)
        if path == "/":
            return _text(start_response, "200 OK", INDEX, "text/html; charset=utf-8")
        return _text(start_response, "404 Not Found", b"not found\n")

    return app
