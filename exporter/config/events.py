"""Config of the Prisma error-event sources (HTTP /events, followed log files)."""

from __future__ import annotations

from exporter.config.types import Strict


class EventsConfig(Strict):
    """Placeholder until the events sources land: no source enabled."""
