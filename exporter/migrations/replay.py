"""Apply a Prisma migrations folder to a scratch database, the way `prisma migrate deploy` does.

Used to build databases from a `prisma/migrations` folder: by the test suite, by the `demo`
command, and by the shadow-database replay (with `record=False`) that turns a folder into
the expected Schema.

NEVER point this at a monitored database. The exporter only reads the databases it
watches (read-only sessions); it must not run the application's migrations on them. Only
call this with a connection to a database the caller created for the purpose.

What is faithful to `prisma migrate deploy`:
- folders are sub-folders holding a `migration.sql`, applied in name order;
- `_prisma_migrations` is created with Prisma's own columns and types;
- a row (uuid, checksum, started_at, name) is written before a script runs and gets
  `finished_at` and `applied_steps_count = 1` after it succeeded; a failed script leaves
  its row with `finished_at` NULL and the error text in `logs`;
- each `migration.sql` is sent as one multi-statement script (the simple query protocol:
  PostgreSQL runs it as one implicit transaction, so a failed script leaves no changes);
- migrations already applied are skipped, and nothing runs while a failed one is
  recorded (Prisma's P3009);
- the session holds Prisma's advisory lock while it migrates.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from collections.abc import Iterator

import psycopg
from psycopg.pq import TransactionStatus

from exporter.db import one_row
from exporter.migrations.checksum import checksum, read_migration

MIGRATIONS_TABLE = "_prisma_migrations"

# As the schema engine creates it (prisma-engines, PostgreSQL flavour).
CREATE_MIGRATIONS_TABLE = """
CREATE TABLE _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
)
"""

ADVISORY_LOCK_ID = 72707369  # the key `prisma migrate` locks


class MigrationError(RuntimeError):
    """A migration could not be applied (or, like P3009, none may be)."""

    def __init__(self, migration: str, message: str):
        super().__init__(f"{migration}: {message}")
        self.migration = migration
        self.message = message


def migration_names(folder: str | PathLike[str]) -> list[str]:
    """Names of the migrations in `folder`: sub-folders holding a migration.sql, sorted."""
    root = Path(folder)
    return sorted(p.name for p in root.iterdir() if (p / "migration.sql").is_file())


def apply_migrations(
    conn: psycopg.Connection,
    folder: str | PathLike[str],
    *,
    upto: str | None = None,
    record: bool = True,
) -> list[str]:
    """Apply the migrations of `folder` in name order, up to and including `upto`.

    With `record` (the default) the history is kept in `_prisma_migrations` like `prisma
    migrate deploy` keeps it, and migrations already applied there are skipped. Without
    it, every migration is run and nothing is written besides the scripts' own effects.
    Returns the names applied by this call; raises MigrationError when a script fails.
    The connection must not be inside a transaction; it is used in autocommit mode.
    """
    root = Path(folder)
    names = migration_names(root)
    if upto is not None:
        if upto not in names:
            raise ValueError(f"no migration named {upto!r} in {root}")
        names = names[: names.index(upto) + 1]

    applied_now: list[str] = []
    with _autocommit(conn):
        if record:
            conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_ID,))
        try:
            if record:
                names = _pending(conn, names)
            for name in names:
                _apply_one(conn, name, read_migration(root / name / "migration.sql"), record)
                applied_now.append(name)
        finally:
            if record:
                conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_ID,))
    return applied_now


def _pending(conn: psycopg.Connection, names: list[str]) -> list[str]:
    """Create the history table if needed; refuse on a failed migration; drop applied names."""
    exists = one_row(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (MIGRATIONS_TABLE,)))[0]
    if not exists:
        conn.execute(CREATE_MIGRATIONS_TABLE)
        return names
    rows = conn.execute(
        "SELECT migration_name, finished_at IS NOT NULL FROM _prisma_migrations"
        " WHERE rolled_back_at IS NULL ORDER BY started_at"
    ).fetchall()
    failed = [name for name, finished in rows if not finished]
    if failed:
        raise MigrationError(
            failed[0],
            "P3009: a failed migration is recorded in the target database; "
            "new migrations will not be applied until it is resolved",
        )
    applied = {name for name, _ in rows}
    return [n for n in names if n not in applied]


def _apply_one(conn: psycopg.Connection, name: str, script: str, record: bool) -> None:
    row_id = str(uuid.uuid4())
    if record:
        conn.execute(
            "INSERT INTO _prisma_migrations (id, checksum, started_at, migration_name, applied_steps_count)"
            " VALUES (%s, %s, now(), %s, 0)",
            (row_id, checksum(script), name),
        )
    try:
        conn.execute(script)  # no parameters: sent as one multi-statement script
    except psycopg.Error as exc:
        text = f"Database error code: {exc.sqlstate}\n\nDatabase error:\n{exc}"
        if conn.info.transaction_status == TransactionStatus.INERROR:
            # The script opened a transaction of its own (Prisma's enum rewrites are wrapped
            # in BEGIN; ... COMMIT;) and failed inside it: end it, as the engine does.
            conn.execute("ROLLBACK")
        if record:
            conn.execute("UPDATE _prisma_migrations SET logs = %s WHERE id = %s", (text, row_id))
        raise MigrationError(name, f"{exc.sqlstate}: {exc}") from exc
    if record:
        conn.execute(
            "UPDATE _prisma_migrations SET finished_at = now(), applied_steps_count = 1 WHERE id = %s",
            (row_id,),
        )


@contextmanager
def _autocommit(conn: psycopg.Connection) -> Iterator[None]:
    if conn.autocommit:
        yield
        return
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("apply_migrations needs a connection outside any transaction")
    conn.autocommit = True
    try:
        yield
    finally:
        conn.autocommit = False
