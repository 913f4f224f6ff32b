"""Config of a database's backups (the runbook's "verified backup before every migration").

Paths are not checked here: a backup folder may be mounted after the exporter starts, so
the runtime reports a missing folder or an unreadable file on each poll.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from exporter.config.migrations import OptionalPath, OptionalText
from exporter.config.types import Duration, Identifier, Strict


class DumpSource(Strict):
    """Dump files of this database, found by a glob: the runbook's
    `backup_before_migration_*.sql`, or custom (-Fc), tar (-Ft) and directory (-Fd) archives.
    An empty glob (an unset ${VAR:-}) switches the source off."""

    name: Identifier
    glob: OptionalText
    # The newest files of the source that are inspected. A file is inspected once: the
    # answer is kept while its size and modification time stay the same.
    newest_files: Annotated[int, Field(ge=1, le=100)] = 5


class BackupsConfig(Strict):
    dumps: list[DumpSource] = []
    # Continuous archiving: read pg_stat_archiver (last archived WAL, last failure, failures).
    archiver: bool = False
    # pg_restore reads custom, tar and directory archives; default: on PATH, else the
    # newest /usr/lib/postgresql/*/bin/pg_restore. It must be at least the dump's version.
    pg_restore: OptionalPath = None
    # How long one pg_restore may take to read an archive through (it reads every block).
    inspect_timeout: Duration = 600.0

    @field_validator("dumps")
    @classmethod
    def _unique_names(cls, dumps: list[DumpSource]) -> list[DumpSource]:
        names = [d.name for d in dumps]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"dump source {name!r} is defined twice")
        return dumps

    @property
    def sources(self) -> list[DumpSource]:
        """The dump sources switched on (a glob given)."""
        return [d for d in self.dumps if d.glob]

    @property
    def enabled(self) -> bool:
        return bool(self.sources) or self.archiver
