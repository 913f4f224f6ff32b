"""What one poll learns about a database's backups: each dump source's files (inspected on
the exporter's machine, outside the database session) and WAL archiving.

`verify --require-backup-within` and the alerts ask the same two questions of it: the
newest complete backup of this database, and the newest one taken before a moment (the
last deploy).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psycopg

from exporter.backups.archiver import Archiver, read_archiver
from exporter.backups.dumps import Dump, DumpInspector, DumpStatus, find_pg_restore, matching_files
from exporter.config.backups import BackupsConfig
from exporter.migrations.history import Deploy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceResult:
    name: str
    glob: str
    files: tuple[Dump, ...] = ()  # the inspected files, newest first
    matched: int = 0  # files the glob matched (only the newest are inspected)

    @property
    def newest_complete(self) -> Dump | None:
        return next((d for d in self.files if d.status == DumpStatus.COMPLETE), None)

    def counts(self) -> dict[DumpStatus, int]:
        counts = {status: 0 for status in DumpStatus}
        for d in self.files:
            counts[d.status] += 1
        return counts

    def describe(self) -> str:
        if not self.matched:
            return f"no file matches {self.glob}"
        found = ", ".join(f"{n} {status}" for status, n in self.counts().items() if n)
        return f"{self.matched} files match {self.glob}; newest inspected: {found}"


@dataclass(frozen=True)
class BackupsResult:
    database: str  # current_database(): what a dump must name
    sources: tuple[SourceResult, ...] = ()
    archiver: Archiver | None = None
    last_deploy: Deploy | None = None  # the deploy a backup should have preceded

    @property
    def before_last_deploy(self) -> tuple[float, Dump | None] | None:
        """(when the last deploy started, the newest complete dump taken before it), or
        None without a deploy. The start is when its first migration finished: Prisma
        records no deploy start, and a dump is taken before the first migration runs."""
        if self.last_deploy is None:
            return None
        start = self.last_deploy.first_finished_at.timestamp()
        return start, self.newest_complete_before(start)

    def complete(self) -> list[Dump]:
        return sorted((d for s in self.sources for d in s.files if d.status == DumpStatus.COMPLETE),
                      key=lambda d: d.taken_at, reverse=True)

    @property
    def newest_complete(self) -> Dump | None:
        return next(iter(self.complete()), None)

    def newest_complete_before(self, moment: float) -> Dump | None:
        """The newest complete dump certainly taken before `moment`."""
        return next((d for d in self.complete() if d.taken_by <= moment), None)

    def missing_backup(self, within: float, now: float | None = None) -> str | None:
        """Why there is no complete backup of this database newer than `within` seconds
        (verify's gate), or None when there is one."""
        now = time.time() if now is None else now
        newest = self.newest_complete
        if newest is not None and now - newest.taken_at <= within:
            return None
        if not self.sources:
            return "no dump source configured (databases[].backups.dumps)"
        found = "; ".join(f"{s.name}: {s.describe()}" for s in self.sources)
        if newest is None:
            return f"no complete backup of database {self.database!r} ({found})"
        return (f"newest complete backup of database {self.database!r} is {_age(now - newest.taken_at)} old "
                f"({newest.path}), older than {_age(within)} ({found})")


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


class BackupsMonitor:
    """One per database; keeps the inspector's per-file answers between polls."""

    def __init__(self, config: BackupsConfig):
        self.config = config
        self.inspector = DumpInspector(find_pg_restore(config.pg_restore), config.inspect_timeout)

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def read_database(self, conn: psycopg.Connection) -> tuple[str, Archiver | None]:
        """What is read inside the poll's session: the database's name, pg_stat_archiver."""
        row = conn.execute("SELECT current_database()").fetchone()
        assert row is not None  # one row, always
        return row[0], read_archiver(conn) if self.config.archiver else None

    def inspect(self, database: str, archiver: Archiver | None, last_deploy: Deploy | None = None) -> BackupsResult:
        """The dump files: read from disk after the session is closed (pg_restore may
        take a while on a large archive, and must not hold a connection meanwhile)."""
        sources: list[SourceResult] = []
        present: set[str] = set()
        for source in self.config.sources:
            if not source.glob:
                continue  # not a source: `sources` has only those with a glob
            matched = matching_files(source.glob)
            present |= {path for path, _ in matched}
            # All of the newest files, not only up to the first complete one: the backup
            # taken before the last deploy may be older than the newest.
            files = [self.inspector.inspect(path, stat, database) for path, stat in matched[:source.newest_files]]
            sources.append(SourceResult(source.name, source.glob, tuple(files), len(matched)))
        self.inspector.forget_missing(present)
        return BackupsResult(database, tuple(sources), archiver, last_deploy)
