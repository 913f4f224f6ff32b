"""What a deploy prediction says, as its callers (verify, /metrics, the monitor) read it:
per statement, per migration, for the whole deploy."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    """Of a statement, a migration or the whole deploy."""

    PASSES = "passes"
    FAILS = "fails"
    CANNOT_EVALUATE = "cannot_evaluate"
    NOT_REACHED = "not_reached"  # after the first failure: deploy never runs it
    REFUSED = "refused"  # deploy: a failed migration is recorded (P3009), nothing runs


# Lock modes, as PostgreSQL names them.
ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
SHARE = "SHARE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"
# Weakest first: a DO block reports the strongest lock its statements take.
LOCK_ORDER = ("", ROW_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE, ACCESS_EXCLUSIVE)


@dataclass(frozen=True)
class StatementResult:
    number: int  # 1-based, in the migration
    line: int  # of the statement's first token in migration.sql
    text: str  # the statement, as written (trimmed)
    outcome: Outcome
    table: str = ""  # the table it works on, if any
    reason: str = ""  # why it fails or cannot be evaluated
    sqlstate: str = ""  # the error PostgreSQL will raise, when it fails
    offending_rows: int | None = None  # rows that make it fail (None: not countable)
    inspect_sql: str = ""  # lists the offending rows on today's database, when it can
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_deleted: int = 0
    rows_lost: int = 0  # rows of a dropped table
    values_lost: int = 0  # non-null values of a dropped column
    lock: str = ""  # lock mode taken on `table` ("" for none worth saying)
    rows_scanned: int | None = None  # rows the statement reads (or rewrites) under that lock
    rewrites: bool = False  # the table is rewritten (ALTER TYPE, volatile default)


# What a statement does to the data (fields of StatementResult, labels of venzory_db_deploy_rows).
EFFECTS = ("rows_inserted", "rows_updated", "rows_deleted", "rows_lost", "values_lost")


@dataclass(frozen=True)
class MigrationPrediction:
    name: str
    outcome: Outcome
    statements: tuple[StatementResult, ...] = ()
    reason: str = ""  # for a migration that could not be read or parsed, or is unsafe
    warnings: tuple[str, ...] = ()  # COMMIT, CONCURRENTLY, ...

    @property
    def effects(self) -> dict[str, int]:
        """What the migration does to the data: EFFECTS -> total over its statements."""
        return {effect: sum(getattr(s, effect) for s in self.statements) for effect in EFFECTS}

    @property
    def failure(self) -> StatementResult | None:
        return next((s for s in self.statements if s.outcome == Outcome.FAILS), None)


@dataclass(frozen=True)
class DeployPrediction:
    outcome: Outcome  # PASSES | FAILS | CANNOT_EVALUATE | REFUSED
    migrations: tuple[MigrationPrediction, ...] = ()
    reason: str = ""  # for REFUSED, and for CANNOT_EVALUATE the first thing not evaluated

    @property
    def failing_migration(self) -> MigrationPrediction | None:
        return next((m for m in self.migrations if m.outcome == Outcome.FAILS), None)

    @property
    def failure(self) -> tuple[str, StatementResult] | None:
        m = self.failing_migration
        return (m.name, m.failure) if m and m.failure else None

    def summary(self) -> str:
        """One line: what deploy will do."""
        if self.outcome == Outcome.REFUSED:
            return f"deploy is refused: {self.reason}"
        if not self.migrations:
            return "nothing to deploy"
        failure = self.failure
        if failure:
            name, s = failure
            rows = f", {s.offending_rows} rows" if s.offending_rows else ""
            head = "will fail" if self.outcome == Outcome.FAILS else \
                "will fail unless an earlier unevaluable statement fails first:"
            return f"deploy {head} at {name} statement {s.number} (line {s.line}): {s.reason}{rows}"
        if self.outcome == Outcome.CANNOT_EVALUATE:
            return f"deploy cannot be fully evaluated: {self.reason}"
        totals = {e: sum(m.effects[e] for m in self.migrations) for e in EFFECTS}
        added = f", {totals['rows_inserted']} rows inserted" if totals["rows_inserted"] else ""
        return (f"deploy will pass: {len(self.migrations)} migrations{added}, {totals['rows_updated']} rows updated, "
                f"{totals['rows_deleted']} rows deleted")
