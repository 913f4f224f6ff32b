"""Config of a database's Prisma migrations, expected schema and drift."""

from __future__ import annotations

from exporter.config.types import Strict


class MigrationsConfig(Strict):
    """Placeholder until the migrations work lands: the feature is off."""
