"""Before `prisma migrate deploy`: which live rows would make a pending migration fail.

For each pending migration, in order, the constraints it adds are found by comparing the
expected Schema after it with the expected Schema before it (the shadow replay's steps):
CHECK constraints, unique indexes (partial predicate kept), NOT NULL on existing columns
and foreign keys - new ones, and ones re-created with another definition, since
re-adding a constraint re-checks every row. Constraints on tables the migration itself
creates are skipped: a new table has no rows.

Each addition is counted on the monitored database, with its read-only session (SELECT
only, bounded by the session's statement timeout), using the shadow catalog's own text
of the rule: rows where a CHECK is false (NULL passes), rows in duplicate groups of a
unique index (NULLs never clash, the predicate respected), non-null references with no
parent row, NULLs in a column becoming NOT NULL. The counts are of the rows as they are
now; a pending migration that fixes data itself (an UPDATE before its ALTER) is not
modelled.

What the live database cannot evaluate yet - a table, column or enum type that an
earlier pending migration adds - is reported `cannot_evaluate` with the reason, found
from the live Schema before querying, and any SQL error is caught the same way: a
number is never guessed.

One exception is reasoned, not guessed: a CHECK comparing an enum column with a label the
live enum lacks yet (`status <> 'PARTIALLY_RECEIVED'` before the migration adding that
label). No live row can hold a label its enum does not have, and for equality (=, <>,
IN) comparing labels as text is the same as comparing enum values, so the rule is
evaluated with the enum compared as text. Ordering comparisons (<, >) depend on the
enum's sort order, which text does not have: those are cannot_evaluate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from collections.abc import Callable, Iterable, Sequence

import psycopg

from exporter.db import execute_one, one_row
from exporter.migrations.shadow import ExpectedSteps
from exporter.schema.model import Constraint, ConstraintKind, Index, Schema



class PreflightKind(StrEnum):
    """What a pending migration starts enforcing on existing rows."""

    CHECK = ConstraintKind.CHECK.value
    UNIQUE = ConstraintKind.UNIQUE.value
    FOREIGN_KEY = ConstraintKind.FOREIGN_KEY.value
    NOT_NULL = "not_null"
    MIGRATION = "migration"  # the whole migration: the replay does not know it


# Constraints that check every existing row, with the preflight kind of each.
_ROW_RULES = {ConstraintKind.CHECK: PreflightKind.CHECK, ConstraintKind.FOREIGN_KEY: PreflightKind.FOREIGN_KEY}


class PreflightStatus(StrEnum):
    BLOCKED = "blocked"
    OK = "ok"
    CANNOT_EVALUATE = "cannot_evaluate"


@dataclass(frozen=True)
class PreflightItem:
    migration: str
    table: str
    constraint: str  # constraint or index name; for not_null, the column; "" for a migration item
    kind: PreflightKind
    status: PreflightStatus
    blocked_rows: int | None  # rows that make the migration fail; None when not evaluated
    sql: str  # lists the offending rows; "" when it cannot run on the live database yet
    reason: str = ""  # why cannot_evaluate, or how it was evaluated
    duplicate_groups: int | None = None  # unique only: how many key values are duplicated

    @property
    def is_problem(self) -> bool:
        """Live rows would make the migration fail (cannot_evaluate is said, not failed)."""
        return self.status is PreflightStatus.BLOCKED


@dataclass(frozen=True)
class PlannedCount:
    """One addition, ready to count: `count_sql` returns one row (blocked rows[, groups]).
    An item already decided (cannot_evaluate) has no count_sql."""

    item: PreflightItem
    count_sql: str | None
    addition: Addition | None = None  # what is counted (lets a check's count answer it)


# -- what a migration adds (pure) ---------------------------------------------------------


@dataclass(frozen=True)
class Addition:
    """A rule a migration starts enforcing on rows that already exist."""

    kind: PreflightKind  # not MIGRATION
    table: str
    name: str  # constraint or index name; the column for NOT_NULL
    rule: Constraint | Index | None = None  # None for NOT_NULL

    @property
    def constraint(self) -> Constraint:
        """The rule of a CHECK or foreign key addition."""
        if not isinstance(self.rule, Constraint):
            raise TypeError(f"a {self.kind} addition has no constraint")
        return self.rule

    @property
    def index(self) -> Index:
        """The rule of a unique addition."""
        if not isinstance(self.rule, Index):
            raise TypeError(f"a {self.kind} addition has no index")
        return self.rule


def added_constraints(before: Schema, after: Schema) -> list[Addition]:
    """The rules `after` enforces on rows of tables that exist in `before`, and `before` did not."""
    added = []
    for (table, name), con in sorted(after.constraints.items()):
        if con.kind not in _ROW_RULES or not con.validated or not before.has_table(table):
            continue  # NOT VALID constraints do not check existing rows
        old = before.constraint(table, name)
        if old is None or old.definition != con.definition or not old.validated:
            added.append(Addition(_ROW_RULES[con.kind], table, name, con))
    for name, index in sorted(after.indexes.items()):
        if not index.unique or not before.has_table(index.table):
            continue
        old_index = before.indexes.get(name)
        if old_index is None or not old_index.unique or (old_index.table, old_index.columns, old_index.predicate) != (
            index.table, index.columns, index.predicate
        ):
            added.append(Addition(PreflightKind.UNIQUE, index.table, name, index))
    for table_name, after_table in sorted(after.tables.items()):
        for column in after_table.columns.values():
            if not column.nullable and before.has_column(table_name, column.name) \
                    and before.tables[table_name].columns[column.name].nullable:
                added.append(Addition(PreflightKind.NOT_NULL, table_name, column.name))
    return added


# -- planning (pure) ----------------------------------------------------------------------


def plan_preflight(
    live: Schema, steps: ExpectedSteps, pending: Sequence[str], *, schema: str = "public"
) -> list[PlannedCount]:
    """Every addition of every pending migration (in the order given), with its query or
    the reason it cannot be evaluated on the live database."""
    planned = []
    for migration in pending:
        if migration not in steps.names:  # e.g. its migration.sql is still being copied
            reason = "not in the replayed folder (migration.sql missing, or the folder changed since the replay)"
            item = PreflightItem(migration, "", "", PreflightKind.MIGRATION, PreflightStatus.CANNOT_EVALUATE,
                                 None, "", reason)
            planned.append(PlannedCount(item, None))
            continue
        before, after = steps.before(migration), steps.after(migration)
        for addition in added_constraints(before, after):
            planned.append(_plan_one(migration, addition, live, after, steps, schema))
    return planned


def _plan_one(
    migration: str, add: Addition, live: Schema, after: Schema, steps: ExpectedSteps, schema: str
) -> PlannedCount:
    base = PreflightItem(migration, add.table, add.name, add.kind, PreflightStatus.CANNOT_EVALUATE, None, "")
    missing = _missing_from_live(add, live)
    if missing:
        return PlannedCount(replace(base, reason=_not_there_yet(missing, steps)), None)
    note = ""
    try:
        if add.kind == PreflightKind.CHECK:
            expression = _check_expression(add.constraint.definition)
            source, expression, note = _evaluable(add.table, expression, live, after, schema)
            listing = f"SELECT * FROM {source} WHERE NOT ({expression})"
            count = _count_of(listing)
        elif add.kind == PreflightKind.NOT_NULL:
            listing = f"SELECT * FROM {_table_ref(schema, add.table)} WHERE {_ident(add.name)} IS NULL"
            count = _count_of(listing)
        elif add.kind == PreflightKind.FOREIGN_KEY:
            listing = _orphans_sql(add.constraint, schema)
            count = _count_of(listing)
        else:
            listing, count, note = _duplicates_sql(add.index, live, after, schema)
    except _CannotEvaluate as e:
        return PlannedCount(replace(base, reason=str(e)), None)
    return PlannedCount(replace(base, sql=listing, reason=note), count, add)


class _CannotEvaluate(Exception):
    pass


def _missing_from_live(add: Addition, live: Schema) -> list[tuple[str, str | None]]:
    """(table, column or None) that the rule needs and the live database lacks."""
    table = add.table
    if not live.has_table(table):
        return [(table, None)]
    needed: list[tuple[str, str | None]] = []
    if add.kind == PreflightKind.NOT_NULL:
        needed.append((table, add.name))
    elif add.kind == PreflightKind.UNIQUE:
        needed += [(table, c) for c in add.index.columns if _is_plain_column(c)]
    else:  # for a CHECK, the columns its expression uses (pg_constraint.conkey)
        rule = add.constraint
        needed += [(table, c) for c in rule.columns]
        if add.kind == PreflightKind.FOREIGN_KEY and rule.ref_table:
            needed += [(rule.ref_table, None)] + [(rule.ref_table, c) for c in rule.ref_columns]
    return [(t, c) for t, c in needed if not (live.has_column(t, c) if c else live.has_table(t))]


def _not_there_yet(missing: list[tuple[str, str | None]], steps: ExpectedSteps) -> str:
    table, column = missing[0]
    if column:
        what = f'column "{table}"."{column}"'
        source = _first_step(steps, lambda s: s.has_column(table, column))
    else:
        what = f'table "{table}"'
        source = _first_step(steps, lambda s: s.has_table(table))
    return f"{what} does not exist in the database yet" + (f" (migration {source} adds it)" if source else "")


def _first_step(steps: ExpectedSteps, has: Callable[[Schema], bool]) -> str | None:
    return next((s.migration for s in steps.steps if has(s.schema)), None)


def _is_plain_column(name: str) -> bool:
    # An index expression column is stored as its pg_get_indexdef text, e.g. "lower(name)".
    return not re.search(r"[()\s:]", name)


# -- SQL builders (pure) ----------------------------------------------------------------


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table_ref(schema: str, table: str) -> str:
    return f"{_ident(schema)}.{_ident(table)}"


def _count_of(listing: str) -> str:
    return f"SELECT count(*) FROM ({listing}) AS offending"


def _check_expression(definition: str) -> str:
    """`CHECK ((quantity >= 0)) NOT VALID` -> `(quantity >= 0)`."""
    text = definition.strip()
    for suffix in ("NOT VALID", "NO INHERIT"):  # printed as "CHECK (...) NO INHERIT NOT VALID"
        text = text.removesuffix(suffix).rstrip()
    if not text.upper().startswith("CHECK"):
        raise _CannotEvaluate(f"not a CHECK definition: {definition!r}")
    return text[5:].strip()


def _orphans_sql(fk: Constraint, schema: str) -> str:
    # MATCH SIMPLE (Prisma's only kind): a row with any NULL in the key references nothing.
    if fk.ref_table is None:
        raise _CannotEvaluate(f"foreign key {fk.name} names no referenced table")
    present = " AND ".join(f"child.{_ident(c)} IS NOT NULL" for c in fk.columns)
    joined = " AND ".join(f"parent.{_ident(p)} = child.{_ident(c)}" for c, p in zip(fk.columns, fk.ref_columns))
    return (
        f"SELECT child.* FROM {_table_ref(schema, fk.table)} AS child WHERE {present} AND NOT EXISTS "
        f"(SELECT 1 FROM {_table_ref(schema, fk.ref_table)} AS parent WHERE {joined})"
    )


def _duplicates_sql(index: Index, live: Schema, after: Schema, schema: str) -> tuple[str, str, str]:
    source, predicate, note = _evaluable(index.table, index.predicate or "", live, after, schema)
    key_list = [_ident(c) if _is_plain_column(c) else f"({c})" for c in index.columns]
    keys = ", ".join(key_list)
    # Rows with a NULL in the key never clash in a unique index (NULLS DISTINCT).
    where = " AND ".join([f"{k} IS NOT NULL" for k in key_list] + ([f"({predicate})"] if predicate else []))
    groups = f"SELECT {keys} FROM {source} WHERE {where} GROUP BY {keys} HAVING count(*) > 1"
    listing = f"SELECT * FROM {source} WHERE {where} AND ({keys}) IN ({groups}) ORDER BY {keys}"
    count = (
        f"SELECT coalesce(sum(n), 0), count(*) FROM "
        f"(SELECT count(*) AS n FROM {source} WHERE {where} GROUP BY {keys} HAVING count(*) > 1) AS duplicates"
    )
    return listing, count, note


# 'LABEL'::"EnumType" or 'LABEL'::enumtype, optionally schema-qualified, as pg_get_*def print them.
_TYPED_LITERAL = re.compile(r"""'((?:[^']|'')*)'::(?:(?:"(?:[^"]|"")+"|\w+)\.)?("(?:[^"]|"")+"|\w+)""")
_ORDERING = re.compile(r"<(?![>])|(?<![<])>")


