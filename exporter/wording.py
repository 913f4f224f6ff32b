"""Counts in sentences: "1 row", "2 rows" - one place for the plural rule of every message."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n noun`, the noun in the plural unless n is 1 (`plural`: irregular forms)."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
