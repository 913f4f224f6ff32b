"""What a dump file is, from PostgreSQL's own format facts and tools - never from its size.

- plain (`pg_dump > file.sql`, also gzip-compressed): pg_dump writes "-- PostgreSQL database dump" first and
  "-- PostgreSQL database dump complete" only after the last object, so a dump that was
  cut short (disk full, pg_dump killed) has no trailer. The header names the server
  version; the database only with `pg_dump --create` (`CREATE DATABASE`, `\\connect`).
- custom (-Fc, starts with "PGDMP"), tar (-Ft) and directory (-Fd, a folder with toc.dat):
  `pg_restore --list` reads the table of contents (database name, creation time, versions)
  and `pg_restore --file=/dev/null` reads every data block through, which fails on a
  truncated or corrupt archive. A tar archive must also end with its restore.sql member
  and the end-of-archive blocks (a tar cut between two members still restores cleanly).

A file is inspected once: the answer is cached while its size and mtime stay the same.
"""

from __future__ import annotations

import glob as globbing
import gzip
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, replace
from datetime import datetime, UTC
from enum import StrEnum
from pathlib import Path
from typing import Any


class DumpFormat(StrEnum):
    PLAIN = "plain"
    PLAIN_GZIP = "plain_gzip"  # pg_dump | gzip: read through once to reach the trailer
    CUSTOM = "custom"
    TAR = "tar"
    DIRECTORY = "directory"
    UNKNOWN = "unknown"


class DumpStatus(StrEnum):
    """The `status` label of venzory_db_backup_files."""

    COMPLETE = "complete"  # complete, and of this database (or a plain dump naming none)
    INCOMPLETE = "incomplete"  # cut short or corrupt: it would not restore
    WRONG_DATABASE = "wrong_database"  # a complete dump of another database
    UNREADABLE = "unreadable"  # not a dump, or it could not be read (permissions, pg_restore missing)


PLAIN_HEADER = b"-- PostgreSQL database dump"
PLAIN_TRAILER = b"-- PostgreSQL database dump complete"
CUSTOM_MAGIC = b"PGDMP"
GZIP_MAGIC = b"\x1f\x8b"
HEAD_BYTES = 64 * 1024  # the header, and CREATE DATABASE / \connect of a --create dump
TAIL_BYTES = 4 * 1024  # the trailer (pg_dump 15.14+ writes \unrestrict after it)


@dataclass(frozen=True)
class Dump:
    path: str
    format: DumpFormat
    status: DumpStatus
    size: int  # bytes (a directory archive: the sum of its files)
    taken_at: float  # unix time: an archive's creation time, else the file's mtime (pg_dump's last write)
    database: str | None = None  # the database the dump names (None: a plain dump without --create)
    server_version: str | None = None
    detail: str = ""
    # taken_at is exact to this many seconds: an archive's "created at" has whole seconds.
    time_resolution: float = 0.0

    @property
    def taken_by(self) -> float:
        """The latest moment the dump may have been taken."""
        return self.taken_at + self.time_resolution

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": str(self.format), "status": str(self.status), "size_bytes": self.size,
                "taken_at": datetime.fromtimestamp(self.taken_at, UTC).isoformat(),
                "database": self.database, "server_version": self.server_version, "detail": self.detail}


def find_pg_restore(configured: Path | None) -> str | None:
    if configured is not None:
        return str(configured)
    on_path = shutil.which("pg_restore")
    if on_path:
        return on_path
    candidates = sorted(globbing.glob("/usr/lib/postgresql/*/bin/pg_restore"), key=_major_version, reverse=True)
    return candidates[0] if candidates else None


def _major_version(path: str) -> int:
    found = re.search(r"/(\d+)/bin/", path)
    return int(found.group(1)) if found else 0


def matching_files(pattern: str) -> list[tuple[str, os.stat_result]]:
    """The files and directory archives a glob matches, newest first."""
    found = []
    for path in globbing.glob(pattern):
        try:
            found.append((path, os.stat(path)))
        except OSError:
            continue  # removed between glob and stat (backup rotation)
    return sorted(found, key=lambda item: item[1].st_mtime, reverse=True)


