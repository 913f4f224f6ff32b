"""Config of the watch between polls (the runbook's emergencies) and after a deploy."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from exporter.config.types import Duration, Strict

Fraction = Annotated[float, Field(gt=0, le=1)]


class EmergenciesConfig(Strict):
    """What is compared between two polls, from the catalog only (no table is read)."""

    enabled: bool = True
    # A table whose live-row estimate falls by more than this fraction between two polls ...
    mass_delete_fraction: Fraction = 0.5
    # ... and by at least this many rows has lost them (small tables churn).
    mass_delete_min_rows: Annotated[int, Field(ge=1)] = 100


class DeployWatchConfig(Strict):
    """After a deploy: the mean execution time of the statements writing to the tables the
    deploy changed, before and after it (pg_stat_statements, when installed)."""

    enabled: bool = True
    # Migrations finished within this long before the last one belong to the same deploy.
    batch_window: Duration = 900.0


class WatchConfig(Strict):
    emergencies: EmergenciesConfig = EmergenciesConfig()
    deploy: DeployWatchConfig = DeployWatchConfig()
