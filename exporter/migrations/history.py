"""Where a database stands in its Prisma migration history.

`read_history` reads `_prisma_migrations` (one SELECT) and the migrations folder, and
`classify` - a pure function of the two - gives every migration name one state, the way
Prisma's schema engine sees it (docs: /work/shared/reference/prisma-facts.md):

- failed: a row with finished_at NULL that was not rolled back. `prisma migrate deploy`
  refuses to run while one exists (P3009), so this state wins over every other.
- missing_from_folder: applied in the database, no folder of that name.
- modified: applied, but migration.sql no longer matches the stored checksum (with
  Prisma's CRLF/LF tolerance).
- applied: applied and unchanged.
- rolled_back: every row of the name carries rolled_back_at (`migrate resolve
  --rolled-back`). Prisma ignores such rows, so deploy applies the folder again: the
  migration is pending again (see `MigrationHistory.pending_names`). With no folder left
  there is nothing to re-apply; it stays rolled_back, not missing_from_folder, because
  deleting an abandoned migration's folder after rolling it back is the normal clean-up.
- pending: a folder with no row.

A name rolled back and then applied again (a rolled-back row plus a finished row) is
applied: the rolled-back row is only an audit trail. Likewise a failed try resolved with
`migrate resolve --applied` (Prisma marks the failed row rolled back).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from collections.abc import Iterable, Mapping

import psycopg
from psycopg import sql

from exporter.db import execute_one
from exporter.migrations.checksum import checksum_matches, read_migration

class MigrationState(StrEnum):
    """Where one migration stands (module docstring)."""

    APPLIED = "applied"
    PENDING = "pending"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    MODIFIED = "modified"
    MISSING_FROM_FOLDER = "missing_from_folder"


# States only a readable folder can tell; unknown while the folder cannot be read.
FOLDER_STATES = (MigrationState.PENDING, MigrationState.MODIFIED, MigrationState.MISSING_FROM_FOLDER)
# States that make a deploy fail or that someone must look at; PENDING too unless
# pending migrations are allowed (verify --allow-pending). In the order they are reported.
PROBLEM_STATES = (MigrationState.FAILED, MigrationState.MODIFIED, MigrationState.MISSING_FROM_FOLDER)

MIGRATION_FILE = "migration.sql"
_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class MigrationRow:
    """One row of `_prisma_migrations`."""

    name: str
    checksum: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    rolled_back_at: datetime | None = None
    logs: str | None = None


@dataclass(frozen=True)
class FolderEntry:
    """One migration folder: its migration.sql text, or why it could not be read."""

    name: str
    sql: str | None
    problem: str | None = None


@dataclass(frozen=True)
class MigrationItem:
    name: str
    state: MigrationState
    finished_at: datetime | None = None  # of the row that counts; None when not applied
    detail: str = ""  # e.g. the first line of a failed row's logs
    in_folder: bool = False  # a readable folder holds this migration


@dataclass(frozen=True)
class Deploy:
    """The migrations of one `prisma migrate deploy`: those finished within a window
    before the last one (deploy applies them back to back)."""

    migrations: tuple[str, ...]  # in the order they finished
    first_finished_at: datetime
    finished_at: datetime

    @property
    def name(self) -> str:
        return self.migrations[-1]


@dataclass(frozen=True)
class MigrationHistory:
    managed: bool  # False: no _prisma_migrations table, the database is not managed by Prisma
    folder_problem: str | None  # why the folder could not be listed (None: it was read)
    items: tuple[MigrationItem, ...]  # sorted by name, as Prisma sorts folders
    last_finished_at: datetime | None  # latest finished_at of a row that was not rolled back
    rows: tuple[MigrationRow, ...] = ()  # _prisma_migrations as read
    folder: tuple[FolderEntry, ...] | None = None  # the folder as read (None: unreadable)

    @property
    def folder_read(self) -> bool:
        return self.folder_problem is None

    @property
    def counts(self) -> dict[MigrationState, int | None]:
        """Migrations per state, all six states present. A state that needs the folder is
        None (unknown, not 0) while the folder cannot be read: 0 would claim "nothing
        pending" when we cannot know."""
        tally = Counter(item.state for item in self.items)
        counts: dict[MigrationState, int | None] = {state: tally[state] for state in MigrationState}
        if not self.folder_read:
            counts.update({state: None for state in FOLDER_STATES})
        return counts

    @property
    def pending_names(self) -> tuple[str, ...]:
        """The migrations `prisma migrate deploy` still has to apply, in its order: pending
        folders, rolled-back migrations whose folder is still there, and a failed one (deploy
        retries it once it is resolved as rolled back) - what the deploy prediction walks."""
        unapplied = (MigrationState.PENDING, MigrationState.ROLLED_BACK, MigrationState.FAILED)
        return tuple(i.name for i in self.items if i.state in unapplied and i.in_folder)

    def last_deploy(self, window: float) -> Deploy | None:
        """The last deploy: the applied migrations finished at most `window` seconds
        before the last one to finish."""
        done = sorted((i.finished_at, i.name) for i in self.items if i.finished_at is not None)
        if not done:
            return None
        last = done[-1][0]
        batch = [(finished, name) for finished, name in done if (last - finished).total_seconds() <= window]
        return Deploy(tuple(name for _, name in batch), batch[0][0], last)

    @property
    def not_applied(self) -> tuple[MigrationItem, ...]:
        """The migrations that are not plainly applied: what is listed one by one."""
        return tuple(i for i in self.items if i.state != MigrationState.APPLIED)

    def by_state(self, state: MigrationState) -> tuple[MigrationItem, ...]:
        return tuple(i for i in self.items if i.state == state)

    def problem_states(self, *, allow_pending: bool = False) -> tuple[MigrationState, ...]:
        """The problem states (PROBLEM_STATES) some migration of this history is in."""
        states = PROBLEM_STATES + (() if allow_pending else (MigrationState.PENDING,))
        counts = self.counts
        return tuple(state for state in states if counts.get(state))

    @property
    def summary(self) -> str:
        """One line for logs and verify."""
        if not self.managed:
            head = "not managed by Prisma Migrate (no _prisma_migrations table)"
        else:
            head = ", ".join(f"{n} {s}" for s, n in self.counts.items() if n)
            head = head or "no migrations"
        if self.folder_problem:
            head += f"; {self.folder_problem}"
        return head