class DumpInspector:
    """Inspects dump files for one database, remembering each file's answer by (path,
    size, mtime): a finished dump never changes, and one being written changes both."""

    def __init__(self, pg_restore: str | None, timeout: float):
        self.pg_restore = pg_restore
        self.timeout = timeout
        self._cache: dict[tuple[str, int, int], Dump] = {}

    def inspect(self, path: str, stat: os.stat_result, database: str) -> Dump:
        key = (path, stat.st_size, stat.st_mtime_ns)
        dump = self._cache.get(key)
        if dump is None:
            dump = self._cache[key] = inspect_dump(path, stat, self.pg_restore, self.timeout)
        # The database check is not cached: the same file answers for one database only.
        if dump.status == DumpStatus.COMPLETE and dump.database not in (None, database):
            return replace(dump, status=DumpStatus.WRONG_DATABASE,
                           detail=f"a dump of database {dump.database!r}, not {database!r}")
        return dump

    def forget_missing(self, present: set[str]) -> None:
        self._cache = {k: v for k, v in self._cache.items() if k[0] in present}


def inspect_dump(path: str, stat: os.stat_result, pg_restore: str | None, timeout: float) -> Dump:
    """One file (or directory archive): its format, completeness and what it names."""
    try:
        fmt = detect_format(path)
        if fmt in (DumpFormat.PLAIN, DumpFormat.PLAIN_GZIP):
            return _inspect_plain(path, stat, fmt)
        if fmt == DumpFormat.UNKNOWN:
            return Dump(path, fmt, DumpStatus.UNREADABLE, stat.st_size, stat.st_mtime,
                        detail="not a pg_dump file (no plain header, no PGDMP, no tar or toc.dat)")
        return _inspect_archive(path, stat, fmt, pg_restore, timeout)
    except OSError as e:
        return Dump(path, DumpFormat.UNKNOWN, DumpStatus.UNREADABLE, stat.st_size, stat.st_mtime,
                    detail=f"cannot read: {e.strerror or e}")


def detect_format(path: str) -> DumpFormat:
    if os.path.isdir(path):
        return DumpFormat.DIRECTORY if os.path.exists(os.path.join(path, "toc.dat")) else DumpFormat.UNKNOWN
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as f:
                head = f.read(512)
        except (OSError, EOFError):
            return DumpFormat.UNKNOWN
        return DumpFormat.PLAIN_GZIP if PLAIN_HEADER in head else DumpFormat.UNKNOWN
    if head.startswith(CUSTOM_MAGIC):
        return DumpFormat.CUSTOM
    if head[257:262] == b"ustar":
        return DumpFormat.TAR
    if PLAIN_HEADER in head:
        return DumpFormat.PLAIN
    return DumpFormat.UNKNOWN


_DUMPED_FROM = re.compile(rb"^-- Dumped from database version (.+)$", re.M)
_NAMES_DATABASE = re.compile(rb"^(?:CREATE DATABASE (\S+) |\\connect (?:-reuse-previous=on )?(\S+)$)", re.M)


def _inspect_plain(path: str, stat: os.stat_result, fmt: DumpFormat) -> Dump:
    try:
        head, tail = _head_and_tail(path, stat, fmt == DumpFormat.PLAIN_GZIP)
    except (EOFError, gzip.BadGzipFile) as e:
        return Dump(path, fmt, DumpStatus.INCOMPLETE, stat.st_size, stat.st_mtime,
                    detail=f"gzip stream cut short or corrupt: {e}")
    version = _DUMPED_FROM.search(head)
    named = _NAMES_DATABASE.search(head)
    database = _unquote((named.group(1) or named.group(2)).decode()) if named else None
    server_version = version.group(1).decode().strip() if version else None
    dump = Dump(path, fmt, DumpStatus.COMPLETE, stat.st_size, stat.st_mtime, database, server_version)
    if PLAIN_TRAILER not in tail:
        return replace(dump, status=DumpStatus.INCOMPLETE,
                       detail="no '-- PostgreSQL database dump complete' trailer: pg_dump did not finish")
    if database is None:
        return replace(dump, detail="plain dump without --create: it does not name its database "
                                    "(taken as this one's by its glob)")
    return dump


