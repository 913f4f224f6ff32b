"""The whole forecast of a database: its migrations history as Prisma sees it (`prisma
migrate status`), then the deploy of what is not applied, and the commands that fix the
history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pglast.parser import ParseError

from exporter.migrations.deploy.evaluator import Evaluator, Known, Query, Unknown, no_known
from exporter.migrations.deploy.parsing import split_statements
from exporter.migrations.deploy.results import DeployPrediction, Outcome
from exporter.migrations.deploy.state import initial_state
from exporter.migrations.deploy.walk import predict_deploy, run
from exporter.migrations.history import (
    FolderEntry, MigrationRow, PrismaStatus, PrismaView, baseline_commands, prisma_view,
)
from exporter.schema.model import Schema


@dataclass(frozen=True)
class Forecast:
    view: PrismaView
    deploy: DeployPrediction
    commands: tuple[str, ...]  # `prisma migrate resolve` commands that fix the history

    def problems(self) -> list[str]:
        """One line per thing that makes verify fail."""
        found = []
        # A failure after an unevaluable statement counts too: deploy fails there unless that
        # statement fails first (or happens to fix the rows).
        if self.deploy.outcome in (Outcome.FAILS, Outcome.REFUSED) or self.deploy.failure:
            found.append(self.deploy.summary())
        if self.view.status == PrismaStatus.DIVERGED:
            found.append(f"history diverged from the folder (last common migration: {self.view.last_common or 'null'})")
        if self.view.baseline_unresolved:
            found.append("baseline not resolved: the schema exists but no migration of the folder is recorded")
        return found


def forecast(
    rows: Sequence[MigrationRow] | None, folder: Sequence[FolderEntry], live: Schema, query: Query,
    *, schema: str = "public", known: Known = no_known,
) -> Forecast:
    """`prisma migrate status` and `deploy` as they will go on this database. `rows`: its
    `_prisma_migrations` (None: no such table); `folder`: the migrations folder as read."""
    has_tables = any(name != "_prisma_migrations" for name in live.tables)
    view = prisma_view(rows, [e.name for e in folder], has_tables=has_tables)
    refused = view.deploy_refused
    if rows is None and has_tables:
        refused = ("P3005: the database schema is not empty and has no _prisma_migrations table: "
                   "baseline it (prisma migrate resolve --applied <baseline>) before deploying")
    texts = {e.name: e.sql for e in folder}
    scripts = [(name, texts[name]) for name in view.not_applied]
    prediction = predict_deploy(scripts, live, query, schema=schema, refused=refused, known=known)
    commands = view.commands
    if view.baseline_unresolved:
        commands += baseline_commands(_already_present(scripts, live, schema))
    return Forecast(view, prediction, commands)


def _already_present(scripts: Sequence[tuple[str, str | None]], live: Schema, schema: str) -> list[str]:
    """The leading migrations whose first statement creates something the database already
    has: a baseline (or its successors) applied some other way, to be marked applied."""
    present = []
    for name, text in scripts:
        try:
            first = split_statements(text or "")[:1]
        except ParseError:
            break
        if not first:
            break
        result = run(Evaluator(initial_state(live, schema), _no_query), first[0])
        if result.outcome != Outcome.FAILS or result.sqlstate not in ("42710", "42P07", "42701"):
            break
        present.append(name)
    return present


def _no_query(sql: str) -> tuple[Any, ...]:
    raise Unknown("rows are not read for this")
