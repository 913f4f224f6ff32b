"""Basic auth (bcrypt, exporter-toolkit's format), the web config's rate limit and
headers: a WSGI middleware in front of every path."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import bcrypt

from exporter.config.web import REALM, WebSettings
from exporter.http.limits import refuse_body
from exporter.http.ratelimit import TokenBucket, retry_after

if TYPE_CHECKING:
    from _typeshed import OptExcInfo


class BasicAuth:
    """`Authorization: Basic` checked against bcrypt hashes.

    bcrypt is slow on purpose (tens of milliseconds at cost 10): a success is remembered
    for `remember` seconds after its last use, so Prometheus scraping every second costs
    one bcrypt, not one per scrape. The cache holds keyed HMACs of the credentials, never
    the passwords.

    bcrypt runs in two lanes, one at a time in each: one for configured user names, one
    for every other name, and at most MAX_WAITING checks wait for a lane (more get 429 at
    once, holding no HTTP worker). A flood of made-up names takes one core at most and
    queues only behind itself: the first login of the real scraper (after a restart, or
    once its success is forgotten) waits for at most one bcrypt, not for the flood.
    (Guesses at a configured name share its lane: the web config's rate_limit bounds
    those.) Each lane costs the same per check, so an answer's time does not tell whether
    a name exists; under a flood, which lane answers 429 does (the price of the lanes).
    """

    MAX_WAITING = 4

    def __init__(self, users: dict[str, str], remember: float = 60.0, max_remembered: int = 100):
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        self._remember, self._max_remembered = remember, max_remembered
        self._key = os.urandom(32)
        self._remembered: dict[bytes, float] = {}  # HMAC of user + password -> expiry (monotonic)
        self._lock = threading.Lock()
        self._known_lane = _Lane(self.MAX_WAITING)
        self._unknown_lane = _Lane(self.MAX_WAITING)
        # An unknown user costs a bcrypt of the same cost too: the time of the answer
        # does not tell which users exist.
        cost = max((int(h[4:6]) for h in self._users.values()), default=10)
        self._decoy = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(cost))

    def check(self, authorization: str) -> bool:
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        # A keyed HMAC: its value cannot be predicted without the key, so looking it up in
        # a dict leaks nothing by its timing; bcrypt.checkpw compares in constant time.
        digest = hmac.new(self._key, user + b"\0" + password, "sha256").digest()
        now = time.monotonic()
        with self._lock:
            if self._remembered.get(digest, 0.0) > now:
                self._remembered[digest] = now + self._remember
                return True
        hashed = self._users.get(user.decode("utf-8", "replace"))
        with (self._known_lane if hashed else self._unknown_lane).turn():
            try:
                matches = bcrypt.checkpw(password, hashed or self._decoy)
            except ValueError:  # over bcrypt's 72 bytes: no hash can match it
                matches = False
        if not (matches and hashed):
            return False
        with self._lock:
            if len(self._remembered) >= self._max_remembered:
                self._remembered = {k: t for k, t in self._remembered.items() if t > now}
                if len(self._remembered) >= self._max_remembered:
                    self._remembered.pop(next(iter(self._remembered)))
            self._remembered[digest] = now + self._remember
        return True


class LoginBusy(Exception):
    """Too many password checks waiting already: answered 429, checked no password."""


class _Lane:
    def __init__(self, max_waiting: int):
        self._running = threading.Lock()
        self._places = threading.BoundedSemaphore(max_waiting + 1)  # + the one running

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        if not self._places.acquire(blocking=False):
            raise LoginBusy()
        try:
            with self._running:
                yield
        finally:
            self._places.release()


def _basic_credentials(authorization: str) -> tuple[bytes, bytes] | None:
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


def protect(app: WSGIApplication, web: WebSettings,
            auth_exempt: Callable[[WSGIEnvironment], bool] = lambda environ: False) -> WSGIApplication:
    """Every request through the rate limit, then basic auth (unless `auth_exempt` says
    the path authenticates on its own); every response gets the configured headers."""
    auth = BasicAuth(dict(web.users)) if web.users else None
    bucket = TokenBucket(*web.rate_limit) if web.rate_limit else None

    def protected(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def with_headers(status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None,
                         /) -> Callable[[bytes], object]:
            return start_response(status, list(headers) + list(web.headers), exc_info)

        refusal = None
        if bucket is not None and (wait := bucket.take()):
            refusal = "429 Too Many Requests", [("Retry-After", retry_after(wait))]
        elif auth is not None and not auth_exempt(environ):
            try:
                if not auth.check(environ.get("HTTP_AUTHORIZATION", "")):
                    refusal = "401 Unauthorized", [("WWW-Authenticate", REALM)]
            except LoginBusy:
                refusal = "429 Too Many Requests", [("Retry-After", "1")]
        if refusal is None:
            return app(environ, with_headers)
        status, headers = refusal
        refuse_body(environ)
        body = (status.split(" ", 1)[1].lower() + "\n").encode()
        with_headers(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                              *headers])
        return [body]

    return protected
