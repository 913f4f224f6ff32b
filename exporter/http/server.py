"""The HTTP server: cheroot (CherryPy's WSGI server) with the exporter's bounds.

Why cheroot rather than the standard library's wsgiref: wsgiref speaks HTTP/1.0, has a
listen backlog of 5 (50 concurrent scrapers overflowed it and waited seconds for the
kernel's SYN retries), a thread per connection without a cap, and no keep-alive.
cheroot is maintained, pure Python (no compiler in the image), and gives HTTP/1.1 with
keep-alive (idle connections wait in a selector, not in a thread), a bounded worker pool,
a real backlog and TLS through Python's ssl module, so TLS and client certificates behave
exactly as before. What it lacks we add here, in one place:

- time bounds per request, not per read: the TLS handshake, request line and headers
  must all arrive within HEADER_TIMEOUT, and a body at no less than MIN_BODY_RATE bytes per
  second (plus IDLE_TIMEOUT); an endpoint may narrow that (`limits(environ)`). A client
  trickling a byte at a time cannot hold a worker longer (slow loris);
- the TLS handshake in the worker thread: cheroot does it in its one accepting thread,
  where a silent client would stop every other connection from being accepted;
- HEAD answered like GET without the body, and a `Server` header without a version.
"""

from __future__ import annotations

import io
import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from cheroot import server as cheroot_server
from cheroot import wsgi
from cheroot.makefile import MakeFile, StreamReader
from cheroot.ssl.builtin import BuiltinSSLAdapter

from exporter.config.web import WebSettings
from exporter.http.auth import protect
from exporter.http.limits import LIMITS, Limits

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)

# Seconds for the TLS handshake, request line and headers together.
HEADER_TIMEOUT = 10.0
# Seconds any single read or write may wait, and the base allowance of a body.
IDLE_TIMEOUT = 10.0
# A body must arrive at least this fast (bytes/s) on top of IDLE_TIMEOUT: a 10 MiB body
# gets 10 + 160 s, a 1 KiB one 10 s.
MIN_BODY_RATE = 64 * 1024
# Worker threads: each serves one request at a time (a scrape takes ~1 ms); idle
# keep-alive connections hold none. Connections beyond what the workers and the queue
# take wait in the kernel's backlog; beyond that the kernel refuses them.
THREADS = 16
QUEUED_CONNECTIONS = 64  # accepted, waiting for a worker
BACKLOG = 256  # the kernel's listen queue
KEEP_ALIVE_CONNECTIONS = 100  # idle keep-alive connections kept open (others are closed)
MAX_HEADER_BYTES = 64 * 1024
SERVER_NAME = "venzory-db-exporter"


