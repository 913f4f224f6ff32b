"""Database access: one bounded, read-only connection pool per monitored database.

Every session the exporter opens on a monitored database is:
- read-only (`default_transaction_read_only`): a write attempted by any query fails in
  the database itself, not by convention in our code;
- autocommit: each statement is its own short transaction, so no snapshot is held across
  a poll (vacuum is never held back) and no lock outlives the statement that took it;
- bounded by `statement_timeout` and `lock_timeout`: a query never waits long behind a
  migration's lock (the waiting itself would queue the app behind the migration);
- named `application_name = venzory-db-exporter`, so a DBA sees who it is.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from exporter.config import DatabaseConfig

APPLICATION_NAME = "venzory-db-exporter"

log = logging.getLogger(__name__)


class DatabaseDown(Exception):
    """The database could not be reached (connect, pool or connection-level failure)."""


def redact_dsn(dsn: str) -> str:
    """The DSN as it may be shown anywhere: password replaced, URL or key=value alike."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)


def dsn_password(dsn: str) -> str | None:
    try:
        return conninfo_to_dict(dsn).get("password") or None
    except psycopg.ProgrammingError:
        return None


def session_options(config: DatabaseConfig) -> dict[str, object]:
    """Connection parameters that make every session safe for a production database."""
    user_options = conninfo_to_dict(config.dsn).get("options", "")
    settings = {
        "default_transaction_read_only": "on",
        "statement_timeout": f"{int(config.statement_timeout * 1000)}",
        "lock_timeout": f"{int(config.lock_timeout * 1000)}",
        "idle_in_transaction_session_timeout": "60000",
    }
    options = " ".join([user_options, *(f"-c {k}={v}" for k, v in settings.items())]).strip()
    return {
        "application_name": APPLICATION_NAME,
        "connect_timeout": max(1, round(config.connect_timeout)),
        "options": options,
        "autocommit": True,
        # Dead peers are noticed by the kernel instead of hanging a poll forever.
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }


class Database:
    """The pool of one monitored database. Connections are opened lazily and checked
    before use, so a restarted server is reconnected to without restarting the exporter."""

    def __init__(self, config: DatabaseConfig):
        self.config = config
        self.pool = ConnectionPool(
            conninfo=config.dsn,
            kwargs=session_options(config),
            min_size=0,
            max_size=config.pool_size,
            open=False,
            timeout=config.connect_timeout + 1,
            check=ConnectionPool.check_connection,
            name=config.name,
        )
        self._opened = False

    @property
    def name(self) -> str:
        return self.config.name

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        if not self._opened:
            self.pool.open(wait=False)
            self._opened = True
        try:
            with self.pool.connection() as conn:
                yield conn
        except PoolTimeout as e:
            raise DatabaseDown(f"no connection within {self.pool.timeout:.0f}s: {e}") from None

    def close(self) -> None:
        if self._opened:
            self.pool.close(timeout=2)
            self._opened = False


def is_connection_error(error: BaseException) -> bool:
    """True when the error says the connection (not the query) failed."""
    if isinstance(error, (DatabaseDown, PoolTimeout)):
        return True
    if isinstance(error, psycopg.OperationalError) and not isinstance(
        error, (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable)
    ):
        return True
    return isinstance(error, psycopg.errors.AdminShutdown)


@dataclass
class WatchOutcome:
    cancelled: bool = False  # set when the query was cancelled because it blocked others


class LockWatch:
    """Cancels a query of ours as soon as it has blocked another session for `patience`.

    Our scans only take ACCESS SHARE locks, but a migration's `ALTER TABLE` waits for them,
    and every application query then queues behind that waiting ALTER: the monitor would
    cause the outage it exists to catch. PostgreSQL has no setting for "give way to
    others", so a watcher thread asks `pg_blocking_pids()` on a second connection while a
    query runs, and cancels it once someone has waited on us for `patience` seconds. The
    check is then reported as skipped for a lock and retried on the next poll.
    """

    def __init__(self, database: Database, patience: float = 2.0, interval: float = 0.2):
        self.database = database
        self.patience = patience
        self.interval = interval

    @contextlib.contextmanager
    def watching(self, conn: psycopg.Connection) -> Iterator[WatchOutcome]:
        outcome = WatchOutcome()
        done = threading.Event()
        thread = threading.Thread(target=self._watch, args=(conn, outcome, done), daemon=True, name="lock-watch")
        thread.start()
        try:
            yield outcome
        finally:
            done.set()
            thread.join(timeout=2)

    def _watch(self, conn: psycopg.Connection, outcome: WatchOutcome, done: threading.Event) -> None:
        if done.wait(self.interval):  # most queries end before the first look: no second connection
            return
        pid = conn.info.backend_pid
        blocked_since = None
        try:
            with self.database.pool.connection(timeout=self.interval * 5) as watcher:
                while not done.is_set():
                    waiting = watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [pid]
                    ).fetchone()[0]
                    now = time.monotonic()
                    blocked_since = (blocked_since or now) if waiting else None
                    if blocked_since is not None and now - blocked_since >= self.patience:
                        outcome.cancelled = True
                        conn.cancel_safe(timeout=2)
                        log.warning("cancelled a query of %s: it blocked %d session(s) for %.1fs", self.database.name, waiting, now - blocked_since)
                        return
                    done.wait(self.interval)
        except Exception as e:  # noqa: BLE001 - without a watcher the statement timeout still bounds the query
            log.debug("lock watch on %s unavailable: %s", self.database.name, e)