def _evaluable(table: str, expression: str, live: Schema, after: Schema, schema: str) -> tuple[str, str, str]:
    """(FROM source, expression, note) that evaluate `expression` on the live table, with
    enum labels the live database lacks yet compared as text (module docstring)."""
    source = _table_ref(schema, table)
    short: set[str] = set()  # enum types that lack a label the expression uses
    for label, quoted_type in _TYPED_LITERAL.findall(expression):
        enum = _unquote(quoted_type)
        if enum not in after.enums:
            continue
        if enum not in live.enums:
            raise _CannotEvaluate(f'enum type "{enum}" does not exist in the database yet')
        if label.replace("''", "'") not in live.enums[enum]:
            short.add(enum)
    if not short:
        return source, expression, ""
    if _ORDERING.search(_TYPED_LITERAL.sub("''", expression)):
        raise _CannotEvaluate(
            f"compares the order of enum {', '.join(sorted(short))} with a label the database does not have yet"
        )
    columns = []
    for column in live.tables[table].columns.values():
        is_enum = _unquote(column.type) in short
        columns.append(f"{_ident(column.name)}::text AS {_ident(column.name)}" if is_enum else _ident(column.name))
    source = f"(SELECT {', '.join(columns)} FROM {source}) AS {_ident(table)}"

    def as_text(match: re.Match[str]) -> str:
        return f"'{match.group(1)}'::text" if _unquote(match.group(2)) in short else match.group(0)

    labels = sorted(f"{e}.{v}" for e in short for v in after.enums[e] if v not in live.enums[e])
    note = f"enum labels not in the database yet ({', '.join(labels)}) compared as text: no row can hold them"
    return source, _TYPED_LITERAL.sub(as_text, expression), note


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


