"""A token bucket: requests per second on average, with bursts up to a bound."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` requests per second on average, `burst` at once. Thread-safe and cheap: a
    refused request costs a lock and a subtraction, nothing is read or parsed."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0 when the request may go ahead (a token was taken), else the seconds until a
        token will be there (for Retry-After)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1 (clients read 0 as "at once")."""
    return str(max(1, math.ceil(seconds)))
