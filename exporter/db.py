"""Database access: short read-only sessions, one per poll, under a global connection cap.

A poll opens its session, reads, and closes it: no connection is held between polls, so
50 databases cost nothing while idle and a restarted server is simply connected to
again. `ConnectionBudget` caps the sessions open at once across all databases
(exporter.max_connections).

Every session the exporter opens on a monitored database is:
- read-only (`default_transaction_read_only`): a write attempted by any query fails in
  the database itself, not by convention in our code;
- autocommit: each statement is its own short transaction, so no snapshot is held across
  a poll (vacuum is never held back) and no lock outlives the statement that took it;
- bounded by `statement_timeout` and `lock_timeout`: a query never waits long behind a
  migration's lock (the waiting itself would queue the app behind the migration);
- named `application_name = venzory-db-exporter`, so a DBA sees who it is;
- bounded on the client side too: a statement the server has not answered within its
  statement_timeout plus connect_timeout is abandoned (`NoAnswer`). statement_timeout is
  enforced by the server, so it cannot end a wait when the network or a proxy in between
  silently drops the traffic; TCP keepalives cannot either when a hung proxy still
  acknowledges packets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.abc import RV, Params, PQGen
from psycopg.conninfo import conninfo_to_dict

from exporter.config import DatabaseConfig

APPLICATION_NAME = "venzory-db-exporter"

log = logging.getLogger(__name__)


class DownReason(StrEnum):
    """Why a poll found its database down: the `reason` label of venzory_db_down_reason."""

    CONNECT_TIMEOUT = "connect_timeout"  # no session within connect_timeout (host or network silent)
    TOO_MANY_CONNECTIONS = "too_many_connections"  # the server refused: its connection slots are full
    CONNECT_FAILED = "connect_failed"  # any other refusal: server down, authentication, no such database
    NO_ANSWER = "no_answer"  # connected, then the server stopped answering (see Session)
    CONNECTION_LOST = "connection_lost"  # the session broke during the poll (server killed, restarted)
    EXPORTER_LIMIT = "exporter_connection_limit"  # exporter.max_connections sessions were open already
    ERROR = "error"  # an unexpected failure of the exporter itself (logged with its traceback)


# What the server says when its slots are full: "sorry, too many clients already",
# "remaining connection slots are reserved for ..." (SQLSTATE 53300, which libpq does not
# hand over for a failed connection attempt, so the English text is all there is).
_SLOTS_FULL = ("too many clients", "connection slots are reserved", "too many connections")


class DatabaseDown(Exception):
    """The database could not be reached (connect or connection-level failure)."""

    def __init__(self, message: str, reason: DownReason = DownReason.CONNECT_FAILED):
        super().__init__(message)
        self.reason = reason


class NoAnswer(DatabaseDown):
    def __init__(self, seconds: float):
        super().__init__(
            f"no answer from the server within {seconds:.0f}s (statement_timeout + connect_timeout): "
            "the network or a proxy is dropping the traffic, or the server hangs; session abandoned",
            DownReason.NO_ANSWER,
        )


def one_row(cursor: psycopg.Cursor[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (an aggregate)."""
    row = cursor.fetchone()
    if row is None:
        raise psycopg.DataError("expected one row, the query returned none")
    return row


def session_options(config: DatabaseConfig) -> dict[str, Any]:
    """Connection parameters that make every session safe for a production database."""
    user_options = str(conninfo_to_dict(config.dsn).get("options", ""))
    settings = {
        "default_transaction_read_only": "on",
        "statement_timeout": f"{int(config.statement_timeout * 1000)}",
        "lock_timeout": f"{int(config.lock_timeout * 1000)}",
        "idle_in_transaction_session_timeout": "60000",
    }
    options = " ".join([user_options, *(f"-c {k}={v}" for k, v in settings.items())]).strip()
    return {
        "application_name": APPLICATION_NAME,
        # libpq (and psycopg) wait at least 2 s, whatever is asked.
        "connect_timeout": max(1, round(config.connect_timeout)),
        "options": options,
        "autocommit": True,
        # Dead peers are noticed by the kernel instead of hanging a poll forever: an idle
        # session after 10 + 3 x 5 s of silence, and one with data sent but not
        # acknowledged (packets dropped) after the same 25 s (Linux TCP_USER_TIMEOUT).
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": 25_000,
    }


