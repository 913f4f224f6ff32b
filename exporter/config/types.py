"""Reusable validated types for the config models (the query-exporter pattern)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def _parse_duration(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m, 24h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"expected a duration like 30s, 5m, 24h, got {value!r}")
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    return seconds


# Seconds, written in YAML as a number or "500ms", "30s", "5m", "24h", "7d".
Duration = Annotated[float, BeforeValidator(_parse_duration)]

# A label-safe identifier: database names, check names and categories become label values.
Identifier = Annotated[str, BeforeValidator(lambda v: _identifier(v))]


def _identifier(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,99}", value):
        raise ValueError(f"expected a name of letters, digits, '_', '-', '.', got {value!r}")
    return value


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