def classify(rows: Iterable[MigrationRow], folder: Iterable[FolderEntry] | None) -> tuple[MigrationItem, ...]:
    """Every migration name in the rows or the folder, with its state (module docstring).

    `folder` None means the folder could not be read: only the states the rows alone
    decide (applied, failed, rolled_back) are given, and no name is called missing.
    """
    rows_by_name: dict[str, list[MigrationRow]] = {}
    for row in rows:
        rows_by_name.setdefault(row.name, []).append(row)
    entries = None if folder is None else {entry.name: entry for entry in folder}
    names = sorted(set(rows_by_name) | set(entries or ()))
    return tuple(_classify_one(name, rows_by_name.get(name, []), entries) for name in names)


def _classify_one(name: str, rows: list[MigrationRow], entries: Mapping[str, FolderEntry] | None) -> MigrationItem:
    entry = entries.get(name) if entries is not None else None
    in_folder = entry is not None
    live = [r for r in rows if r.rolled_back_at is None]
    failed = [r for r in live if r.finished_at is None]
    if failed:
        detail = _failure_detail(failed[-1].logs)
        return MigrationItem(name, MigrationState.FAILED, None, detail, in_folder)
    if live:
        row = max(live, key=lambda r: r.finished_at or _NEVER)  # none is None: none failed
        if entries is None:
            detail = "checksum not verified: folder unreadable"
        elif entry is None:
            return MigrationItem(name, MigrationState.MISSING_FROM_FOLDER, row.finished_at,
                                 "applied, but no folder of this name")
        elif entry.sql is None:
            detail = f"checksum not verified: {entry.problem}"
        elif not checksum_matches(row.checksum, entry.sql):
            return MigrationItem(name, MigrationState.MODIFIED, row.finished_at,
                                 f"{MIGRATION_FILE} changed after it was applied", True)
        else:
            detail = ""
        return MigrationItem(name, MigrationState.APPLIED, row.finished_at, detail, in_folder)
    if rows:  # every row rolled back: Prisma ignores them
        if entries is None:
            detail = "rolled back"
        elif in_folder:
            detail = "rolled back; pending again"
        else:
            detail = "rolled back; folder removed, nothing to re-apply"
        return MigrationItem(name, MigrationState.ROLLED_BACK, None, detail, in_folder)
    return MigrationItem(name, MigrationState.PENDING, None, (entry.problem or "") if entry else "", True)


def _failure_detail(logs: str | None) -> str:
    """The first line of a failed row's logs, plus the database's message when the logs
    have Prisma's layout ("Database error code: N", blank, "Database error:", message)."""
    lines = [line.strip() for line in (logs or "").splitlines() if line.strip()]
    if not lines:
        return "failed, no logs recorded"
    if "Database error:" in lines[1:-1]:
        message = lines[lines.index("Database error:", 1) + 1]
        return f"{lines[0]}: {message}"
    return lines[0]


def read_folder(folder: Path) -> list[FolderEntry]:
    """The migration folders under `folder`, sorted by name. Raises OSError when the folder
    itself cannot be listed; a single unreadable or half-written migration becomes an
    entry with a problem, so one bad file does not hide the rest."""
    entries = []
    for child in sorted(os.scandir(folder), key=lambda e: e.name):
        if not child.is_dir():  # migration_lock.toml, README, ...
            continue
        path = Path(child.path) / MIGRATION_FILE
        try:
            entries.append(FolderEntry(child.name, read_migration(path)))
        except FileNotFoundError:
            entries.append(FolderEntry(child.name, None, f"{MIGRATION_FILE} missing (still being copied?)"))
        except OSError as e:
            entries.append(FolderEntry(child.name, None, f"{MIGRATION_FILE} unreadable: {e.strerror or e}"))
    return entries


