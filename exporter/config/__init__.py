"""Configuration: YAML validated once, at the edge, into frozen typed objects."""

from exporter.config.loader import ConfigError, UnsetVariable, load_config, load_config_offline
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
    "OrphanCheck", "RowCheck", "UnsetVariable", "load_config", "load_config_offline", "parse_listen",
]
