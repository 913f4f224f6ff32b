"""HTTP: /metrics, /healthz, /readyz, /events, served by a threaded WSGI server.

The routing is a WSGI app; /metrics is prometheus_client's own WSGI app (content
negotiation, OpenMetrics, gzip, `name[]` filtering), the server is the standard
library's threaded wsgiref server - no protocol code of ours.
"""

from __future__ import annotations

import logging
import threading
from socketserver import ThreadingMixIn
from typing import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

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


def make_app(registry: CollectorRegistry, ready: Callable[[], bool], events_app: WSGIApp | None = None) -> WSGIApp:
    metrics_app = make_wsgi_app(registry)

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


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)


class HttpServer:
    """The exporter's HTTP server, running in a background thread."""

    def __init__(self, host: str, port: int, app: WSGIApp):
        self._server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> "HttpServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
