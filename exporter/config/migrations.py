"""Config of a database's Prisma migrations, expected schema and drift.

Every setting is optional and an empty value means "off": the shipped config writes
`dir: ${PRISMA_MIGRATIONS_DIR:-}`, which expands to "" when the variable is unset.
Paths are not checked here: a deploy may still be copying the files, so the runtime
reports a missing or unreadable path on each poll instead of refusing to start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, field_validator, model_validator

from exporter.config.dsn import check_dsn
from exporter.config.types import Duration, Strict


def _empty_is_none(value: object) -> object:
    # "" (an unset ${VAR:-}) and blank strings switch a setting off.
    if isinstance(value, str) and not value.strip():
        return None
    return value


OptionalPath = Annotated[Path | None, BeforeValidator(_empty_is_none)]
OptionalText = Annotated[str | None, BeforeValidator(_empty_is_none)]
OptionalDuration = Annotated[Duration | None, BeforeValidator(_empty_is_none)]


class DriftAcknowledgement(Strict):
    """A known drift item that is reported but does not page: matched on `object`, and on
    `kind` / `source` when given (the values drift items carry, e.g. kind
    "missing_column", source "migrations" or "schema_prisma")."""

    object: Annotated[str, Field(min_length=1)]
    kind: OptionalText = None
    source: OptionalText = None
    reason: Annotated[str, Field(min_length=1)]


class DriftConfig(Strict):
    acknowledge: list[DriftAcknowledgement] = []
    # Per-item drift series are capped so a wholesale drift cannot explode cardinality.
    max_item_series: Annotated[int, Field(ge=0)] = 200


@dataclass(frozen=True)
class MigrationFeatures:
    """Which migration features a database has, derived from its config."""

    history: bool  # _prisma_migrations compared with the folder
    shadow: bool  # expected schema by replaying the folder on the shadow server
    snapshot: bool  # expected schema from a snapshot file
    schema_prisma: bool  # expected schema from schema.prisma
    preflight: bool  # pending migrations checked against live rows (needs a replay)

    @property
    def drift(self) -> bool:
        return self.shadow or self.snapshot or self.schema_prisma


class MigrationsConfig(Strict):
    dir: OptionalPath = None  # the app's prisma/migrations folder
    schema_prisma: OptionalPath = None
    # A server where the exporter may create and drop its own scratch database.
    # Kept out of repr(): it may hold a password.
    shadow_dsn: Annotated[OptionalText, Field(repr=False)] = None
    # An existing scratch database on that server to reset instead of creating one.
    shadow_database: OptionalText = None
    # Expected schema written by `venzory-db-exporter snapshot`: for exporters that may
    # not create databases anywhere.
    snapshot: OptionalPath = None
    # How long a migration may stay pending before alerts should care; informational.
    allow_pending_for: OptionalDuration = None
    drift: DriftConfig = DriftConfig()

    @field_validator("shadow_dsn")
    @classmethod
    def _parseable_dsn(cls, value: str | None) -> str | None:
        return check_dsn(value) if value is not None else None

    @model_validator(mode="after")
    def _one_expected_source(self) -> MigrationsConfig:
        if self.shadow_dsn and self.snapshot:
            raise ValueError(
                "set either shadow_dsn (replay the folder) or snapshot (a file written by "
                "`snapshot`) as the expected schema, not both"
            )
        return self

    @property
    def features(self) -> MigrationFeatures:
        has_dir = self.dir is not None
        return MigrationFeatures(
            history=has_dir,
            shadow=has_dir and self.shadow_dsn is not None,
            snapshot=self.snapshot is not None,
            schema_prisma=self.schema_prisma is not None,
            preflight=has_dir,  # the deploy prediction reads the live database only
        )

    def describe_off(self) -> str:
        """One line for the start-up log and verify: what is off and which key turns it on."""
        on = self.features
        off = [reason for enabled, reason in (
            (on.history, "migration history (migrations.dir is empty)"),
            (on.shadow or on.snapshot, "expected schema from migrations (needs migrations.dir with "
                                       "migrations.shadow_dsn, or migrations.snapshot)"),
            (on.preflight, "deploy prediction (needs migrations.dir)"),
            (on.schema_prisma, "drift against schema.prisma (migrations.schema_prisma is empty)"),
        ) if not enabled]
        # Settings that do nothing on their own usually mean a forgotten variable.
        if self.shadow_dsn and not on.shadow:
            off.append("migrations.shadow_dsn is ignored without migrations.dir")
        if self.shadow_database and not on.shadow:
            off.append("migrations.shadow_database is ignored without shadow replay")
        if not off:
            return "migrations: all features on"
        return "migrations off: " + "; ".join(off)