class _DeadlineSocketIO(socket.SocketIO):
    """Socket reads that wait at most IDLE_TIMEOUT each and never past `deadline`."""

    deadline: float | None = None
    _sock: socket.socket  # socket.SocketIO's own; typeshed leaves it out

    def readinto(self, buffer: WriteableBuffer) -> int | None:
        wait = IDLE_TIMEOUT
        if self.deadline is not None:
            wait = min(wait, self.deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError("timed out")  # cheroot's word for it: a quiet 408 or close
        self._sock.settimeout(wait)
        try:
            return super().readinto(buffer)
        finally:
            self._sock.settimeout(IDLE_TIMEOUT)  # writes share the timeout: never a leftover sliver


class _DeadlineReader(StreamReader):
    raw: _DeadlineSocketIO

    def __init__(self, sock: socket.socket, bufsize: int):
        # StreamReader, with our raw reader in place of the plain socket.SocketIO.
        super(StreamReader, self).__init__(_DeadlineSocketIO(sock, "rb"), bufsize)
        self.bytes_read = 0

    @property
    def deadline(self) -> float | None:
        return self.raw.deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self.raw.deadline = value


class _Request(cheroot_server.HTTPRequest):
    _held = b""  # the header block, sent with the first chunk of the body

    def send_headers(self) -> None:
        """Headers and body in one send, not two: each blocking send gives the GIL away,
        and under a burst getting it back is most of a scrape's time."""
        if self.chunked_write:
            super().send_headers()
            return
        real, self.conn.wfile = self.conn.wfile, io.BytesIO()  # cheroot writes the block in one write
        try:
            super().send_headers()
            self._held = self.conn.wfile.getvalue()
        finally:
            self.conn.wfile = real

    def write(self, chunk: bytes) -> None:
        if self._held and not self.chunked_write:
            chunk, self._held = self._held + chunk, b""
        elif self._held:
            self.conn.wfile.write(self._held)
            self._held = b""
        super().write(chunk)

    def respond(self) -> None:
        super().respond()
        if self._held:  # no body (HEAD, an empty answer)
            self.conn.wfile.write(self._held)
            self._held = b""

    def read_request_headers(self) -> bool:
        parsed: bool = super().read_request_headers()  # type: ignore[no-untyped-call]  # cheroot: untyped
        # Headers read: the body has its own allowance, by its declared size.
        try:
            length = max(0, int(self.inheaders.get(b"Content-Length", 0)))
        except ValueError:
            length = 0
        self.conn.rfile.deadline = time.monotonic() + IDLE_TIMEOUT + length / MIN_BODY_RATE
        return parsed


class _Connection(cheroot_server.HTTPConnection):
    RequestHandlerClass = _Request
    _tls_checked = False
    linger_until: float | None = None  # set by Limits.close_after_response
    rfile: _DeadlineReader
    server: _Server

    def __init__(self, server: _Server, sock: socket.socket, makefile: Any = None):
        super().__init__(server, sock, makefile or MakeFile)
        self.rfile = _DeadlineReader(sock, self.rbufsize)

    def communicate(self) -> bool:
        self.rfile.deadline = time.monotonic() + HEADER_TIMEOUT
        if not self._tls_checked and isinstance(self.socket, ssl.SSLSocket) and not self._handshake():
            return False
        answered: bool = super().communicate()  # type: ignore[no-untyped-call]  # cheroot: untyped
        return answered

    def close(self) -> None:
        if self.linger_until is not None and self.server.lingerer.take(self.socket, self.linger_until):
            self.linger = True  # cheroot leaves the socket alone: the lingerer closes it
        super().close()

    def _handshake(self) -> bool:
        """The TLS handshake, here in the worker thread, bounded by HEADER_TIMEOUT as a
        whole (CPython bounds a handshake by the socket timeout); then client_allowed_sans."""
        web = self.server.web
        assert web is not None  # TLS comes from the web config
        self.socket.settimeout(HEADER_TIMEOUT)
        try:
            self.socket.do_handshake()
        except (OSError, ValueError) as e:  # plain HTTP, a bad or missing client certificate, a timeout
            log.debug("TLS handshake with %s failed: %s", self.remote_addr, e)
            return False
        if not web.client_allowed(self.socket.getpeercert()):
            log.debug("client certificate of %s names none of client_allowed_sans", self.remote_addr)
            return False
        self._tls_checked = True
        self.ssl_env = self.server.ssl_adapter.get_environ(self.socket)
        return True


class _Lingerer:
    """Connections answered before their body was read: half-closed (our answer and FIN
    are on their way), then what the client still sends is read and dropped until it
    stops or its time is up - closing with unread data would reset the connection and
    lose the answer. One thread and a selector for all of them: a refused client holds
    no worker, and at most MAX_LINGERING are kept (others are closed at once)."""

    MAX_LINGERING = 256

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._deadlines: dict[socket.socket, float] = {}
        self._thread: threading.Thread | None = None
        self._stopped = False

    def take(self, sock: socket.socket, until: float) -> bool:
        """False when the connection should just be closed (too many lingering)."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            return False
        with self._lock:
            if self._stopped or len(self._deadlines) >= self.MAX_LINGERING:
                return False
            self._deadlines[sock] = until
            self._selector.register(sock, selectors.EVENT_READ)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="http-linger", daemon=True)
                self._thread.start()
        return True

    def _run(self) -> None:
        while not self._stopped:
            for key, _ in self._selector.select(timeout=0.1):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]  # only sockets are registered
                try:
                    ended = not sock.recv(65536)
                except BlockingIOError:
                    ended = False
                except OSError:
                    ended = True
                if ended:
                    self._close(sock)
            now = time.monotonic()
            with self._lock:
                expired = [sock for sock, until in self._deadlines.items() if until <= now]
            for sock in expired:
                self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            if self._deadlines.pop(sock, None) is None:
                return
            self._selector.unregister(sock)
        try:
            sock.close()
        except OSError:
            pass

    def stop(self) -> None:
        self._stopped = True
        with self._lock:
            socks = list(self._deadlines)
        for sock in socks:
            self._close(sock)


class _LazyTLS(BuiltinSSLAdapter):
    """Wraps an accepted socket without the handshake: _Connection does it in its worker."""

    def __init__(self, context: ssl.SSLContext):  # noqa: D107 - no certificate files: the context is built
        self.context = context

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, str]]:
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), {}

    # cheroot's stub declares get_environ() without the socket its builtin adapter takes.
    def get_environ(self, sock: ssl.SSLSocket) -> dict[str, str]:  # type: ignore[override]
        return {"HTTPS": "on", "SSL_PROTOCOL": sock.version() or ""}


class _Gateway(wsgi.Gateway_10):
    # cheroot's stub says Gateway.get_environ returns None; Gateway_10's returns the environ.
    def get_environ(self) -> WSGIEnvironment:  # type: ignore[override]
        environ: WSGIEnvironment = super().get_environ()  # type: ignore[no-untyped-call]
        environ[LIMITS] = Limits(self.req)
        return environ


class _Server(wsgi.Server):
    web: WebSettings | None = None
    ConnectionClass = _Connection

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.gateway = _Gateway
        self.lingerer = _Lingerer()

    def error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        # Clients that time out, reset or break TLS are routine: debug, no traceback.
        if level >= logging.ERROR:
            log.error("HTTP server: %s", msg, exc_info=traceback)
        else:
            log.debug("HTTP server: %s", msg)


def _head_as_get(app: WSGIApplication) -> WSGIApplication:
    """HEAD: the headers of a GET (its Content-Length included), no body."""

    def app_with_head(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "HEAD":
            return app(environ, start_response)
        body = app({**environ, "REQUEST_METHOD": "GET"}, start_response)
        try:
            for _ in body:
                pass
        finally:
            if hasattr(body, "close"):
                body.close()
        return []

    return app_with_head


class HttpServer:
    """The exporter's HTTP server, running in a background thread. With `web` (the web
    config): TLS, basic auth, headers and rate limit on every path; `events_authenticate`
    tells whether POST /events checks a bearer token of its own, which then stands in for
    basic auth there (one Authorization header cannot carry both).

    Binding happens here, so a port in use is an OSError from the constructor."""

    def __init__(self, host: str, port: int, app: WSGIApplication, web: WebSettings | None = None,
                 events_authenticate: Callable[[], bool] = lambda: False):
        if web is not None:
            app = protect(app, web, lambda environ: environ.get("PATH_INFO") == "/events" and events_authenticate())
        self._server = _Server(
            (host, port), _head_as_get(app), numthreads=THREADS, max=THREADS, server_name=SERVER_NAME,
            request_queue_size=BACKLOG, timeout=IDLE_TIMEOUT, shutdown_timeout=1,
            accepted_queue_size=QUEUED_CONNECTIONS, accepted_queue_timeout=HEADER_TIMEOUT,
        )
        self._server.keep_alive_conn_limit = KEEP_ALIVE_CONNECTIONS
        self._server.max_request_header_size = MAX_HEADER_BYTES
        self._server.software = SERVER_NAME
        self._server.web = web
        if web is not None and web.tls is not None:
            self._server.ssl_adapter = _LazyTLS(web.tls)
        try:
            self._server.prepare()
        except OSError as e:
            raise OSError(e.errno, f"cannot listen on {host}:{port}: {_bind_problem(e)}") from None
        self._thread = threading.Thread(target=self._server.serve, name="http", daemon=True)

    @property
    def port(self) -> int:
        port: int = self._server.bind_addr[1]
        return port

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        self._server.lingerer.stop()


def _bind_problem(error: OSError) -> str:
    text = str(error)
    for known in ("Address already in use", "Permission denied", "Cannot assign requested address"):
        if known in text:
            return known.lower()
    return text

