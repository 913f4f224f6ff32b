"""The typed configuration: what the rest of the program trusts.

Every model forbids unknown keys and is frozen. Cross-field rules (unique names, check
references) are validated here, once, so no other module re-checks config.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from exporter.config.dsn import check_dsn
from exporter.config.events import EventsConfig, validate_events
from exporter.config.migrations import MigrationsConfig
from exporter.config.types import Duration, Identifier, SqlExpression, Strict
from exporter.schema.model import ConstraintKind

Severity = Literal["critical", "warning"]


def _dsn_unless_stand_in(dsn: str, info: ValidationInfo) -> str:
    # check-config offline stands "${VAR}" in for a required variable unset here: that is
    # reported as not checked, not as a DSN libpq cannot read.
    if info.context and dsn in info.context.get("stand_ins", ()):
        return dsn
    return check_dsn(dsn)


class _CheckBase(Strict):
    name: Identifier
    table: str
    category: Identifier
    severity: Severity
    description: str = ""
    # The constraint the hardened schema uses to guard this check, when one exists.
    # Informational (shown by verify); guarding itself is decided from the live catalog.
    constraint: str | None = None
    # A check with its own timeout runs in a query of its own with this statement_timeout
    # (not in its table's shared pass), so it alone fails when it is too slow.
    timeout: Duration | None = None


class RowCheck(_CheckBase):
    """Rows of `table` that break `rule`, with CHECK-constraint semantics: a row violates
    the rule when it evaluates to false (NULL passes, as in PostgreSQL)."""

    kind: Literal["row"]
    rule: SqlExpression


class Reference(Strict):
    table: str
    column: str = "id"


class OrphanCheck(_CheckBase):
    """Rows whose non-null `column` points to no row of `references`."""

    kind: Literal["orphan"]
    column: str
    references: Reference


class DuplicateCheck(_CheckBase):
    """Groups of rows sharing `columns` (rows with a NULL in any of them never clash, as
    in a unique index), optionally restricted by `where` like a partial unique index."""

    kind: Literal["duplicate"]
    columns: Annotated[list[str], Field(min_length=1)]
    where: SqlExpression | None = None


Check = Annotated[RowCheck | OrphanCheck | DuplicateCheck, Field(discriminator="kind")]

# The kinds an expected constraint may have (exclusion constraints are not checked).
EXPECTED_KINDS = (ConstraintKind.UNIQUE, ConstraintKind.CHECK, ConstraintKind.FOREIGN_KEY,
                  ConstraintKind.PRIMARY_KEY, ConstraintKind.INDEX)


def _expected_kind(value: object) -> ConstraintKind:
    if not isinstance(value, str) or value not in EXPECTED_KINDS:
        names = [f"'{kind}'" for kind in EXPECTED_KINDS]
        raise ValueError(f"Input should be {', '.join(names[:-1])} or {names[-1]}")
    return ConstraintKind(value)


class ExpectedConstraint(Strict):
    table: str
    name: str
    kind: Annotated[ConstraintKind, BeforeValidator(_expected_kind)]
    critical: bool = False


class DatabaseConfig(Strict):
    name: Identifier
    dsn: Annotated[str, Field(min_length=1), AfterValidator(_dsn_unless_stand_in)]
    db_schema: str = Field("public", alias="schema")
    poll_interval: Duration = 60.0
    # Guarded checks are answered from the catalog; every this often all tables are
    # read anyway, to catch what a constraint cannot promise (rows loaded with triggers off).
    full_scan_interval: Duration = 86400.0
    connect_timeout: Duration = 5.0
    statement_timeout: Duration = 30.0
    lock_timeout: Duration = 1.0
    # A query of ours that another session (a migration's ALTER TABLE) has waited on this
    # long is cancelled and retried on the next poll: the monitor must never hold up a deploy.
    yield_to_locks_after: Duration = 2.0
    pool_size: Annotated[int, Field(ge=1, le=20)] = 2
    # Names of the checks to run here; all of them when omitted.
    checks: list[Identifier] | None = None
    migrations: MigrationsConfig = MigrationsConfig()

    model_config = Strict.model_config | {"populate_by_name": True}


class ExporterConfig(Strict):
    listen: str = "0.0.0.0:19187"
    log_format: Literal["plain", "json"] = "plain"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    sentry_dsn: str | None = None
    # exporter-toolkit web config (TLS, basic auth, headers) for every endpoint; empty =
    # plain HTTP. `run --web.config.file` overrides it (docs/security.md).
    web_config: str | None = None
    max_concurrent_polls: Annotated[int, Field(ge=1, le=64)] = 4
    # Hard cap on the sessions open at once to all monitored databases together; default
    # 2 x max_concurrent_polls (each poll's session, plus its lock watcher's).
    max_connections: Annotated[int, Field(ge=1, le=1000)] | None = None

    @property
    def connection_limit(self) -> int:
        return self.max_connections or 2 * self.max_concurrent_polls

    @model_validator(mode="after")
    def _a_session_per_poll(self) -> ExporterConfig:
        if self.connection_limit < self.max_concurrent_polls:
            raise ValueError(
                f"max_connections ({self.max_connections}) must be at least max_concurrent_polls "
                f"({self.max_concurrent_polls}): every running poll needs a session"
            )
        return self

    @field_validator("sentry_dsn", "web_config")
    @classmethod
    def _empty_is_off(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_listen(value)
        return value


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class Config(Strict):
    exporter: ExporterConfig = ExporterConfig()
    databases: Annotated[list[DatabaseConfig], Field(min_length=1)]
    checks: list[Check] = []
    constraints: list[ExpectedConstraint] = []
    events: EventsConfig = EventsConfig()

    @model_validator(mode="after")
    def _names_resolve(self) -> Config:
        _unique("databases", [d.name for d in self.databases])
        _unique("checks", [c.name for c in self.checks])
        _unique("constraints", [(c.table, c.name) for c in self.constraints])
        known = {c.name for c in self.checks}
        for i, db in enumerate(self.databases):
            for j, name in enumerate(db.checks or []):
                if name not in known:
                    raise ValueError(f"databases[{i}].checks[{j}]: no check named {name!r}")
        validate_events(self)
        return self

    def checks_for(self, database: DatabaseConfig) -> list[RowCheck | OrphanCheck | DuplicateCheck]:
        if database.checks is None:
            return list(self.checks)
        wanted = set(database.checks)
        return [c for c in self.checks if c.name in wanted]


def _unique(what: str, keys: list[Any]) -> None:
    seen = set()
    for key in keys:
        if key in seen:
            raise ValueError(f"{what}: {key!r} is defined twice")
        seen.add(key)
