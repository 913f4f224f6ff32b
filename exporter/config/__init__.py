"""Configuration: YAML validated once, at the edge, into frozen typed objects."""

from exporter.config.loader import ConfigError, load_config
from exporter.config.models import (
    Check,
    Config,
    DatabaseConfig,
    DuplicateCheck,
    ExpectedConstraint,
    OrphanCheck,
    RowCheck,
    parse_listen,
)

__all__ = [
    "Check", "Config", "ConfigError", "DatabaseConfig", "DuplicateCheck", "ExpectedConstraint",
    "OrphanCheck", "RowCheck", "load_config", "parse_listen",
]
