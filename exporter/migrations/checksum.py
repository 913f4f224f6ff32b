"""Checksums of `migration.sql` files, computed and compared exactly as Prisma does.

Prisma stores the lowercase hex SHA-256 of the file's text (read as UTF-8, invalid bytes
replaced by U+FFFD, a byte-order mark kept) in `_prisma_migrations.checksum`. When it
compares, it accepts the stored value for the text as is, with every CRLF turned into LF,
or with every LF turned into CRLF, so a checkout with other line endings is not a
modification. Anything else (a trailing newline, trailing spaces, an added BOM) is.

Very old versions of the engine wrote the hex without zero padding (each byte as `%x`);
a stored value that is non-empty and not 64 characters long is compared in that format
(prisma-engines issue #1887).
"""

from __future__ import annotations

import hashlib
from os import PathLike

CHECKSUM_LENGTH = 64  # hex characters of a SHA-256 digest


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def checksum(text: str) -> str:
    """The value Prisma writes for a migration script: lowercase hex SHA-256 of its UTF-8."""
    return _digest(text).hex()


def legacy_format(digest: bytes) -> str:
    """The old, unpadded format: each byte as lowercase hex without a leading zero."""
    return "".join(format(b, "x") for b in digest)


def read_migration(path: str | PathLike[str]) -> str:
    """The text of a migration.sql as Prisma reads it: bytes decoded as UTF-8 with invalid
    sequences replaced, line endings untouched, a leading BOM kept."""
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def checksum_matches(stored: str, text: str) -> bool:
    """Whether Prisma would accept `stored` as the checksum of `text` (not "modified")."""
    legacy = bool(stored) and len(stored) != CHECKSUM_LENGTH
    for variant in (text, text.replace("\r\n", "\n"), text.replace("\n", "\r\n")):
        digest = _digest(variant)
        if (legacy_format(digest) if legacy else digest.hex()) == stored:
            return True
    return False
