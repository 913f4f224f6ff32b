"""The HTTP server under the attacks of issue 14 (items 2, 3, 4 and 7), each performed
against the exporter's own server on 127.0.0.1: a burst of scrapers, an /events slot held
by a trickled body, refused requests that go quiet, and a basic-auth login flood."""

from __future__ import annotations

import base64
import http.client
import logging
import re
import shutil
import socket
import subprocess
import threading
import time
from contextlib import contextmanager

import bcrypt
import pytest
from prometheus_client import CollectorRegistry, Gauge, make_wsgi_app

from exporter.config.events import EventsConfig
from exporter.config.web import WebSettings
from exporter.events import EventPipeline, KnownNames
from exporter.http import HttpServer, make_app
from exporter.http import server as server_module
from test_events_support import scrape

LINE = b'{"level":50,"err":{"code":"P2002","meta":{"modelName":"Item"}}}\n'


@contextmanager
def exporter_http(web: WebSettings | None = None, **http):
    registry = CollectorRegistry()
    Gauge("venzory_db_test_value", "A value for the test.", registry=registry).set(42)
    events = EventPipeline(EventsConfig.model_validate({"http": http}), ["venzory"], KnownNames())
    server = HttpServer("127.0.0.1", 0, make_app(make_wsgi_app(registry), lambda: True, events.wsgi_app), web,
                        events_authenticate=lambda: events.authenticates).start()
    try:
        yield server.port, events
    finally:
        server.stop()


def get(port: int, path: str = "/metrics", headers: dict | None = None, timeout: float = 30) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def post_events(port: int, body: bytes = LINE, headers: dict | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/events", body=body, headers={"Content-Type": "application/x-ndjson",
                                                                   **(headers or {})})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def rejected(events, reason: str) -> float:
    return scrape(events.collector)["venzory_db_events_rejected_total"][(("reason", reason), ("source", "http"))]


# -- item 2: a burst of scrapers ---------------------------------------------------------------


