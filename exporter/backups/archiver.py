"""Continuous archiving, from pg_stat_archiver: one row of cumulative counters that any
role may read (no grant needed), plus the archive_mode setting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

_SELECT = """
SELECT current_setting('archive_mode'), archived_count, last_archived_wal,
       extract(epoch FROM last_archived_time)::float8, failed_count, last_failed_wal,
       extract(epoch FROM last_failed_time)::float8
FROM pg_stat_archiver
"""


@dataclass(frozen=True)
class Archiver:
    mode: str  # archive_mode: off, on, always
    archived: int
    last_archived_wal: str | None
    last_archived_at: float | None
    failed: int
    last_failed_wal: str | None
    last_failed_at: float | None

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def failing(self) -> bool:
        """The last attempt failed: nothing was archived since the last failure."""
        if self.last_failed_at is None:
            return False
        return self.last_archived_at is None or self.last_failed_at > self.last_archived_at

    def as_dict(self) -> dict[str, Any]:
        return {"archive_mode": self.mode, "archived_count": self.archived, "last_archived_wal": self.last_archived_wal,
                "last_archived_at": self.last_archived_at, "failed_count": self.failed,
                "last_failed_wal": self.last_failed_wal, "last_failed_at": self.last_failed_at, "failing": self.failing}


def read_archiver(conn: psycopg.Connection) -> Archiver:
    row = conn.execute(_SELECT).fetchone()
    assert row is not None  # one row, always
    return Archiver(*row)
