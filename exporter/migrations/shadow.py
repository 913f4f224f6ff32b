"""A migrations folder -> the Schema it produces (the "expected" schema), like Prisma's shadow database.

The folder is replayed into a scratch database on a shadow server - never the monitored
database - and the result introspected. Replaying takes seconds, so results are cached
by a key over the folder's migration names and checksums: the work happens once per
change of the folder, not once per poll.

Scratch databases: by default `venzory_exporter_shadow_<pid>_<random>` is created on the
shadow server and dropped afterwards (the server's user needs CREATEDB). With
`shadow_database` an existing, dedicated database is reset instead
(DROP SCHEMA public CASCADE; CREATE SCHEMA public), for servers where the exporter may
not create databases. A database holding `_prisma_migrations` is never reset: that is an
application's database, not a scratch one.

Snapshots: `write_snapshot` stores an expected Schema as JSON (for exporters with no
shadow server, e.g. written in CI by `venzory-db-exporter snapshot`); `load_snapshot`
reads it back.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from collections.abc import Callable, Iterator, Mapping

import psycopg
from psycopg.conninfo import make_conninfo

from exporter.migrations.checksum import checksum, read_migration
from exporter.migrations.replay import MigrationError, apply_migrations, migration_names
from exporter.schema.catalog import introspect
from exporter.schema.model import Schema

SCRATCH_PREFIX = "venzory_exporter_shadow_"
SNAPSHOT_FORMAT = 1
T = TypeVar("T")
_CACHE_SIZE = 4  # folder versions kept; a folder changes rarely


class ShadowError(RuntimeError):
    """The expected schema could not be built. str() is the operator-facing reason."""


class BrokenFolder(ShadowError):
    """A migration fails on an empty database: the folder itself is broken, and replaying
    it again cannot help until it changes (so this error is cached like a result)."""


@dataclass(frozen=True)
class Step:
    migration: str
    schema: Schema  # the schema after this migration (and all before it)


@dataclass(frozen=True)
class ExpectedSteps:
    """The Schema after each migration of a folder, in order."""

    key: str  # folder_key() of the folder replayed
    steps: tuple[Step, ...]

    @property
    def final(self) -> Schema:
        return self.steps[-1].schema if self.steps else Schema()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.migration for s in self.steps)

    def after(self, migration: str) -> Schema:
        return self.steps[self.names.index(migration)].schema

    def before(self, migration: str) -> Schema:
        index = self.names.index(migration)
        return self.steps[index - 1].schema if index else Schema()


# -- the folder key ----------------------------------------------------------------------


def read_scripts(folder: Path) -> list[tuple[str, str]]:
    """(name, migration.sql text) of every migration, in the order they are applied."""
    try:
        return [(name, read_migration(Path(folder) / name / "migration.sql")) for name in migration_names(folder)]
    except OSError as e:
        raise ShadowError(f"migrations folder {folder}: {e.strerror or e}") from None


def folder_key(scripts: list[tuple[str, str]]) -> str:
    """Identifies a folder's content: changes when a migration is added, removed, renamed
    or edited. Line endings are normalised first, like Prisma's checksum tolerance, so a
    Windows checkout does not cost a replay."""
    digest = hashlib.sha256()
    for name, text in scripts:
        digest.update(f"{name}\0{checksum(text.replace(chr(13) + chr(10), chr(10)))}\n".encode())
    return digest.hexdigest()


# -- cache -------------------------------------------------------------------------------


class _Cache:
    """Results by folder key, failures included: a folder whose migration does not apply
    on an empty database stays broken until it changes, so it is not replayed each poll."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()  # concurrent polls of several databases share one replay
        self.replays = 0  # how many replays ran (tests and the bench read it)

    def get(self, key: tuple[str, str], build: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._entries:
                self.replays += 1
                try:
                    self._entries[key] = build()
                except BrokenFolder as e:
                    self._entries[key] = e
                while len(self._entries) > _CACHE_SIZE:
                    self._entries.pop(next(iter(self._entries)))
            value = self._entries[key]
        if isinstance(value, BrokenFolder):
            raise value
        return cast(T, value)  # a key's kind ("final", "steps") decides its value's type

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.replays = 0


cache = _Cache()


# -- public entry points -----------------------------------------------------------------


def expected_schema(
    migrations_dir: Path, shadow_dsn: str, *, shadow_database: str | None = None, connect_timeout: float = 10
) -> Schema:
    """The Schema the folder produces: one replay per folder version, then from the cache."""
    scripts = read_scripts(migrations_dir)
    key = folder_key(scripts)

    def build() -> Schema:
        with scratch_database(shadow_dsn, shadow_database, connect_timeout) as conn:
            _apply(conn, lambda: apply_migrations(conn, migrations_dir, record=False))
            schema = introspect(conn)
        _unchanged_since_read(migrations_dir, key)
        return schema

    return cache.get(("final", key), build)


def expected_steps(
    migrations_dir: Path, shadow_dsn: str, *, shadow_database: str | None = None, connect_timeout: float = 10
) -> ExpectedSteps:
    """The Schema after each migration (the expected schema of the applied migrations): one replay, introspecting after
    each step; cached like expected_schema."""
    scripts = read_scripts(migrations_dir)
    key = folder_key(scripts)

    def build() -> ExpectedSteps:
        steps = []
        with scratch_database(shadow_dsn, shadow_database, connect_timeout) as conn:
            for name, script in scripts:
                # apply_migrations(record=False) replays a whole prefix of the folder; one
                # script at a time is the same thing with the schema read in between.
                _apply(conn, lambda: _run_script(conn, name, script))  # noqa: B023 - called at once
                steps.append(Step(name, introspect(conn)))
        return ExpectedSteps(key, tuple(steps))

    return cache.get(("steps", key), build)


def _run_script(conn: psycopg.Connection, name: str, script: str) -> None:
    try:
        conn.execute(script)  # no parameters: one multi-statement script, as replay sends it
    except psycopg.Error as e:
        raise MigrationError(name, f"{e.sqlstate}: {e}") from e


def _apply(conn: psycopg.Connection, run: Callable[[], object]) -> None:
    try:
        run()
    except MigrationError as e:
        if isinstance(e.__cause__, psycopg.OperationalError):  # connection lost, timeout: may pass later
            raise ShadowError(f"shadow database, during migration {e.migration}: {e.message}") from None
        raise BrokenFolder(f"migration {e.migration} fails on an empty shadow database: {e.message}") from None
    except psycopg.OperationalError as e:
        raise ShadowError(f"shadow database: {e}") from None
    except OSError as e:
        raise ShadowError(f"migrations folder: {e.strerror or e}: {getattr(e, 'filename', '')}") from None


def _unchanged_since_read(folder: Path, key: str) -> None:
    # apply_migrations reads the folder itself; a deploy copying files in the meantime
    # would cache a schema under the wrong key.
    if folder_key(read_scripts(folder)) != key:
        raise ShadowError(f"migrations folder {folder} changed during the replay; retrying next poll")


# -- scratch databases -------------------------------------------------------------------


@contextmanager
def scratch_database(
    shadow_dsn: str, shadow_database: str | None = None, connect_timeout: float = 10
) -> Iterator[psycopg.Connection]:
    """An autocommit connection to an empty scratch database on the shadow server."""
    if shadow_database:
        with _connect(make_conninfo(shadow_dsn, dbname=shadow_database), connect_timeout) as conn:
            _reset(conn, shadow_database)
            yield conn
        return
    name = f"{SCRATCH_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
    with _connect(shadow_dsn, connect_timeout) as admin:
        try:
            admin.execute(f'CREATE DATABASE "{name}"')
        except psycopg.Error as e:
            raise ShadowError(
                f"cannot create a scratch database on the shadow server ({e.sqlstate}: {e}); "
                "grant CREATEDB or set migrations.shadow_database"
            ) from None
        try:
            with _connect(make_conninfo(shadow_dsn, dbname=name), connect_timeout) as conn:
                yield conn
        except BaseException:
            _drop(admin, name, quietly=True)  # the first error is the one worth reporting
            raise
        _drop(admin, name)


def _drop(admin: psycopg.Connection, name: str, quietly: bool = False) -> None:
    try:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error as e:
        if not quietly:
            raise ShadowError(f"could not drop scratch database {name} on the shadow server: {e}") from None


def _connect(dsn: str, connect_timeout: float) -> psycopg.Connection:
    try:
        return psycopg.connect(
            dsn, autocommit=True, connect_timeout=max(1, round(connect_timeout)),
            application_name="venzory-db-exporter shadow",
        )
    except psycopg.Error as e:
        raise ShadowError(f"cannot connect to the shadow server: {e}") from None


def _reset(conn: psycopg.Connection, database: str) -> None:
    managed = conn.execute(
        "SELECT 1 FROM pg_class WHERE relname = '_prisma_migrations' AND relkind IN ('r', 'p')"
    ).fetchone()
    if managed:
        raise ShadowError(
            f"refusing to reset shadow_database {database!r}: it holds _prisma_migrations, so it "
            "is an application's database, not a scratch one"
        )
    conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")


# -- snapshot files ----------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    schema: Schema
    folder_key: str | None  # of the folder the schema was replayed from
    meta: Mapping[str, Any]  # the rest of what the writer passed: migrations, created_at, version, ...


def write_snapshot(schema: Schema, path: Path, meta: Mapping[str, Any]) -> None:
    """Write an expected Schema as JSON. `meta` should hold "folder_key" (see folder_key)
    so a reader can tell whether the snapshot is still the folder's. Written atomically:
    a running exporter never reads half a file."""
    rest = {k: v for k, v in meta.items() if k != "folder_key"}
    document = {"format": SNAPSHOT_FORMAT, "folder_key": meta.get("folder_key"), "meta": rest,
                "schema": schema.to_json()}
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)


def read_snapshot(path: Path) -> Snapshot:
    """A snapshot file with its metadata; ShadowError when unreadable or of another format."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ShadowError(f"snapshot {path}: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(document, dict) or document.get("format") != SNAPSHOT_FORMAT:
        raise ShadowError(f"snapshot {path}: not a format {SNAPSHOT_FORMAT} snapshot (write it again with `snapshot`)")
    try:
        schema = Schema.from_json(document["schema"])
    except (KeyError, TypeError, ValueError) as e:
        raise ShadowError(f"snapshot {path}: malformed schema ({e!r})") from None
    return Snapshot(schema, document.get("folder_key"), document.get("meta") or {})


def load_snapshot(path: Path) -> Schema:
    return read_snapshot(path).schema
