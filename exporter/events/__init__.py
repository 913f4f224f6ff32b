"""Prisma error events from the application: ingest, classify, count.

Sources (HTTP POST /events, followed log files, the `ingest` CLI) turn log lines into
`ErrorFacts` (parse.py), classified into (code, kind, constraint, model) labels bounded
by the known names (classify.py, known.py), counted by counters.py. docs/events.md
describes the metrics, the accepted shapes, the HTTP API and the file guarantees.
"""

from exporter.events.classify import ErrorFacts, Labels, Resolver, facts_from_error, facts_from_text
from exporter.events.ingest import IngestSummary, ingest
from exporter.events.known import KnownNames
from exporter.events.pipeline import EventPipeline

__all__ = [
    "ErrorFacts", "EventPipeline", "IngestSummary", "KnownNames", "Labels", "Resolver",
    "facts_from_error", "facts_from_text", "ingest",
]
