"""A Prisma error -> (code, kind, constraint, model): what it really is.

Pure functions. `facts_from_error` / `facts_from_text` gather what an error says,
wherever the Prisma version that raised it put it (cheap: they run for every line);
`Resolver.classify` reads the texts and decides the labels against the known names
(once per distinct facts: events repeat). The kind comes from the Prisma code where
the code is specific, else from the SQLSTATE, else from the message text: real Prisma never sends P2004 for a
CHECK violation on PostgreSQL (it sends P2039, P2010, or no code at all), so a CHECK
violation is kind="check" however it arrives (docs/events.md, prisma-facts.md).
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any, NamedTuple
from collections.abc import Mapping

from exporter.events.known import ErrorKind, KnownNames

# Label values used when the event says nothing (NONE) or names something not known (OTHER).
NONE = "none"
OTHER = "other"
UNKNOWN_CODE = "unknown"


_PRISMA_CODE = re.compile(r"P\d{4}")

# Codes whose meaning is specific. P2004 ("a constraint failed"), P2010 (raw query
# failed) and P2039 (unmapped database error) say nothing of the kind: their kind
# comes from the SQLSTATE or the text.
_CODE_KINDS = {
    "P2002": ErrorKind.UNIQUE,
    "P2003": ErrorKind.FOREIGN_KEY,
    "P2011": ErrorKind.NOT_NULL,
    "P2012": ErrorKind.NOT_NULL,
    "P2034": ErrorKind.WRITE_CONFLICT,
    "P2001": ErrorKind.RECORD_NOT_FOUND,
    "P2025": ErrorKind.RECORD_NOT_FOUND,
    "P2014": ErrorKind.RELATION,
    "P2015": ErrorKind.RELATION,
    "P2017": ErrorKind.RELATION,
    "P2018": ErrorKind.RELATION,
}

_SQLSTATE_KINDS = {
    "23505": ErrorKind.UNIQUE,
    "23503": ErrorKind.FOREIGN_KEY,
    "23001": ErrorKind.FOREIGN_KEY,  # restrict_violation: PostgreSQL 18 for ON DELETE RESTRICT
    "23502": ErrorKind.NOT_NULL,
    "23514": ErrorKind.CHECK,
    "40001": ErrorKind.WRITE_CONFLICT,
    "40P01": ErrorKind.WRITE_CONFLICT,
}

# Database and Prisma message texts -> kind, tried in order.
_TEXT_KINDS = (
    (ErrorKind.CHECK, re.compile(r"check constraint", re.I)),
    (ErrorKind.FOREIGN_KEY, re.compile(r"foreign key constraint", re.I)),
    (ErrorKind.UNIQUE, re.compile(r"unique constraint|duplicate key value", re.I)),
    (ErrorKind.NOT_NULL, re.compile(r"not-null constraint|null constraint violation", re.I)),
    (ErrorKind.WRITE_CONFLICT, re.compile(r"deadlock detected|could not serialize access|write conflict", re.I)),
    (ErrorKind.RECORD_NOT_FOUND, re.compile(
        r"record to \w+ (?:not found|does not exist)|no record was found|required but not found", re.I)),
    (ErrorKind.RELATION, re.compile(r"violate the required relation", re.I)),
)

# "Code: `23514`" (Prisma 7), `code: "23514"` / `code: SqlState(E23514)` (Prisma 5 debug text).
_SQLSTATE_IN_TEXT = re.compile(r'[Cc]ode: ?(?:`|\\?"|SqlState\(E)?([0-9A-Z]{5})\b')
_SQLSTATE = re.compile(r"[0-9A-Z]{5}")

# Constraint names: `violates check constraint "X"` (PostgreSQL, quotes maybe escaped in
# Rust debug text), "on the constraint: `X`" (Prisma 6/7), "failed on the field: `X (index)`"
# (Prisma 5 P2003), "Check constraint violation: X" (the runbook's example).
_NAME_IN_TEXT = (
    re.compile(r'constraint \\?"([^"\\]+)\\?"'),
    re.compile(r"on the constraint: `([^`]+)`"),
    re.compile(r"failed on the (?:field|index): `([^`]+)`"),
    re.compile(r"constraint violation: `?([A-Za-z_][\w$]*)"),
)
_COLUMNS_IN_TEXT = re.compile(r"on the fields: \(([^)]*)\)")
_TABLE_IN_TEXT = re.compile(r'(?:relation|table) \\?"([^"\\]+)\\?"')
# "Invalid `prisma.locationInventory.update()` invocation": the client's model accessor.
_INVOCATION = re.compile(r"Invalid `[\w$]+\.(\w+)\.\w+\(\)` invocation")
_INDEX_SUFFIX = " (index)"
# Facts are kept (per batch, and in the Resolver's cache) and may come from anyone: cut
# them to sizes real ones never reach (PostgreSQL names have at most 63 bytes).
_NAME_CHARS = 128
_TEXT_CHARS = 1000
_MAX_COLUMNS = 32


class ErrorFacts(NamedTuple):
    """What one error says, as reported: raw strings, cheap to gather for every line.
    The text is only searched (regexes) when classified, once per distinct facts."""

    code: str | None = None  # `code` / `errorCode` as given: a Prisma code, maybe a SQLSTATE
    sqlstate: str | None = None  # the adapter's originalCode / code, Prisma 5 raw meta.code
    constraint: str | None = None  # a name, from meta
    columns: tuple[str, ...] = ()  # when meta names columns instead of a constraint
    model: str | None = None  # meta.modelName, the adapter cause's table, a log event's target
    text: str = ""  # the database's own text: adapter message, or the message's last line
    invocation: str = ""  # the message's first line: "Invalid `prisma.item.create()` invocation"


class Labels(NamedTuple):
    code: str
    kind: ErrorKind
    constraint: str
    model: str


_EMPTY: Mapping[str, Any] = {}


# -- reading an error object (runs for every line: plain dict look-ups, no regex) -------------

def facts_from_error(error: Mapping[str, Any]) -> ErrorFacts:
    """A serialized Prisma error (pino `err`, an object under another key, the error
    itself, the runbook's example shape) -> its facts."""
    meta = error.get("meta")
    if type(meta) is not dict:
        meta = _EMPTY
    adapter = meta.get("driverAdapterError")
    cause = adapter.get("cause") if type(adapter) is dict else None
    if type(cause) is not dict:
        cause = _EMPTY
    message = error.get("message")
    if type(message) is not str:
        message = ""
    text = (_str(cause.get("originalMessage")) or _str(cause.get("message")) or _str(meta.get("message"))
            or _str(meta.get("database_error")) or last_line(message))
    code = _str(error.get("code")) or _str(error.get("errorCode"))
    sqlstate = _str(cause.get("originalCode")) or _str(cause.get("code")) or _str(meta.get("code"))
    constraint, columns = _constraint_from_meta(meta, cause)
    model = _str(meta.get("modelName")) or _str(cause.get("table"))
    invocation = "" if model else first_line(message)
    return ErrorFacts(code and code[:_NAME_CHARS], sqlstate and sqlstate[:_NAME_CHARS],
                      constraint and constraint[:_NAME_CHARS], columns, model and model[:_NAME_CHARS],
                      text[:_TEXT_CHARS], invocation)


def facts_from_text(message: str, target: str | None = None) -> ErrorFacts:
    """A Prisma message with no code or meta: a `log` event ({message, target, timestamp})
    or the text after `prisma:error`. The database text is in the last non-empty line."""
    # "item.create" -> "item"; a raw query's target ("$executeRaw") names no model.
    model = target.partition(".")[0] if target and "." in target and not target.startswith("$") else None
    return ErrorFacts(None, None, None, (), model and model[:_NAME_CHARS], last_line(message)[:_TEXT_CHARS],
                      first_line(message))


def _constraint_from_meta(meta: Mapping[str, Any], cause: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    adapter = cause.get("constraint")
    if type(adapter) is dict:
        if name := _str(adapter.get("index")):
            return name, ()
        if columns := _columns(adapter.get("fields")):  # older adapters: quote characters kept
            return None, columns
    reported = meta.get("constraint")  # runbook shape: a name; Prisma 5 P2011: a column list
    if name := _str(reported):
        return name, ()
    if name := _str(meta.get("field_name")):  # Prisma 5 P2003: "<constraint> (index)"
        return name.removesuffix(_INDEX_SUFFIX), ()
    target = meta.get("target")  # Prisma 5 P2002: the columns (a name on some databases)
    if name := _str(target):
        return name, ()
    return None, _columns(target) or _columns(reported)


def last_line(message: str) -> str:
    """Prisma messages begin with "\\nInvalid `...` invocation" and a code frame; the
    database text is the last non-empty line."""
    return message.rstrip().rpartition("\n")[2].strip()[:_TEXT_CHARS]


def first_line(message: str) -> str:
    return message.lstrip()[:_TEXT_CHARS].partition("\n")[0]


def constraint_in_text(text: str) -> tuple[str | None, tuple[str, ...]]:
    for pattern in _NAME_IN_TEXT:
        if m := pattern.search(text):
            return m.group(1).removesuffix(_INDEX_SUFFIX), ()
    if m := _COLUMNS_IN_TEXT.search(text):
        return None, _columns(m.group(1).split(","))
    return None, ()


def sqlstate_in_text(text: str) -> str | None:
    m = _SQLSTATE_IN_TEXT.search(text)
    # "code: P2002" in a text is a Prisma code, not a SQLSTATE.
    return m.group(1) if m and not _PRISMA_CODE.fullmatch(m.group(1)) else None


def table_in_text(text: str) -> str | None:
    m = _TABLE_IN_TEXT.search(text)
    return m.group(1) if m else None


def model_in_invocation(line: str) -> str | None:
    m = _INVOCATION.search(line)
    return m.group(1) if m else None


def _str(value: Any) -> str | None:
    return value if type(value) is str and value else None


def _columns(value: Any) -> tuple[str, ...]:
    if type(value) is not list:
        return ()
    return tuple(c.strip().strip('"`')[:_NAME_CHARS] for c in value[:_MAX_COLUMNS]
                 if isinstance(c, str) and c.strip().strip('"`'))


def complete(facts: ErrorFacts) -> ErrorFacts:
    """The facts with what only the texts say filled in: a code that is really a
    SQLSTATE moved over, then SQLSTATE, constraint and model read from the text."""
    code, sqlstate = facts.code, facts.sqlstate
    if code is not None and not _PRISMA_CODE.fullmatch(code):
        moved = code if _SQLSTATE.fullmatch(code) else None
        code, sqlstate = None, sqlstate or moved
    if sqlstate is not None and not _SQLSTATE.fullmatch(sqlstate):
        sqlstate = None
    constraint, columns = facts.constraint, facts.columns
    if constraint is None and not columns:
        constraint, columns = constraint_in_text(facts.text)
    model = facts.model or table_in_text(facts.text) or model_in_invocation(facts.invocation)
    return ErrorFacts(code, sqlstate or sqlstate_in_text(facts.text), constraint, columns, model,
                      facts.text, facts.invocation)


# -- deciding the labels -----------------------------------------------------------------------

def kind_of(facts: ErrorFacts) -> ErrorKind:
    if kind := _CODE_KINDS.get(facts.code or ""):
        return kind
    if kind := _SQLSTATE_KINDS.get(facts.sqlstate or ""):
        return kind
    for kind, pattern in _TEXT_KINDS:
        if pattern.search(facts.text):
            return kind
    # P2004 is Prisma's "a constraint failed on the database"; the runbook reads it as CHECK.
    return ErrorKind.CHECK if facts.code == "P2004" else ErrorKind.OTHER


class Resolver:
    """Label values bounded by one KnownNames: a constraint or model that is not known
    becomes "other", one the event does not name becomes "none"."""

    _CACHE_SIZE = 4096

    def __init__(self, known: KnownNames):
        self.known = known
        self._cache: dict[ErrorFacts, Labels] = {}

    @cached_property
    def _tables_by_lower(self) -> dict[str, str]:
        # Prisma 5 reports the model name, log events the client accessor (`locationInventory`).
        return {t.lower(): t for t in self.known.tables}

    def classify(self, facts: ErrorFacts) -> Labels:
        labels = self._cache.get(facts)
        if labels is None:
            if len(self._cache) >= self._CACHE_SIZE:
                self._cache.clear()  # bounded whatever arrives; refilled by the next events
            labels = self._cache[facts] = self._classify(complete(facts))
        return labels

    @cached_property
    def _only_table_of(self) -> dict[str, str]:
        # An expected constraint's name -> its table, for names on one table only (the
        # runbook's own P2004 example names the constraint and no model).
        tables: dict[str, set[str]] = {}
        for table, name, _ in self.known.expected:
            tables.setdefault(name, set()).add(table)
        return {name: next(iter(found)) for name, found in tables.items() if len(found) == 1}

    def _classify(self, facts: ErrorFacts) -> Labels:
        kind = kind_of(facts)
        table = self.table(facts.model)
        code = facts.code if facts.code and _PRISMA_CODE.fullmatch(facts.code) else UNKNOWN_CODE
        constraint = self.constraint(facts, kind, table)
        if table is None and facts.model is None:
            table = self._only_table_of.get(constraint)
        return Labels(code, kind, constraint, table or (OTHER if facts.model else NONE))

    def table(self, model: str | None) -> str | None:
        if model is None:
            return None
        if model in self.known.tables:
            return model
        return self._tables_by_lower.get(model.lower())

    def constraint(self, facts: ErrorFacts, kind: ErrorKind, table: str | None) -> str:
        name = self._name(facts, kind, table)
        return self.known.aliases.get(name, name)

    def _name(self, facts: ErrorFacts, kind: ErrorKind, table: str | None) -> str:
        name = facts.constraint
        if name is not None:
            return name if name in self.known.constraints else OTHER
        if not facts.columns or kind not in (ErrorKind.UNIQUE, ErrorKind.FOREIGN_KEY):
            return NONE  # a NOT NULL violation names columns, not a constraint
        if table is None:
            return OTHER
        if kind == ErrorKind.UNIQUE and (mapped := self.known.unique_columns.get((table, facts.columns))):
            return mapped
        # Prisma's default names: {table}_{columns}_key / _fkey.
        suffix = "key" if kind is ErrorKind.UNIQUE else "fkey"
        default = f"{table}_{'_'.join(facts.columns)}_{suffix}"
        return default if default in self.known.constraints else OTHER