_SELECT = """
SELECT migration_name, checksum, started_at, finished_at, rolled_back_at, logs
FROM {schema}._prisma_migrations
ORDER BY started_at, migration_name
"""


def read_rows(conn: psycopg.Connection, schema: str = "public") -> list[MigrationRow] | None:
    """The rows of `_prisma_migrations`, or None when the table does not exist."""
    query = sql.SQL(_SELECT).format(schema=sql.Identifier(schema))
    try:
        # A savepoint when the caller is inside a transaction, so a missing table does
        # not abort it; a plain statement on an autocommit session.
        with conn.transaction():
            return [MigrationRow(*row) for row in execute_one(conn, query)]
    except psycopg.errors.UndefinedTable:
        return None


def read_history(conn: psycopg.Connection, folder: Path | None, schema: str = "public") -> MigrationHistory:
    """The database's migration history against the folder (None: no folder configured).
    Read-only: one SELECT on the database, the folder read from disk."""
    rows = read_rows(conn, schema)
    entries: list[FolderEntry] | None = None
    folder_problem: str | None = "no migrations folder configured"
    if folder is not None:
        try:
            entries, folder_problem = read_folder(folder), None
        except OSError as e:
            folder_problem = f"migrations folder {folder} unreadable: {e.strerror or e}"
    items = classify(rows or [], entries)
    finished = [r.finished_at for r in rows or [] if r.rolled_back_at is None and r.finished_at]
    return MigrationHistory(
        managed=rows is not None,
        folder_problem=folder_problem,
        items=items,
        last_finished_at=max(finished, default=None),
        rows=tuple(rows or ()),
        folder=tuple(entries) if entries is not None else None,
    )


# -- the history as `prisma migrate status` / `deploy` see it --------------------------------


class PrismaStatus(StrEnum):
    """What `prisma migrate status` concludes (its exit code is 1 for all but UP_TO_DATE)."""

    UP_TO_DATE = "up_to_date"
    PENDING = "pending"  # "Following migrations have not yet been applied"
    FAILED = "failed"  # a failed migration is recorded (and nothing is pending or diverged)
    DIVERGED = "diverged"  # "... are different. The last common migration is: X"


@dataclass(frozen=True)
class PrismaView:
    status: PrismaStatus
    last_common: str | None  # for DIVERGED: the last migration both agree on (None: Prisma's `null`)
    not_applied: tuple[str, ...]  # folder migrations with no applied row (deploy applies them)
    not_in_folder: tuple[str, ...]  # applied rows with no folder
    failed: tuple[str, ...]
    baseline_unresolved: bool  # the schema exists, but no migration of the folder is recorded as applied
    commands: tuple[str, ...] = ()  # the `prisma migrate resolve` commands that fix it

    @property
    def deploy_refused(self) -> str:
        """Why `prisma migrate deploy` will not run at all ("" when it will)."""
        if self.failed:
            return (f"P3009: migration {self.failed[0]} is recorded as failed; deploy applies nothing until it is "
                    "resolved")
        return ""


def prisma_view(rows: Iterable[MigrationRow] | None, folder: Iterable[str], *, has_tables: bool) -> PrismaView:
    """Prisma's own reading of the history (prisma-engines' diagnoseMigrationHistory): the
    rows not rolled back, in the order they were started, against the folder's names in
    order; the first position where the names differ is where the histories diverge.
    `has_tables`: the database holds tables of the app (a schema without recorded migrations
    is an unresolved baseline)."""
    folder = sorted(folder)
    live = [r for r in (rows or ()) if r.rolled_back_at is None]
    failed = tuple(dict.fromkeys(r.name for r in live if r.finished_at is None))
    db_names = list(dict.fromkeys(r.name for r in live))
    applied = {r.name for r in live if r.finished_at is not None}
    diverged_at = next((i for i, (a, b) in enumerate(zip(db_names, folder)) if a != b), None)
    known = set(folder)
    not_applied = tuple(n for n in folder if n not in applied and n not in failed)
    not_in_folder = tuple(n for n in db_names if n not in known)
    baseline_unresolved = has_tables and bool(folder) and not (applied & known)
    commands: list[str] = []
    for name in failed:
        commands.append(f"prisma migrate resolve --rolled-back {name}   # after fixing its cause: deploy runs it again")
        commands.append(f"prisma migrate resolve --applied {name}   # if its changes were applied by hand")
    # The order `prisma migrate status` reports in (seen with the real CLI): a history problem
    # (diverged, then migrations not applied) is printed instead of the failed migrations.
    if diverged_at is not None:
        status = PrismaStatus.DIVERGED
    elif not_applied:
        status = PrismaStatus.PENDING
    elif failed:
        status = PrismaStatus.FAILED
    else:
        status = PrismaStatus.UP_TO_DATE
    last_common = folder[diverged_at - 1] if diverged_at else None
    return PrismaView(status, last_common, not_applied, not_in_folder, failed, baseline_unresolved, tuple(commands))


def baseline_commands(already_present: Iterable[str]) -> tuple[str, ...]:
    """`migrate resolve --applied` for each migration whose objects the database already has."""
    return tuple(f"prisma migrate resolve --applied {name}" for name in already_present)
