"""Config of the Prisma error-event sources (HTTP /events, followed log files).

The defaults mean "HTTP endpoint enabled without a token, no files followed": an
exporter that monitors one database can receive events with no events config at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator

from exporter.config.types import ByteSize, Duration, Identifier, Strict

if TYPE_CHECKING:
    from exporter.config.models import Config


class HttpEventsConfig(Strict):
    """POST /events, where a log shipper (Vector, Fluent Bit, a pino transport) sends lines."""

    enabled: bool = True
    # Bearer token the shipper must send; unset or empty (`${EVENTS_TOKEN:-}`) = no auth.
    token: str | None = None
    # Applies to the decompressed body too, so a gzip bomb stops at this size.
    max_body_bytes: ByteSize = 8 * 1024 * 1024
    # Bodies are read one at a time: one sent slowly must not hold up the others for long.
    # The whole body must arrive within this, else 408.
    body_timeout: Duration = 30.0
    # Authenticated requests accepted per second on average (a token bucket; 0 = no
    # limit), and at once above that rate; more get 429 with Retry-After.
    rate_limit: Annotated[float, Field(ge=0)] = 100.0
    rate_burst: Annotated[int, Field(ge=1)] = 200

    @field_validator("token")
    @classmethod
    def _empty_is_off(cls, value: str | None) -> str | None:
        return value or None


class FileSourceConfig(Strict):
    """JSON-lines log files to follow like `tail -F`; `path` may be a glob."""

    path: Annotated[str, Field(min_length=1)]
    # The `database` label of the events in these files; default: events.database.
    database: Identifier | None = None


class EventsConfig(Strict):
    # The `database` label of events (events carry none); default: the only database.
    database: Identifier | None = None
    http: HttpEventsConfig = HttpEventsConfig()
    # Longest record accepted from any source (a pino line with a stack is a few KiB).
    max_line_bytes: ByteSize = 1024 * 1024
    files: list[FileSourceConfig] = []
    # Where the file followers keep their offsets across restarts; none = no resume.
    state_file: str | None = None
    # Where to start in a file that is already there at startup and has no saved offset.
    # Files that appear later are always read from their beginning.
    start_at: Literal["end", "beginning"] = "end"
    poll_interval: Duration = 0.25
    # How long a rotated-away file is still read after it stops growing (a writer may
    # keep appending to it until it reopens its log), like Fluent Bit's Rotate_Wait.
    rotate_wait: Duration = 5.0
    # Constraint names allowed as label values beyond config.constraints and the
    # expected schema (anything else is counted as constraint="other").
    known_constraints: list[str] = []
    # Hard cap on distinct prisma_errors_total series; past it new label sets fold into
    # code="unknown", constraint="other", model="other".
    max_series: Annotated[int, Field(ge=100, le=1_000_000)] = 10_000

    @field_validator("state_file")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None  # `${EVENTS_STATE_FILE:-}` unset: no state file


def validate_events(config: Config) -> None:
    """Cross-checks between `events` and `databases` (the lead calls this after loading).

    Raises ValueError("events.files[0].database: ...") when an event source names a
    database that is not configured, or when a file source cannot tell its database.
    """
    names = [d.name for d in config.databases]
    events: EventsConfig = config.events
    choices = ", ".join(names)
    if events.database is not None and events.database not in names:
        raise ValueError(f"events.database: no database named {events.database!r} (configured: {choices})")
    default = events.database or (names[0] if len(names) == 1 else None)
    for i, source in enumerate(events.files):
        if source.database is not None and source.database not in names:
            raise ValueError(
                f"events.files[{i}].database: no database named {source.database!r} (configured: {choices})"
            )
        if source.database is None and default is None:
            raise ValueError(
                f"events.files[{i}].database: required when several databases are configured "
                f"and events.database is not set (one of: {choices})"
            )


def default_database(events: EventsConfig, databases: list[str]) -> str | None:
    """The `database` label for sources that name none: events.database, else the only one."""
    if events.database:
        return events.database
    return databases[0] if len(databases) == 1 else None


def file_sources(events: EventsConfig, databases: list[str]) -> list[tuple[str, str]]:
    """(path glob, database) of each file source. validate_events has made sure each one
    has a database; an EventsConfig built without it (not from a Config) raises here."""
    default = default_database(events, databases)
    sources = []
    for i, source in enumerate(events.files):
        database = source.database or default
        if database is None:
            raise ValueError(f"events.files[{i}].database: required when several databases are configured")
        sources.append((source.path, database))
    return sources