class Session(psycopg.Connection):
    """A session that abandons a statement the server has not answered in time, and that
    another thread can break off at once (`interrupt`, used at shutdown and reload).

    The server cancels a statement at statement_timeout; if its answer has still not
    arrived `grace` seconds later, it never will: psycopg's wait gets a deadline, the
    session is closed and the poll ends with `NoAnswer`.
    """

    statement_timeout: float = 30.0
    grace: float = 5.0
    _socket: socket.socket | None = None
    _cancel: psycopg.pq.abc.PGcancel | None = None
    _answering = True  # False once the server is known not to answer: close without waiting
    _socket_lock: threading.Lock

    @classmethod
    def open(cls, config: DatabaseConfig) -> Session:
        try:
            session = cls.connect(config.dsn, **session_options(config))
        except psycopg.errors.ConnectionTimeout as e:
            raise DatabaseDown(f"no connection within connect_timeout: {e}", DownReason.CONNECT_TIMEOUT) from None
        except psycopg.Error as e:  # refused, or a DSN libpq cannot use
            message = str(e).strip()
            slots_full = any(text in message for text in _SLOTS_FULL)
            reason = DownReason.TOO_MANY_CONNECTIONS if slots_full else DownReason.CONNECT_FAILED
            raise DatabaseDown(message, reason) from None
        session.statement_timeout, session.grace = config.statement_timeout, config.connect_timeout
        # What `interrupt` needs, taken now: another thread must not touch the connection
        # (libpq's PGconn is not thread-safe). Our own handle on the socket: shutting it
        # down wakes a thread blocked reading it, whatever the network does.
        session._cancel = session.pgconn.get_cancel()
        session._socket = socket.socket(fileno=os.dup(session.pgconn.socket))
        session._socket_lock = threading.Lock()
        return session

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        deadline = self.statement_timeout + self.grace
        try:
            return super().wait(gen, interval, timeout if timeout is not None else deadline)
        except psycopg.errors._WaitTimeout:  # documented by Connection.wait (psycopg >= 3.3)
            if timeout is not None:
                raise
            self._answering = False
            self.close()
            raise NoAnswer(deadline) from None

    def interrupt(self) -> None:
        """Break the session off now: ask the server to cancel what runs (in the
        background: the network may be what is broken) and shut the socket, so a thread
        waiting on it fails at once."""
        self._answering = False
        if self._cancel is None:
            return  # not opened by `open`
        threading.Thread(target=_cancel, args=(self._cancel,), name="cancel", daemon=True).start()
        with self._socket_lock:
            if self._socket is not None:
                with contextlib.suppress(OSError):
                    self._socket.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        super().close()  # sends Terminate
        if self._cancel is None:
            return  # not opened by `open`
        with self._socket_lock:
            sock, self._socket = self._socket, None
        if sock is None:
            return
        # Our handle keeps the socket open until the server closes it, which it does
        # once its backend has exited and freed its slot: so the next session never
        # counts twice against exporter.max_connections, the server's max_connections
        # or the role's CONNECTION LIMIT. Normally a millisecond; never more than 1 s.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
            if self._answering:
                sock.settimeout(1.0)
                while sock.recv(4096):
                    pass
        sock.close()


def _cancel(cancel: psycopg.pq.abc.PGcancel) -> None:
    with contextlib.suppress(psycopg.Error):
        cancel.cancel()


def execute_one(conn: psycopg.Connection[Any], query: str | bytes | sql.SQL | sql.Composed,
                params: Params | None = None) -> psycopg.Cursor[Any]:
    """`query` sent with the extended query protocol, in which PostgreSQL parses exactly one
    statement: text that smuggles in a second one (`...; COMMIT; DROP TABLE ...`) is a
    syntax error, never run. psycopg sends a query without parameters with the simple
    protocol, which runs several statements, unless the results are binary: so they are
    (counts and names load the same). Every query built from config text goes this way."""
    return conn.execute(query, params, binary=True)


