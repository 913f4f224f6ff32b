"""Can the exporter's own role write to the database it watches? It never does
(read-only sessions), but a read-only session is a setting a role may switch off: only
the role's privileges make it impossible. A role that can write is reported - a warning
in the log, `venzory_db_role_can_write`, a line and a key of `verify` - never a failure.
deploy/sql/monitoring-role.sql creates a role that passes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg

from exporter.db import one_row

log = logging.getLogger(__name__)

# Any one of these on a table of the schema is a write (has_table_privilege: "any of").
WRITE_PRIVILEGES = "INSERT, UPDATE, DELETE, TRUNCATE"

_QUERY = """
SELECT current_user,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
       coalesce((SELECT has_schema_privilege(n.oid, 'CREATE') FROM pg_namespace n WHERE n.nspname = %(schema)s), false),
       coalesce((SELECT array_agg(c.relname::text ORDER BY c.relname)
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p')
                   AND (has_table_privilege(c.oid, %(write)s)
                        OR has_any_column_privilege(c.oid, 'INSERT, UPDATE'))), '{}')
"""


@dataclass(frozen=True)
class Privileges:
    role: str
    superuser: bool
    create_on_schema: bool  # may create tables (and so triggers, functions) in the app's schema
    writable_tables: tuple[str, ...]  # INSERT, UPDATE, DELETE or TRUNCATE on these

    @property
    def can_write(self) -> bool:
        return self.superuser or self.create_on_schema or bool(self.writable_tables)

    def as_dict(self) -> dict[str, Any]:
        """The `privileges` object of verify --json (docs/verify-json.md)."""
        return {"role": self.role, "can_write": self.can_write, "superuser": self.superuser,
                "create_on_schema": self.create_on_schema, "writable_tables": list(self.writable_tables)}

    def describe(self) -> str:
        """One line for people: what the role may do that it should not."""
        if not self.can_write:
            return f"role {self.role} can only read"
        reasons = []
        if self.superuser:
            reasons.append("is a superuser")
        if self.create_on_schema:
            reasons.append("has CREATE on the schema")
        if self.writable_tables:
            shown = ", ".join(self.writable_tables[:5]) + (", ..." if len(self.writable_tables) > 5 else "")
            reasons.append(f"may write to {len(self.writable_tables)} tables ({shown})")
        return (f"role {self.role} {' and '.join(reasons)}: give the exporter a read-only role "
                "(deploy/sql/monitoring-role.sql, docs/security.md)")


def read_privileges(conn: psycopg.Connection, schema: str) -> Privileges:
    role, superuser, create, tables = one_row(conn.execute(_QUERY, {"schema": schema, "write": WRITE_PRIVILEGES}))
    return Privileges(role, bool(superuser), bool(create), tuple(tables))


class WriteWarning:
    """Logs once per database, and again only when what the role may do changes: a
    warning every poll would drown the log."""

    def __init__(self, database: str):
        self.database = database
        self._last: Privileges | None = None

    def observe(self, privileges: Privileges | None) -> None:
        if privileges is None or privileges == self._last:
            return
        if privileges.can_write:
            log.warning("database %s: the exporter's %s", self.database, privileges.describe())
        elif self._last is not None:
            log.info("database %s: the exporter's %s now", self.database, privileges.describe())
        self._last = privileges