# -- running the counts -----------------------------------------------------------------


def run_planned(conn: psycopg.Connection, planned: Iterable[PlannedCount]) -> tuple[PreflightItem, ...]:
    """Count each planned addition on the live database; a failing query gives that item
    cannot_evaluate with the database's reason and does not stop the others."""
    items = []
    for plan in planned:
        if plan.count_sql is None:
            items.append(plan.item)
            continue
        try:
            with conn.transaction():  # a savepoint if the caller is in a transaction
                row = one_row(execute_one(conn, plan.count_sql))
        except psycopg.Error as e:
            items.append(replace(plan.item, reason=f"query failed: {_error_text(e)}"))
            continue
        blocked = int(row[0])
        groups = int(row[1]) if len(row) > 1 else None
        status = PreflightStatus.BLOCKED if blocked else PreflightStatus.OK
        items.append(replace(plan.item, status=status, blocked_rows=blocked, duplicate_groups=groups))
    return tuple(items)


def _error_text(error: psycopg.Error) -> str:
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else type(error).__name__
    return f"{error.sqlstate} {message}" if error.sqlstate else message


def preflight(
    conn: psycopg.Connection, live: Schema, steps: ExpectedSteps, pending: Sequence[str], *, schema: str = "public"
) -> tuple[PreflightItem, ...]:
    """What would make each pending migration fail on this database, addition by addition.
    `conn`: the monitored database's read-only session; `live`: its Schema; `steps`: the
    shadow replay of the folder; `pending`: migration names in the order deploy applies them."""
    return run_planned(conn, plan_preflight(live, steps, pending, schema=schema))


def verdicts(items: Iterable[PreflightItem], pending: Sequence[str]) -> dict[str, PreflightStatus]:
    """Per pending migration: blocked if any item is, else cannot_evaluate if any item is,
    else ok (a migration that adds nothing to check is ok)."""
    result = {name: PreflightStatus.OK for name in pending}
    for item in items:
        undecided = item.status == PreflightStatus.CANNOT_EVALUATE and result[item.migration] == PreflightStatus.OK
        if item.status == PreflightStatus.BLOCKED or undecided:
            result[item.migration] = item.status
    return result
