"""Repeated wall-clock timing shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def time_runs(fn: Callable[[], T], repeat: int) -> tuple[list[float], T | None]:
    """Run fn `repeat` times: each run's wall time in milliseconds, sorted, and the last
    run's result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times), result
