"""APScheduler wiring: one interval job per database.

- The first poll of every database starts at once (bounded by `max_concurrent_polls`).
- Later polls follow each database's interval, their phases spread evenly over it so 50
  databases with one interval do not all hit the pool, the CPU and the network together,
  plus a little jitter.
- `max_instances=1`: a database is never polled twice at the same time; a poll due while
  the previous one still runs is skipped and counted, not queued (`coalesce`).
- After `stop()` no result is delivered: a poll broken off by a shutdown or a reload
  would otherwise report its database down.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Callable

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from exporter.poll import Poller

log = logging.getLogger(__name__)


class PollScheduler:
    def __init__(self, pollers: list[Poller], on_result: Callable, on_skipped: Callable[[str], None], max_concurrent: int):
        self.pollers = pollers
        self._on_result = on_result
        self._on_skipped = on_skipped
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_concurrent)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=timezone.utc,
        )
        self._scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self._stopped = False
        self._running = 0
        self._idle = threading.Condition()

    def _skipped(self, event: JobEvent) -> None:
        log.warning("poll of %s skipped: the previous poll is still running", event.job_id)
        self._on_skipped(event.job_id)

    def _run(self, poller: Poller) -> None:
        with self._idle:
            self._running += 1
        try:
            result = poller.poll()
            if not self._stopped:
                self._on_result(result)
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def start(self) -> None:
        now = datetime.now(timezone.utc)
        count = len(self.pollers)
        for i, poller in enumerate(self.pollers):
            interval = poller.database.config.poll_interval
            phase = timedelta(seconds=interval * i / count)
            trigger = IntervalTrigger(
                seconds=interval, start_date=now + phase, jitter=min(interval * 0.05, 5), timezone=timezone.utc
            )
            self._scheduler.add_job(self._run, trigger, args=[poller], id=poller.name, name=f"poll {poller.name}", next_run_time=now)
        self._scheduler.start()

    def stop(self) -> None:
        # Do not wait for running polls here: the caller breaks them off (Poller.close).
        self._stopped = True
        self._scheduler.shutdown(wait=False)

    def wait_idle(self, timeout: float) -> bool:
        """True once no poll is running (within `timeout` seconds)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout=timeout)
