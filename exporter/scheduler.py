"""APScheduler wiring: per database, a first poll at once and an interval job.

- The first poll of every database starts at once (bounded by `max_concurrent_polls`).
- Later polls follow each database's interval, their phases spread evenly over it so 50
  databases with one interval do not all hit the pool, the CPU and the network together,
  plus a little jitter. (An interval job counts from its previous run, so the first poll
  is a job of its own: started with the interval job, it would pin every phase to "now".)
- A database is never polled twice at the same time: a poll due while the previous one
  still runs is skipped and counted, not queued.
- After `stop()` no result is delivered: a poll broken off by a shutdown or a reload
  would otherwise report its database down.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, UTC
from collections.abc import Callable

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from exporter.poll import Poller, PollResult

log = logging.getLogger(__name__)

_FIRST = "first:"  # job id prefix of a database's first poll


class PollScheduler:
    def __init__(self, pollers: list[Poller], on_result: Callable[[PollResult], None],
                 on_skipped: Callable[[str], None], max_concurrent: int):
        self.pollers = pollers
        self._on_result = on_result
        self._on_skipped = on_skipped
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_concurrent)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        self._scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self._stopped = False
        self._busy: dict[str, threading.Lock] = {}
        self._running = 0
        self._idle = threading.Condition()

    def _skipped(self, event: JobEvent) -> None:
        self._skip(event.job_id.removeprefix(_FIRST))

    def _skip(self, database: str) -> None:
        log.warning("poll of %s skipped: the previous poll is still running", database)
        self._on_skipped(database)

    def _run(self, poller: Poller) -> None:
        busy = self._busy.setdefault(poller.name, threading.Lock())
        if not busy.acquire(blocking=False):  # the first poll and the interval job meet
            self._skip(poller.name)
            return
        try:
            self._run_one(poller)
        finally:
            busy.release()

    def _run_one(self, poller: Poller) -> None:
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
        now = datetime.now(UTC)
        count = len(self.pollers)
        for i, poller in enumerate(self.pollers):
            interval = poller.database.config.poll_interval
            # Database i of n runs at phase i/n of the interval, from the second poll on.
            phase = timedelta(seconds=interval * (1 + i / count))
            trigger = IntervalTrigger(
                seconds=interval, start_date=now + phase, jitter=min(interval * 0.05, 5), timezone=UTC
            )
            self._scheduler.add_job(self._run, trigger, args=[poller], id=poller.name, name=f"poll {poller.name}")
            self._scheduler.add_job(self._run, DateTrigger(now), args=[poller], id=_FIRST + poller.name,
                                    name=f"first poll {poller.name}")
        self._scheduler.start()

    def stop(self) -> None:
        # Do not wait for running polls here: the caller breaks them off (Poller.close).
        self._stopped = True
        if self._scheduler.running:  # a daemon stopped before it started has nothing to shut down
            self._scheduler.shutdown(wait=False)

    def wait_idle(self, timeout: float) -> bool:
        """True once no poll is running (within `timeout` seconds)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout=timeout)
