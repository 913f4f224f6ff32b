"""Expectations: what the database should enforce, and whether it does.

Two sources, one shape:
- the config's `constraints` (and the rules of its checks), matched to the live database by
  name first and then by meaning (exporter.schema.meaning), so a constraint re-created under
  another name is `present` under the name it really has, and `critical` stays with the rule;
- the expected schema (the applied migrations, a snapshot, or schema.prisma: see
  docs/expectations.md): every CHECK, unique index, foreign key and NOT NULL column it
  declares is an expectation of its own, with a derived check of the ordinary kinds (row,
  orphan, duplicate) that counts its rule on the live rows. The runner answers a derived
  check from the catalog when the live database keeps the rule, and counts it otherwise
  (missing, NOT VALID, defined differently): the report says the protection is gone and
  the count says whether bad data already came in.

A configured entry whose table or column exists in neither the live nor any expected schema
is `stale`: a warning with the fix, never a failure. Without any expected schema the
config's list is the whole expectation, as before (nothing is stale or pending then).

A unique constraint and a unique index are the same promise (Prisma creates unique INDEXES,
a partial one cannot be a constraint), so `unique` is looked up as an index; its validity
is the index's (a failed CREATE INDEX CONCURRENTLY leaves it invalid). A CHECK or foreign
key added NOT VALID is present and not valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from exporter.config import Check, DuplicateCheck, ExpectedConstraint, OrphanCheck, RowCheck
from exporter.config.models import Reference
from exporter.schema.meaning import (
    Key, Kept, check_key, foreign_key_key, key_columns, meanings, not_null_key, not_null_name, unique_key,
)
from exporter.schema.model import ConstraintKind, Schema, unwrap

T = TypeVar("T")

# Prisma's bookkeeping table is not the app's schema.
_IGNORED_TABLES = {"_prisma_migrations"}

# The category of every derived check (a label value: alerts and the dashboard group by it).
DERIVED_CATEGORY = "schema_rule"


class Source(StrEnum):
    """Where an expectation comes from (docs/expectations.md; the `source` label)."""

    CONFIG = "config"
    MIGRATIONS = "migrations"
    SNAPSHOT = "snapshot"
    SCHEMA_PRISMA = "schema_prisma"


class Status(StrEnum):
    """What became of one expectation (the `status` of verify's constraints and of
    venzory_db_constraint_status)."""

    PRESENT = "present"  # kept by a validated constraint/index (maybe under another name)
    NOT_VALID = "not_valid"  # present, but NOT VALID (or an invalid index)
    DIFFERS = "differs"  # an object of that name exists, but enforces another rule
    MISSING = "missing"  # nothing in the live database keeps the rule
    PENDING = "pending"  # not yet: a pending migration adds it
    STALE = "stale"  # configured for a table or column that exists nowhere any more


PROBLEMS = frozenset({Status.NOT_VALID, Status.DIFFERS, Status.MISSING})


@dataclass(frozen=True)
class ConstraintResult:
    table: str
    name: str  # the configured or declared name (stable: alerts and dashboards key on it)
    kind: ConstraintKind
    critical: bool
    status: Status
    actual: str | None = None  # the live object that keeps the rule, when present
    source: Source = Source.CONFIG
    detail: str = ""  # why it is not simply present, for people (for stale: the fix)

    @property
    def present(self) -> bool:
        return self.status in (Status.PRESENT, Status.NOT_VALID)

    @property
    def valid(self) -> bool:
        return self.status == Status.PRESENT

    @property
    def is_problem(self) -> bool:
        """A finding (verify's exit code): pending ones are the migrations' report, stale ones a warning."""
        return self.status in PROBLEMS


@dataclass(frozen=True)
class NotRun:
    """A configured check that is not run: STALE (its table or column exists nowhere; `why`
    is the fix) or PENDING (a pending migration creates them; `why` says which)."""

    check: Check
    status: Status
    why: str


@dataclass(frozen=True)
class SchemaSources:
    """The expected schemas of one poll (exporter.migrations.monitor)."""

    declared: Schema | None  # what the app declares now: applied migrations, else snapshot, else schema.prisma
    source: Source = Source.MIGRATIONS  # which of them `declared` is
    final: Schema | None = None  # after the pending migrations too (None when none are pending)
    pending: tuple[tuple[str, Schema], ...] = ()  # (migration, schema after it) of each pending one
    known: tuple[Schema, ...] = ()  # every expected schema of the poll (a name in none of them is stale)


@dataclass(frozen=True)
class Expectations:
    checks: tuple[Check, ...]  # to run: the configured ones that can be, then the derived ones
    not_run: tuple[NotRun, ...] = ()
    constraints: tuple[ConstraintResult, ...] = ()
    derived: frozenset[str] = field(default_factory=frozenset)  # names of the derived checks


# -- Deriving expectations from a schema ------------------------------------------------------


@dataclass(frozen=True)
class Declared:
    table: str
    name: str
    kind: ConstraintKind
    key: Key
    check: Check | None  # None where no check kind can count it (composite FK, expression index)


def _derive(schema: Schema) -> list[Declared]:
    """Every CHECK, foreign key, unique index (and primary key) and NOT NULL column of `schema`."""
    found = [*_declared_constraints(schema), *_declared_indexes(schema), *_declared_not_nulls(schema)]
    return [d for d in found if d.table not in _IGNORED_TABLES]


def _declared_constraints(schema: Schema) -> Iterator[Declared]:
    for c in sorted(schema.constraints.values(), key=lambda c: (c.table, c.name)):
        if c.kind == ConstraintKind.CHECK:
            check = _derived(RowCheck, c.table, c.name, kind="row", rule=_rule(c.definition))
            yield Declared(c.table, c.name, c.kind, check_key(c.table, c.definition), check)
        elif c.kind == ConstraintKind.FOREIGN_KEY:
            orphan = None  # a composite key is reported, not counted
            if len(c.columns) == 1:
                orphan = _derived(OrphanCheck, c.table, c.name, kind="orphan", column=c.columns[0],
                                  references=Reference(table=c.ref_table or "", column=c.ref_columns[0]))
            key = foreign_key_key(c.table, c.columns, c.ref_table or "", c.ref_columns)
            yield Declared(c.table, c.name, c.kind, key, orphan)


def _declared_indexes(schema: Schema) -> Iterator[Declared]:
    for i in sorted(schema.indexes.values(), key=lambda i: (i.table, i.name)):
        if not i.unique:
            continue
        plain = all(schema.has_column(i.table, col) for col in i.columns)  # not an expression index
        check = _derived(DuplicateCheck, i.table, i.name, kind="duplicate", columns=list(i.columns),
                         where=i.predicate) if plain else None
        kind = ConstraintKind.PRIMARY_KEY if i.primary else ConstraintKind.UNIQUE
        yield Declared(i.table, i.name, kind, unique_key(i.table, i.columns, i.predicate), check)


def _declared_not_nulls(schema: Schema) -> Iterator[Declared]:
    for table in sorted(schema.tables.values(), key=lambda t: t.name):
        for column in table.columns.values():
            if not column.nullable:
                name = not_null_name(table.name, column.name)
                check = _derived(RowCheck, table.name, name, kind="row", rule=f'"{column.name}" IS NOT NULL')
                yield Declared(table.name, name, ConstraintKind.NOT_NULL, not_null_key(table.name, column.name), check)


class _PerSchema(Generic[T]):
    """fn(schema), remembered per Schema object: the expected schemas are cached objects that
    change with their folder or file, not per poll (the live one is new each poll)."""

    def __init__(self, fn: Callable[[Schema], T]):
        self._fn = fn
        self._memo: dict[int, tuple[Schema, T]] = {}

    def __call__(self, schema: Schema) -> T:
        hit = self._memo.get(id(schema))
        if hit is None or hit[0] is not schema:
            if len(self._memo) >= 8:
                self._memo.clear()
            hit = self._memo[id(schema)] = (schema, self._fn(schema))
        return hit[1]


derive = _PerSchema(_derive)
_meanings = _PerSchema(meanings)


def derived_check_name(table: str, name: str) -> str:
    """The stable name (and `check` label) of a derived check: `<table>.<constraint>`."""
    return f"{table}.{name}"


def _derived(model: type[RowCheck] | type[OrphanCheck] | type[DuplicateCheck], table: str, name: str,
             **fields: Any) -> Check:
    return model(name=derived_check_name(table, name), table=table, category=DERIVED_CATEGORY,
                 severity="warning", constraint=name, **fields)


def _rule(definition: str) -> str:
    """pg_get_constraintdef's `CHECK ((expr)) [NOT VALID]` -> `expr`."""
    text = re.sub(r"^\s*CHECK\s*", "", definition, flags=re.I)
    return unwrap(re.sub(r"\s+NOT VALID\s*$", "", text, flags=re.I))


# -- Meaning of configured entries -------------------------------------------------------------


def check_meaning(check: Check) -> Key:
    if isinstance(check, RowCheck):
        return check_key(check.table, check.rule)
    if isinstance(check, OrphanCheck):
        return foreign_key_key(check.table, [check.column], check.references.table, [check.references.column])
    return unique_key(check.table, check.columns, check.where)


def _columns_named(check: Check) -> list[tuple[str, str]]:
    """(table, column) pairs a check names, for "does it still exist?"."""
    def quoted(sql: str | None) -> list[str]:
        return re.findall(r'"([^"]+)"', re.sub(r"'(?:[^']|'')*'", "''", sql or ""))

    if isinstance(check, RowCheck):
        return [(check.table, c) for c in quoted(check.rule)]
    if isinstance(check, OrphanCheck):
        return [(check.table, check.column), (check.references.table, check.references.column)]
    return [(check.table, c) for c in [*check.columns, *quoted(check.where)]]


# -- Planning one poll ----------------------------------------------------------------------------


def plan(checks: Sequence[Check], constraints: Sequence[ExpectedConstraint], live: Schema,
         sources: SchemaSources | None = None) -> Expectations:
    """What to run and what to report, from the config, the live Schema and the expected ones.
    Pure: the checks are run (and counted) by exporter.checks.run."""
    live_rules = meanings(live)
    if sources is None or not (sources.declared or sources.known):
        by_config = tuple(_configured(e, _meaning_of(e, checks, None), live, live_rules, None) for e in constraints)
        return Expectations(tuple(checks), (), by_config)

    universe = (live, *sources.known)
    not_run = [n for c in checks if (n := _not_run(c, live, sources, universe))]
    skipped = {n.check.name for n in not_run}
    run = [c for c in checks if c.name not in skipped]
    counted = {check_meaning(c) for c in run}

    results: list[ConstraintResult] = []
    configured: dict[Key, ConstraintResult] = {}
    for expected in constraints:
        key = _meaning_of(expected, checks, sources.declared)
        result = _configured(expected, key, live, live_rules, sources, universe)
        results.append(result)
        if key is not None:
            configured[key] = result
    configured_names = {(e.table, e.name) for e in constraints}

    derived: list[Check] = []
    for d in derive(sources.declared) if sources.declared else ():
        if not _columns_exist(d, live):
            continue  # a table or column the database lacks is drift, reported (and acknowledged) there
        owner = configured.get(d.key)
        if owner is None and (d.table, d.name) not in configured_names:
            results.append(_declared(d, live, live_rules, sources.source))
        if d.check is not None and d.key not in counted:
            critical = owner is not None and owner.critical
            derived.append(d.check.model_copy(update={"severity": "critical"}) if critical else d.check)
            counted.add(d.key)
    return Expectations(tuple(run) + tuple(derived), tuple(not_run), tuple(results),
                        frozenset(c.name for c in derived))


def _columns_exist(d: Declared, live: Schema) -> bool:
    """The database has the table and columns of a declared rule (else it is drift: no rows
    to count, and the drift report says what is absent)."""
    columns = _columns_named(d.check) if d.check is not None else []
    return live.has_table(d.table) and all(live.has_column(t, c) for t, c in columns)


def _not_run(check: Check, live: Schema, sources: SchemaSources, universe: tuple[Schema, ...]) -> NotRun | None:
    named = _columns_named(check)
    fix = _stale_fix(check.table, named, universe, "check")
    if fix:
        return NotRun(check, Status.STALE, fix)
    final = sources.final
    if final is None:
        return None
    for table in dict.fromkeys([check.table, *(t for t, _ in named)]):
        if not live.has_table(table) and final.has_table(table):
            return NotRun(check, Status.PENDING, f"table {table} is created by a pending migration")
    for table, column in named:
        if live.has_table(table) and not live.has_column(table, column) and final.has_column(table, column):
            return NotRun(check, Status.PENDING, f"column {table}.{column} is added by a pending migration")
    return None


def _meaning_of(expected: ExpectedConstraint, checks: Sequence[Check], declared: Schema | None) -> Key | None:
    """The rule a configured constraint stands for: that of the check naming it as its
    `constraint`, else that of the declared object of the same name."""
    for check in checks:
        if check.table == expected.table and check.constraint == expected.name:
            return check_meaning(check)
    if declared is not None:
        for d in _by_name(declared, expected.table, expected.name):
            return d
    return None


def _by_name(schema: Schema, table: str, name: str) -> list[Key]:
    c = schema.constraint(table, name)
    if c is not None and c.kind == ConstraintKind.CHECK:
        return [check_key(table, c.definition)]
    if c is not None and c.kind == ConstraintKind.FOREIGN_KEY:
        return [foreign_key_key(table, c.columns, c.ref_table or "", c.ref_columns)]
    i = schema.indexes.get(name)
    if i is not None and i.table == table and i.unique:
        return [unique_key(table, i.columns, i.predicate)]
    return []


def _live_by_name(expected_kind: ConstraintKind, table: str, name: str,
                  live: Schema) -> tuple[Kept | None, Key | None, str]:
    """The live object of that name and kind, its key, and why it does not count if it exists."""
    if expected_kind in (ConstraintKind.CHECK, ConstraintKind.FOREIGN_KEY):
        c = live.constraint(table, name)
        if c is None:
            return None, None, ""
        if c.kind != expected_kind:
            return None, None, f"exists, but as a {c.kind} constraint"
        keys = _by_name(live, table, name)
        return Kept(c.name, c.kind, c.validated), (keys[0] if keys else None), ""
    index = live.indexes.get(name)
    if index is None or index.table != table:
        return None, None, ""
    if expected_kind == ConstraintKind.UNIQUE and not index.unique:
        return None, None, "exists, but the index is not unique"
    if expected_kind == ConstraintKind.PRIMARY_KEY and not index.primary:
        return None, None, "exists, but is not the primary key"
    key = unique_key(table, index.columns, index.predicate) if index.unique else None
    return Kept(index.name, expected_kind, index.valid), key, ""


def _kept_status(kept: Kept) -> tuple[Status, str]:
    if kept.valid:
        return Status.PRESENT, ""
    if kept.kind in (ConstraintKind.UNIQUE, ConstraintKind.PRIMARY_KEY, ConstraintKind.INDEX):
        return Status.NOT_VALID, "index is invalid (a failed concurrent build?)"
    return Status.NOT_VALID, "NOT VALID: existing rows were never checked"


def _configured(expected: ExpectedConstraint, key: Key | None, live: Schema, live_rules: dict[Key, Kept],
                sources: SchemaSources | None, universe: tuple[Schema, ...] = ()) -> ConstraintResult:
    def result(status: Status, detail: str = "", actual: str | None = None) -> ConstraintResult:
        return ConstraintResult(expected.table, expected.name, expected.kind, expected.critical, status, actual,
                                Source.CONFIG, detail)

    if live.has_table(expected.table):
        kept, live_key, wrong = _live_by_name(expected.kind, expected.table, expected.name, live)
        if kept is not None:
            if key is not None and live_key is not None and live_key != key:
                return result(Status.DIFFERS, "exists, but enforces another rule than the configured check's")
            status, detail = _kept_status(kept)
            return result(status, detail, kept.name)
        if key is not None and key in live_rules:
            status, detail = _kept_status(live_rules[key])
            return result(status, detail, live_rules[key].name)
    else:
        wrong = f'table "{expected.table}" does not exist'
    if sources is None:
        return result(Status.MISSING, wrong or "missing")
    status, detail = _absent(expected, key, sources, universe)
    return result(status, wrong if status is Status.MISSING and wrong else detail)


def _absent(expected: ExpectedConstraint, key: Key | None, sources: SchemaSources,
            universe: tuple[Schema, ...]) -> tuple[Status, str]:
    """A configured constraint that nothing in the live database keeps: stale, pending or missing."""
    columns = [(expected.table, c) for c in (key_columns(key) if key else ())]
    fix = _stale_fix(expected.table, columns, universe, "constraint")
    if fix:
        return Status.STALE, fix

    def declares(schema: Schema) -> bool:
        return (key is not None and key in _meanings(schema)) or bool(_by_name(schema, expected.table, expected.name))

    if sources.final is not None and declares(sources.final):
        adds = next((name for name, schema in sources.pending if declares(schema)), None)
        return Status.PENDING, f"added by pending migration {adds}" if adds else "added by a pending migration"
    if sources.declared is None:
        return Status.MISSING, "missing"
    declared = _meanings(sources.declared).get(key) if key is not None else None
    if declared is not None or declares(sources.declared):
        name = declared.name if declared is not None else expected.name
        return Status.MISSING, f"not in the database (the expected schema declares it as {name})"
    return Status.MISSING, "not in the database, and the expected schema does not declare it under any name " \
                           "(the app dropped it?)"


def _declared(d: Declared, live: Schema, live_rules: dict[Key, Kept], source: Source) -> ConstraintResult:
    def result(status: Status, detail: str = "", actual: str | None = None) -> ConstraintResult:
        return ConstraintResult(d.table, d.name, d.kind, False, status, actual, source, detail)

    if d.kind != ConstraintKind.NOT_NULL:
        kept, live_key, _ = _live_by_name(d.kind, d.table, d.name, live)
        if kept is not None and live_key is not None and live_key != d.key:
            return result(Status.DIFFERS, "exists, but defined differently than the expected schema says; "
                                          "its expected rule is counted on the live rows", kept.name)
        if kept is not None:
            status, detail = _kept_status(kept)
            return result(status, detail + ("; its rule is counted on the live rows" if detail else ""), kept.name)
    if d.key in live_rules:
        status, detail = _kept_status(live_rules[d.key])
        return result(status, detail, live_rules[d.key].name)
    return result(Status.MISSING, "not in the database: its rule is counted on the live rows")


def _stale_fix(table: str, columns: Iterable[tuple[str, str]], universe: tuple[Schema, ...], what: str) -> str:
    """The fix for a configured entry whose table or column is in none of the schemas, else ""."""
    if not any(s.has_table(table) for s in universe):
        return (f"table {table} no longer exists (not in the database nor in the expected schema): "
                f"remove the {what} or point it at an existing table")
    for t, column in columns:
        if not any(s.has_column(t, column) for s in universe):
            if not any(s.has_table(t) for s in universe):
                return (f"table {t} no longer exists (not in the database nor in the expected schema): "
                        f"remove the {what} or point it at an existing table")
            near = sorted({c for s in universe if s.has_table(t) for c in s.tables[t].columns
                           if column.lower() in c.lower() and c != column})
            hint = f" (renamed to {', '.join(f'{t}.{c}' for c in near)}?)" if near else ""
            return (f"column {t}.{column} no longer exists{hint}: remove the {what} or point it at "
                    f"an existing column")
    return ""
