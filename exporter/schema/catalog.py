"""Live database catalog -> Schema.

Five catalog queries, no table data read: cheap enough to run on every poll. Names come
back unquoted, exactly as PostgreSQL stores them (Prisma's quoted camelCase included).

The catalog read never waits on a table lock. Most of it reads system catalogs, which
takes no lock on the tables they describe; but deparsing an expression (a column default,
a CHECK constraint, an index expression or predicate: pg_get_expr, pg_get_constraintdef,
pg_get_indexdef) opens the table with ACCESS SHARE, which waits behind a migration's
ACCESS EXCLUSIVE (and would queue the app behind us if the migration is itself waiting).
So the tables that someone holds or awaits ACCESS EXCLUSIVE on are read first (pg_locks
takes no lock), and their expressions are left out (None): the Schema lists them in
`locked`, and everything that would read them treats them as locked for this poll.
"""

from __future__ import annotations

from typing import Any

import psycopg

from exporter.schema.model import Column, Constraint, ConstraintKind, Index, Schema, Table

# Tables of the schema that a session holds or waits for ACCESS EXCLUSIVE on, directly or
# through one of their indexes or their TOAST table (ALTER TABLE locks those too).
_LOCKED = """
SELECT DISTINCT t.oid, t.relname
FROM pg_locks l
JOIN pg_class r ON r.oid = l.relation
LEFT JOIN pg_index x ON x.indexrelid = r.oid
JOIN pg_class t ON t.oid = COALESCE(x.indrelid, r.oid) OR (r.relkind = 't' AND t.reltoastrelid = r.oid)
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND n.nspname = %(schema)s AND t.relkind IN ('r', 'p')
"""

_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
       CASE WHEN c.oid <> ALL(%(locked)s) THEN pg_get_expr(d.adbin, d.adrelid) END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p')
ORDER BY c.relname, a.attnum
"""

# Index columns by position; an expression column (attnum 0) is shown by pg_get_indexdef.
_INDEXES = """
SELECT i.relname, t.relname, x.indisunique, x.indisprimary, x.indisvalid AND x.indisready,
       CASE WHEN t.oid <> ALL(%(locked)s) THEN pg_get_expr(x.indpred, x.indrelid) END, am.amname,
       ARRAY(SELECT CASE WHEN k.attnum = 0 THEN
                           CASE WHEN t.oid <> ALL(%(locked)s) THEN pg_get_indexdef(x.indexrelid, k.ord::int, true) END
                         ELSE (SELECT attname FROM pg_attribute
                               WHERE attrelid = x.indrelid AND attnum = k.attnum) END
             FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
             WHERE k.ord <= x.indnkeyatts
             ORDER BY k.ord)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = i.relam
WHERE n.nspname = %(schema)s
"""

_CONSTRAINTS = """
SELECT con.conname, t.relname, con.contype, con.convalidated,
       -- primary, unique and foreign keys deparse without opening the table
       CASE WHEN con.contype IN ('p', 'u', 'f') OR t.oid <> ALL(%(locked)s) THEN pg_get_constraintdef(con.oid) END,
       ARRAY(SELECT attname FROM unnest(con.conkey) WITH ORDINALITY k(n, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.ord),
       rt.relname,
       ARRAY(SELECT attname FROM unnest(con.confkey) WITH ORDINALITY k(n, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.ord),
       con.confdeltype, con.confupdtype
FROM pg_constraint con
JOIN pg_class t ON t.oid = con.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
LEFT JOIN pg_class rt ON rt.oid = con.confrelid
WHERE n.nspname = %(schema)s AND con.contype IN ('p', 'u', 'c', 'f', 'x')
"""

_ENUMS = """
SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
JOIN pg_enum e ON e.enumtypid = t.oid
WHERE n.nspname = %(schema)s
GROUP BY t.typname
"""

_KINDS = {"p": ConstraintKind.PRIMARY_KEY, "u": ConstraintKind.UNIQUE, "c": ConstraintKind.CHECK,
          "f": ConstraintKind.FOREIGN_KEY, "x": ConstraintKind.EXCLUSION}
_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


def introspect(conn: psycopg.Connection, schema: str = "public") -> Schema:
    """Read the structure of one PostgreSQL schema (namespace) into a Schema.

    A lock taken between the look at pg_locks and the read makes the read fail after
    lock_timeout: it is retried with the locks as they are then."""
    for attempt in range(_ATTEMPTS):
        try:
            return _introspect(conn, schema)
        except psycopg.errors.LockNotAvailable:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


_ATTEMPTS = 3
_NOT_READ = "(expression not read: table locked)"


def _introspect(conn: psycopg.Connection[tuple[Any, ...]], schema: str) -> Schema:
    params: dict[str, object] = {"schema": schema}
    with conn.cursor() as cur:
        locked: dict[int, str] = dict(cur.execute(_LOCKED, params).fetchall())
        params["locked"] = list(locked)
        columns: dict[str, dict[str, Column]] = {}
        for table, name, type_, nullable, default in cur.execute(_COLUMNS, params):
            columns.setdefault(table, {})[name] = Column(name, type_, nullable, default)

        indexes = {}
        for name, table, unique, primary, valid, predicate, method, cols in cur.execute(_INDEXES, params):
            cols = tuple(c if c is not None else _NOT_READ for c in cols)  # an expression of a locked table
            indexes[name] = Index(name, table, cols, unique, predicate, valid, primary, method)

        constraints = {}
        for row in cur.execute(_CONSTRAINTS, params):
            name, table, contype, validated, definition, cols, ref_table, ref_cols, on_del, on_upd = row
            foreign = contype == "f"
            constraints[(table, name)] = Constraint(
                name=name,
                table=table,
                kind=_KINDS[contype],
                columns=tuple(cols),
                definition=definition,
                validated=validated,
                ref_table=ref_table if foreign else None,
                ref_columns=tuple(ref_cols) if foreign else (),
                on_delete=_ACTIONS[on_del] if foreign else None,
                on_update=_ACTIONS[on_upd] if foreign else None,
            )

        enums = {name: tuple(labels) for name, labels in cur.execute(_ENUMS, params)}

    tables = {name: Table(name, cols) for name, cols in columns.items()}
    return Schema(tables, indexes, constraints, enums, locked=frozenset(locked.values()))
