"""Classify a log file (or stdin) once: `venzory-db-exporter ingest --config FILE [FILE|-]`."""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterable
from typing import Any

from exporter.config.events import EventsConfig
from exporter.events.classify import Labels, Resolver
from exporter.events.counters import EventTotals, Tally
from exporter.events.known import KnownNames
from exporter.events.parse import LINE_TOO_LONG, LineParser, Rejected
from exporter.wording import counted

DEFAULT_MAX_LINE_BYTES = EventsConfig().max_line_bytes


@dataclass(frozen=True)
class IngestSummary(EventTotals):
    """What the exporter would count for these lines. str() is the printable report."""

    errors: dict[Labels, int] = field(default_factory=dict)  # (code, kind, constraint, model) -> count
    ignored: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count

    def counts(self) -> dict[tuple[str, str, str, str], int]:
        """(code, kind, constraint, model) -> count, as plain tuples."""
        return {(e.code, e.kind, e.constraint, e.model): n for e, n in self.errors.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.received, "prisma_errors": self.accepted, "ignored": self.ignored,
            "rejected": dict(self.rejected),
            "errors": [{"code": e.code, "kind": e.kind, "constraint": e.constraint, "model": e.model, "count": n}
                       for e, n in self._sorted()],
        }

    def _sorted(self) -> list[tuple[Labels, int]]:
        return sorted(self.errors.items(), key=lambda item: (-item[1], item[0].code, item[0].kind,
                                                             item[0].constraint, item[0].model))

    def __str__(self) -> str:
        rejected = sum(self.rejected.values())
        lines = [f"{counted(self.accepted, 'Prisma error')} in {counted(self.received, 'record')} "
                 f"({self.ignored} ignored, {rejected} rejected)"]
        if self.errors:
            rows = [("count", "code", "kind", "constraint", "model")]
            rows += [(str(n), e.code, e.kind, e.constraint, e.model) for e, n in self._sorted()]
            widths = [max(len(row[i]) for row in rows) for i in range(5)]
            for row in rows:
                cells = [row[0].rjust(widths[0])] + [cell.ljust(w) for cell, w in zip(row[1:], widths[1:])]
                lines.append("  " + "  ".join(cells).rstrip())
        if rejected:
            lines.append("rejected: " + ", ".join(f"{reason} {n}" for reason, n in sorted(self.rejected.items())))
        return "\n".join(lines)


def ingest(lines: Iterable[str | bytes], known: KnownNames,
           max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> IngestSummary:
    """Classify log lines once, as the file follower would (same parser, same labels).

    Text lines are re-encoded as UTF-8; open the file with errors="surrogateescape" so
    that invalid bytes are counted as rejected (invalid_utf8) rather than lost.
    """
    tally = Tally()
    parser = LineParser(tally.add)
    for line in lines:
        raw = line if isinstance(line, bytes) else line.encode("utf-8", "surrogateescape")
        if len(raw) > max_line_bytes:
            parser.flush()
            tally.add(Rejected(LINE_TOO_LONG))
        else:
            parser.feed(raw)
    parser.flush()
    resolver = Resolver(known)
    errors: dict[Labels, int] = {}
    for facts, n in tally.errors.items():
        labels = resolver.classify(facts)
        errors[labels] = errors.get(labels, 0) + n
    return IngestSummary(errors, tally.ignored, dict(tally.rejected))
