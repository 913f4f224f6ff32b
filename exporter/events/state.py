"""The followers' state file: where each followed file was left, written atomically.

One entry per file: its source (the configured glob), path, identity (device, inode,
and a SHA-256 of its first bytes, so a recycled inode is not taken for the old file)
and the offset just past the last complete line counted.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

VERSION = 1
HEAD_BYTES = 1024  # how much of a file's beginning identifies it


@dataclass(frozen=True)
class FileState:
    source: str
    path: str
    dev: int
    ino: int
    offset: int
    head_len: int
    head_sha256: str


def head_digest(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()


def load(path: str | Path) -> list[FileState]:
    """The saved entries; none when the file is missing or unreadable (a warning is the
    caller's business: starting over is always safe, only slower)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("version") != VERSION:
            return []
        return [FileState(**entry) for entry in data["files"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return []


def save(path: str | Path, entries: list[FileState]) -> None:
    """Write-to-temp, fsync, rename: a crash leaves the old state or the new, never half."""
    path = Path(path)
    payload = json.dumps({"version": VERSION, "files": [asdict(e) for e in entries]}, indent=1)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)