@contextlib.contextmanager
def statement_timeout(conn: psycopg.Connection, seconds: float) -> Iterator[None]:
    """Statements inside run with their own statement_timeout (a check's `timeout`): SET
    LOCAL in a short transaction, so the session's own setting comes back by itself."""
    with conn.transaction():
        conn.execute("SELECT set_config('statement_timeout', %s, true)", [str(round(seconds * 1000))])
        if not isinstance(conn, Session):
            yield
            return
        default, conn.statement_timeout = conn.statement_timeout, seconds  # the client-side deadline follows
        try:
            yield
        finally:
            conn.statement_timeout = default


class ConnectionBudget:
    """At most `limit` sessions open at once to all monitored databases together
    (exporter.max_connections): a hard bound a DBA can count on, whatever the number of
    databases. Resized in place on a config reload, so sessions of the old config count."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_use = 0
        self._changed = threading.Condition()

    def resize(self, limit: int) -> None:
        with self._changed:
            self.limit = limit
            self._changed.notify_all()

    def take(self, wait: float) -> bool:
        with self._changed:
            if not self._changed.wait_for(lambda: self.in_use < self.limit, timeout=wait):
                return False
            self.in_use += 1
            return True

    def give_back(self) -> None:
        with self._changed:
            self.in_use -= 1
            self._changed.notify()


class Database:
    """Sessions to one monitored database: at most `pool_size` at once (the poll's and,
    while a query runs, its lock watcher's), each counted in the shared budget."""

    def __init__(self, config: DatabaseConfig, budget: ConnectionBudget | None = None):
        self.config = config
        self.budget = budget
        self._lock = threading.Lock()
        self._open: set[Session] = set()
        self._closed = False

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def closed(self) -> bool:
        return self._closed

    @contextlib.contextmanager
    def connection(self, *, extra: bool = False) -> Iterator[Session]:
        """A new session, closed on exit. `extra` (the lock watcher's): only if a slot is
        free right now, else DatabaseDown - the caller does without."""
        with self._lock:
            if self._closed:
                raise DatabaseDown(f"{self.name}: the exporter is stopping or reloading", DownReason.ERROR)
            if extra and len(self._open) >= self.config.pool_size:
                raise DatabaseDown(f"{self.name}: pool_size ({self.config.pool_size}) sessions open already",
                                   DownReason.EXPORTER_LIMIT)
        # A poll waits for a slot no longer than it would wait for a connection.
        if self.budget and not self.budget.take(0 if extra else self.config.connect_timeout):
            raise DatabaseDown(
                f"exporter.max_connections ({self.budget.limit}) sessions are open already", DownReason.EXPORTER_LIMIT
            )
        try:
            session = Session.open(self.config)
            with self._lock:
                self._open.add(session)
                interrupted = self._closed
            try:
                if interrupted:
                    session.interrupt()
                yield session
            finally:
                with self._lock:
                    self._open.discard(session)
                session.close()
        finally:
            if self.budget:
                self.budget.give_back()

    def close(self) -> None:
        """No new sessions; the open ones are broken off at once (shutdown, reload)."""
        with self._lock:
            self._closed = True
            sessions = list(self._open)
        for session in sessions:
            session.interrupt()


def down_reason(error: BaseException) -> DownReason:
    """The `reason` label for a poll that failed with `error`."""
    if isinstance(error, DatabaseDown):
        return error.reason
    return DownReason.CONNECTION_LOST if is_connection_error(error) else DownReason.ERROR


def is_connection_error(error: BaseException) -> bool:
    """True when the error says the connection (not the query) failed."""
    if isinstance(error, DatabaseDown):
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
            with self.database.connection(extra=True) as watcher:
                while not done.is_set():
                    waiting = one_row(watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [pid]
                    ))[0]
                    now = time.monotonic()
                    blocked_since = (blocked_since or now) if waiting else None
                    if blocked_since is not None and now - blocked_since >= self.patience:
                        outcome.cancelled = True
                        conn.cancel_safe(timeout=2)
                        log.warning("cancelled a query of %s: it blocked %d session(s) for %.1fs",
                                    self.database.name, waiting, now - blocked_since)
                        return
                    done.wait(self.interval)
        except Exception as e:  # noqa: BLE001 - without a watcher the statement timeout still bounds the query
            log.debug("lock watch on %s unavailable: %s", self.database.name, e)