def test_the_listen_backlog_is_not_the_standard_librarys_5():
    ss = shutil.which("ss") or pytest.skip("ss (iproute2) not installed")
    with exporter_http() as (port, _):
        listing = subprocess.run([ss, "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
    backlog = int(listing.split()[2])  # Send-Q of a listening socket: its backlog
    assert backlog >= 128, listing


def test_fifty_concurrent_scrapers_are_all_answered_without_waiting_for_syn_retries():
    # With a backlog of 5, 50 scrapers overflowed the listen queue: each overflow costs the
    # client a SYN retry (1 s, then 3 s), which is what p99 1 s / max 7.7 s were.
    # (The timed measurement is bench/http_bench.py; this asserts the mechanism.)
    durations: list[float] = []
    failures: list[BaseException] = []
    stop = time.monotonic() + 3

    def scraper() -> None:
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                assert get(port, timeout=10) == 200
            except BaseException as e:  # noqa: BLE001 - collected and asserted below
                failures.append(e)
            durations.append(time.monotonic() - started)

    with exporter_http() as (port, _):
        threads = [threading.Thread(target=scraper) for _ in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert not failures, failures[:3]
    assert len(durations) > 100
    over_a_second = [d for d in durations if d >= 1.0]
    assert len(over_a_second) <= len(durations) // 100, f"{len(over_a_second)} of {len(durations)} scrapes took >= 1 s"


# -- item 3: the /events slot held by a trickled body -------------------------------------------


def trickle(port: int, declared: int, seconds: float, pause: float = 0.25) -> tuple[float, bytes]:
    """POST /events declaring `declared` bytes, then a byte every `pause` s for `seconds`:
    -> (seconds until the server answered or hung up, its answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:
        raw.sendall(f"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                    f"Content-Length: {declared}\r\n\r\n".encode())
        started = time.monotonic()
        raw.setblocking(False)
        answer = b""
        while time.monotonic() - started < seconds:
            try:
                raw.sendall(b" ")
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
            time.sleep(pause)
            try:
                chunk = raw.recv(65536)
                answer += chunk
                if not chunk:
                    break
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
        return time.monotonic() - started, answer


@pytest.mark.parametrize("declared", [9 * 1024 * 1024, 1024 * 1024], ids=["over_the_limit", "within_the_limit"])
def test_a_trickled_body_never_holds_the_events_slot_past_body_timeout(declared):
    with exporter_http(body_timeout="2s") as (port, events):
        result = {}
        attacker = threading.Thread(target=lambda: result.setdefault("slow", trickle(port, declared, 20)))
        attacker.start()
        time.sleep(0.5)
        started = time.monotonic()
        assert post_events(port) == 200  # the legitimate shipper gets its turn
        waited = time.monotonic() - started
        attacker.join(60)
        seconds, answer = result["slow"]
        assert waited < 4, f"a legitimate POST waited {waited:.1f}s behind a trickled body"
        assert seconds < 4 + 5, f"the trickled connection was kept {seconds:.1f}s"  # body_timeout + linger
        status = answer.split(b" ", 2)[1] if answer else b""
        assert status == (b"413" if declared > 8 * 1024 * 1024 else b"408"), answer[:200]
        reason = "body_too_large" if declared > 8 * 1024 * 1024 else "timeout"
        assert rejected(events, reason) == 1


# -- item 4: refused requests that go quiet -----------------------------------------------------


def test_refused_requests_are_counted_and_bounded_in_time_and_threads(caplog):
    quiet = 200
    with caplog.at_level(logging.DEBUG), exporter_http(token="tok-secret-1") as (port, events):
        threads_before = threading.active_count()
        connections = []
        for _ in range(quiet):  # a wrong token, a body announced and never sent
            raw = socket.create_connection(("127.0.0.1", port), timeout=30)
            raw.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
                        b"Content-Length: 1048576\r\n\r\n")
            connections.append(raw)
        started = time.monotonic()
        assert get(port, "/healthz", timeout=10) == 200  # the workers are not all held
        assert time.monotonic() - started < 2
        time.sleep(1)
        assert threading.active_count() <= threads_before + 2, "a thread per refused connection"
        answers = []
        for raw in connections:
            raw.settimeout(15)
            answer = b""
            try:
                while chunk := raw.recv(65536):
                    answer += chunk
            except (ConnectionResetError, TimeoutError):
                pass
            answers.append(answer)
            raw.close()
        assert all(a.startswith(b"HTTP/1.1 401") for a in answers), {a[:40] for a in answers}
        deadline = time.monotonic() + 30
        while rejected(events, "unauthorized") < quiet and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rejected(events, "unauthorized") == quiet  # every refused request is counted
        counters = scrape(events.collector)
        assert counters["venzory_db_events_received_total"][(("source", "http"),)] == quiet
    assert "Traceback" not in caplog.text and "500" not in "".join(a[:12].decode() for a in answers)


def test_a_refused_sender_that_goes_quiet_mid_body_is_cut_off_within_the_deadline(monkeypatch):
    monkeypatch.setattr(server_module, "IDLE_TIMEOUT", 1.0)
    with exporter_http(token="tok-secret-1") as (port, events):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            raw.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
                        b"Content-Length: 1000\r\n\r\n" + b" " * 10)  # small: read after the answer
            started = time.monotonic()
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
            seconds = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 401") and seconds < 5
        assert rejected(events, "unauthorized") == 1
        assert get(port, "/healthz") == 200


# -- item 7: a login flood ----------------------------------------------------------------------


def _basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_the_first_login_of_a_known_user_is_not_starved_by_unknown_ones():
    password = "scraper-password-1"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()
    web = WebSettings(file="web.yml", users=(("prometheus", hashed),))
    stop = threading.Event()

    def guesser(n: int) -> None:
        while not stop.is_set():
            try:
                get(port, headers=_basic(f"guess{n}", "nope"), timeout=60)
            except OSError:
                pass

    with exporter_http(web) as (port, _):
        guessers = [threading.Thread(target=guesser, args=(n,)) for n in range(100)]
        for thread in guessers:
            thread.start()
        try:
            time.sleep(1)  # the flood is on: each guess costs a bcrypt
            started = time.monotonic()
            status = get(port, headers=_basic("prometheus", password), timeout=60)
            waited = time.monotonic() - started
        finally:
            stop.set()
            for thread in guessers:
                thread.join(60)
    assert status == 200
    # One bcrypt of cost 10 is ~50-100 ms here; behind 100 guessers it was 8.7 s.
    assert waited < 2.0, f"the real scraper's first login waited {waited:.1f}s behind 100 guessers"


def test_pipelined_requests_are_all_answered_in_order():
    # issue 14, item 2: the old server dropped the second of two pipelined requests
    with exporter_http() as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                        b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
    assert re.findall(rb"HTTP/1.1 (\d{3}) ", answer) == [b"200", b"404", b"200"], answer
