"""HTTP: /metrics, /healthz, /readyz, /events, served by a threaded WSGI server.

The routing is a WSGI app; /metrics is prometheus_client's own WSGI app (content
negotiation, OpenMetrics, gzip, `name[]` filtering), the server is the standard
library's threaded wsgiref server - no protocol code of ours. TLS is Python's ssl
module; basic auth, headers and the rate limit of the web config are a WSGI
middleware (exporter.webconfig).

Every connection has a thread, so every connection is bounded in time: the TLS
handshake and the request line and headers must arrive within HEADER_TIMEOUT, and every
later read or write waits at most IDLE_TIMEOUT. A client that never finishes its request
(slow loris) loses its connection instead of holding a thread forever.
"""

from __future__ import annotations

import gzip
import io
import logging
import socket
import sys
import threading
import time
from socketserver import ThreadingMixIn
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import gzip_accepted

from exporter.metrics.endpoint import MetricsEndpoint
from exporter.webconfig import WebSettings, protect

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


def metrics_app(endpoint: MetricsEndpoint) -> WSGIApp:
    """/metrics: the endpoint's body (poll families rendered once per poll, the rest per
    scrape). Anything but a plain GET (a `name[]` filter, say) takes prometheus_client's
    own app over the endpoint's registry."""
    library = make_wsgi_app(endpoint.registry)

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("QUERY_STRING") or environ.get("REQUEST_METHOD") != "GET":
            return library(environ, start_response)
        content_type, body = endpoint.body(environ.get("HTTP_ACCEPT"))
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
            return _text(start_response, "503 Service Unavailable",
                         b"not ready: a database has not completed its first poll\n")
        if path == "/events" and events_app is not None:
            return events_app(environ, start_response)
        if path == "/":
            return _text(start_response, "200 OK", INDEX, "text/html; charset=utf-8")
        return _text(start_response, "404 Not Found", b"not found\n")

    return app


# Seconds for the TLS handshake, and again for the request line and headers, as a whole.
HEADER_TIMEOUT = 10.0
# Seconds any single read or write may wait after that (the body, the response).
IDLE_TIMEOUT = 10.0


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    web: WebSettings | None = None

    def finish_request(self, request: socket.socket, client_address) -> None:
        # Runs in the connection's own thread: a slow handshake holds up no one else.
        if self.web is None or self.web.tls is None:
            super().finish_request(request, client_address)
            return
        # CPython bounds the whole handshake by the socket timeout, not each read of it.
        request.settimeout(HEADER_TIMEOUT)
        try:
            connection = self.web.tls.wrap_socket(request, server_side=True)
        except (OSError, ValueError) as e:  # plain HTTP, a bad or missing client certificate, a timeout
            log.debug("TLS handshake with %s failed: %s", client_address[0], e)
            return
        try:
            if self.web.client_allowed(connection.getpeercert()):
                super().finish_request(connection, client_address)
            else:
                log.debug("client certificate of %s names none of client_allowed_sans", client_address[0])
        finally:
            connection.close()

    def handle_error(self, request, client_address) -> None:
        # A client that timed out, reset or broke TLS is routine, not a traceback on stderr.
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.debug("connection from %s ended: %s", client_address[0], error)
        else:
            log.error("error serving %s", client_address[0], exc_info=True)


class _DeadlineReader(io.RawIOBase):
    """Reads from the socket, each one waiting at most IDLE_TIMEOUT and none past
    `deadline` (while set): the request line and headers arrive in time or not at all."""

    def __init__(self, connection: socket.socket, deadline: float | None):
        self._connection, self.deadline = connection, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        wait = IDLE_TIMEOUT
        if self.deadline is not None:
            wait = min(wait, self.deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError("the request line and headers took too long")
        self._connection.settimeout(wait)
        return self._connection.recv_into(buffer)


class _ErrorLog(io.StringIO):
    """Where wsgiref prints an application's traceback: into our log (formatted, secrets
    redacted) rather than onto bare stderr."""

    def flush(self) -> None:
        text = self.getvalue().rstrip()
        if text:
            log.error("error in the WSGI app: %s", text)
        self.seek(0)
        self.truncate()


class _QuietHandler(WSGIRequestHandler):
    timeout = IDLE_TIMEOUT  # socketserver applies it to the connection: every write too

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the socket stays open; reads go through the deadline instead
        self._reader = _DeadlineReader(self.connection, time.monotonic() + HEADER_TIMEOUT)
        self.rfile = io.BufferedReader(self._reader)

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        # Headers read: the body is read with IDLE_TIMEOUT per read (/events bounds the whole).
        self._reader.deadline = None
        self.connection.settimeout(IDLE_TIMEOUT)
        return parsed

    def get_stderr(self) -> io.StringIO:
        return _ErrorLog()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)


class HttpServer:
    """The exporter's HTTP server, running in a background thread. With `web` (the web
    config): TLS, basic auth, headers and rate limit on every path; `events_authenticate`
    tells whether POST /events checks a bearer token of its own, which then stands in for
    basic auth there (one Authorization header cannot carry both)."""

    def __init__(self, host: str, port: int, app: WSGIApp, web: WebSettings | None = None,
                 events_authenticate: Callable[[], bool] = lambda: False):
        if web is not None:
            app = protect(app, web, lambda environ: environ.get("PATH_INFO") == "/events" and events_authenticate())
        self._server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
        self._server.web = web
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
