"""POST /events under abuse, through the exporter's own HTTP server: the rate limit, a
body sent slowly (it must not keep the one body turn), and refusals that never reflect
the request. (100,000 made-up names through HTTP: tests/test_events_counters.py.)"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, make_wsgi_app

from exporter.http import server as server_module
from exporter.config.events import EventsConfig
from exporter.events import EventPipeline, KnownNames
from exporter.http import HttpServer, make_app
from test_events_support import scrape

LINE = b'{"level":50,"err":{"code":"P2002","meta":{"modelName":"Item"}}}\n'
MARKER = "MARKER-7c1e5b"


@contextmanager
def exporter_http(**http):
    events = EventPipeline(EventsConfig.model_validate({"http": http}), ["venzory"], KnownNames())
    server = HttpServer("127.0.0.1", 0, make_app(make_wsgi_app(CollectorRegistry()), lambda: True, events.wsgi_app)).start()
    try:
        yield server.port, events
    finally:
        server.stop()


def post(port: int, body: bytes = LINE, path: str = "/events", headers: dict | None = None,
         method: str = "POST") -> tuple[int, dict, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/x-ndjson",
                                                             **(headers or {})})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


def rejected(events, reason: str) -> float:
    return scrape(events.collector)["venzory_db_events_rejected_total"][(("reason", reason), ("source", "http"))]


def test_requests_over_the_rate_get_429_with_retry_after(monkeypatch):
    with exporter_http(token="tok-123", rate_limit=0.5, rate_burst=3) as (port, events):
        for _ in range(10):  # requests without the token do not use up the shipper's share
            assert post(port, headers={"Authorization": "Bearer wrong"})[0] == 401
        auth = {"Authorization": "Bearer tok-123"}
        assert [post(port, headers=auth)[0] for _ in range(3)] == [200, 200, 200]
        status, headers, body = post(port, headers=auth)
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 2
        assert json.loads(body) == {"error": "too many requests (events.http.rate_limit): retry later"}
        assert rejected(events, "rate_limited") == 1
        assert rejected(events, "unauthorized") == 10


def test_rate_limit_zero_is_off():
    with exporter_http(rate_limit=0) as (port, _):
        assert all(post(port)[0] == 200 for _ in range(30))


def send_slowly(port: int, declared: int, chunks: int, pause: float) -> tuple[float, bytes]:
    """A request whose body arrives a byte at a time (or not at all): -> (seconds until
    the server answered or hung up, what it answered)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        raw.sendall(f"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                    f"Content-Length: {declared}\r\n\r\n".encode())
        started = time.monotonic()
        try:
            for _ in range(chunks):
                raw.sendall(b" ")
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while chunk := raw.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return time.monotonic() - started, answer


def test_a_body_sent_slowly_gets_408_and_frees_the_turn(monkeypatch):
    with exporter_http(body_timeout="1s") as (port, events):
        results = {}
        slow = threading.Thread(target=lambda: results.setdefault("slow", send_slowly(port, 10_000, 40, 0.1)))
        slow.start()
        time.sleep(0.3)  # the slow body holds the turn; this one waits for it
        started = time.monotonic()
        assert post(port)[0] == 200
        waited = time.monotonic() - started
        slow.join(30)
        seconds, answer = results["slow"]
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"events.http.body_timeout" in answer
        assert waited < 3, f"a normal body waited {waited:.1f}s behind a slow one"
        assert rejected(events, "timeout") == 1


def test_a_body_that_never_comes_is_cut_off(monkeypatch):
    monkeypatch.setattr(server_module, "IDLE_TIMEOUT", 1.0)
    with exporter_http() as (port, events):
        seconds, answer = send_slowly(port, 10_000, 1, 0)
        assert seconds < 4, f"a silent client held the body turn for {seconds:.1f}s"
        assert answer.startswith(b"HTTP/1.1 408") and rejected(events, "timeout") == 1


def test_refusals_never_reflect_the_request():
    with exporter_http(token="tok-123", rate_limit=0.1, rate_burst=1, max_body_bytes=1000) as (port, _):
        auth = {"Authorization": "Bearer tok-123"}
        answers = [
            post(port, headers={"Authorization": f"Bearer {MARKER}"}),  # 401
            post(port, method="PUT", path=f"/events?{MARKER}=1"),  # 405
            post(port, headers={**auth, "Content-Encoding": MARKER}, body=MARKER.encode()),  # 415
            post(port, headers={**auth, "Content-Type": f"text/{MARKER}"}, body=MARKER.encode()),  # 429 by now
        ]
    with exporter_http(max_body_bytes=1000) as (port, _):
        answers += [
            post(port, path=f"/events?database={MARKER}"),  # 400
            post(port, body=(MARKER * 100).encode()),  # 413
            post(port, body=f'{{"{MARKER}": [{MARKER}'.encode()),  # 400, nothing readable
            post(port, body=f"{MARKER}\n".encode() * 3, headers={"Content-Type": "application/json"}),
            post(port, path=f"/{MARKER}", method="GET"),  # 404 of the router
        ]
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [400, 400, 400, 401, 404, 405, 413, 415, 429]
    for status, headers, body in answers:
        assert MARKER not in body and MARKER not in json.dumps(headers), (status, headers, body)