def _head_and_tail(path: str, stat: os.stat_result, compressed: bool) -> tuple[bytes, bytes]:
    """The first HEAD_BYTES and the last TAIL_BYTES of the dump's text."""
    if not compressed:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
            f.seek(max(0, stat.st_size - TAIL_BYTES))
            return head, f.read()
    with gzip.open(path, "rb") as f:  # no index in a gzip stream: read it through
        head = f.read(HEAD_BYTES)
        tail = head[-TAIL_BYTES:]
        while chunk := f.read(1 << 20):
            tail = (tail + chunk)[-TAIL_BYTES:]
        return head, tail


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') and name.endswith('"') else name


_TOC_FIELDS = {
    "created": re.compile(r"^; Archive created at (.+)$", re.M),
    "dbname": re.compile(r"^;\s+dbname: (.*)$", re.M),
    "version": re.compile(r"^;\s+Dumped from database version: (.+)$", re.M),
}


def _inspect_archive(path: str, stat: os.stat_result, fmt: DumpFormat, pg_restore: str | None, timeout: float) -> Dump:
    size = _size(path, stat)
    if pg_restore is None:
        return Dump(path, fmt, DumpStatus.UNREADABLE, size, stat.st_mtime,
                    detail="pg_restore not found (install postgresql-client or set backups.pg_restore)")
    listed, listing = _run([pg_restore, "--list", path], timeout)
    if not listed and "unsupported version" in listing:
        # Not the dump's fault: this pg_restore is older than the pg_dump that wrote it.
        return Dump(path, fmt, DumpStatus.UNREADABLE, size, stat.st_mtime,
                    detail=f"{listing} (install a pg_restore at least as new as the pg_dump, backups.pg_restore)")
    if not listed:
        return Dump(path, fmt, DumpStatus.INCOMPLETE, size, stat.st_mtime,
                    detail=f"pg_restore --list failed: {listing}")
    toc = {k: (m.group(1).strip() if (m := rx.search(listing)) else None) for k, rx in _TOC_FIELDS.items()}
    created = _toc_time(toc["created"])
    taken_at, resolution = (created, 1.0) if created is not None else (stat.st_mtime, 0.0)
    named = Dump(path, fmt, DumpStatus.COMPLETE, size, taken_at, toc["dbname"], toc["version"],
                 time_resolution=resolution)
    if fmt == DumpFormat.TAR and (problem := _tar_problem(path)):
        return replace(named, status=DumpStatus.INCOMPLETE, detail=problem)
    read, error = _run([pg_restore, "--file=/dev/null", path], timeout)
    if not read:
        return replace(named, status=DumpStatus.INCOMPLETE, detail=f"pg_restore cannot read it through: {error}")
    return named


def _size(path: str, stat: os.stat_result) -> int:
    if not os.path.isdir(path):
        return stat.st_size
    return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())


def _tar_problem(path: str) -> str | None:
    try:
        with tarfile.open(path) as archive:
            names = archive.getnames()
    except (tarfile.TarError, EOFError) as e:
        return f"tar archive cut short: {e}"
    if "restore.sql" not in names:
        return "tar archive without its restore.sql member: pg_dump did not finish"
    return None


def _run(cmd: list[str], timeout: float) -> tuple[bool, str]:
    """(True, stdout) when the tool succeeded, else (False, its first error line)."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, errors="replace")
    except subprocess.TimeoutExpired:
        return False, f"took longer than backups.inspect_timeout ({timeout:.0f}s)"
    except OSError as e:
        return False, f"cannot run {cmd[0]}: {e.strerror or e}"
    return (True, done.stdout) if done.returncode == 0 else (False, _first_error(done.stderr))


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line]
    return (errors or lines or ["no message"])[0]


def _toc_time(text: str | None) -> float | None:
    """'2026-12-02 10:33:09 UTC' (pg_restore prints the zone's abbreviation)."""
    if not text:
        return None
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?: (\S+))?$", text)
    if not m:
        return None
    moment = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    if m.group(2) in (None, "UTC", "GMT", "Z"):
        return moment.replace(tzinfo=UTC).timestamp()
    return None  # another zone's abbreviation is ambiguous: the file's mtime is used instead
