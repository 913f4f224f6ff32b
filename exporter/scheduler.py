"""APScheduler wiring: one interval job per database.

- The first poll of every database starts at once (bounded by `max_concurrent_polls`).
- Later polls follow each database's interval, their phases spread evenly over it so 50
  databases with one interval do not all hit the pool, the CPU and the network together,
  plus a little jitter.
- `max_instances=1`: a database is never polled twice at the same time; a poll due while
  the previous one still runs is skipped and counted, not queued (`coalesce`).
"""

from __future__ import annotations

import logging
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

    def _skipped(self, event: JobEvent) -> None:
        log.warning("poll of %s skipped: the previous poll is still running", event.job_id)
        self._on_skipped(event.job_id)

    def _run(self, poller: Poller) -> None:
        self._on_result(poller.poll())

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
        # Running polls are bounded by their statement timeouts; do not wait for them here,
        # shutdown must stay within a few seconds.
        self._scheduler.shutdown(wait=False)
