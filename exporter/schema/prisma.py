"""schema.prisma -> Schema: what `prisma migrate` would create on PostgreSQL.

Two steps, both pure:

- `parse_prisma_schema(text)` reads the Prisma schema language into a small AST
  (`PrismaSchema`): blocks, fields, attributes with their arguments. It knows the syntax,
  not the meaning, and raises `ParseError` (with a line number) on anything it cannot read.
- `to_schema(parsed)` derives the database structure Prisma Migrate would create on
  PostgreSQL, written exactly as `catalog.introspect` reads it back from a live database
  (format_type() type names, pg_get_expr() defaults, Prisma's default constraint names),
  so that drift is a plain diff of two Schemas.

The oracle for the parser is Prisma's own (`tests/prisma_oracle`, get_dmmf); the oracle for
`to_schema` is the catalog of a database built by Prisma's migrations. Like Prisma (5.22
up to 7.x, checked), the parser wants every field and attribute on one line: a line break
inside attribute arguments, a trailing comma, `model A {}` on one line are errors.
Implicit many-to-many join tables follow Prisma 6+ (a primary key, not a unique index).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from collections.abc import Iterator
from typing import Any, NamedTuple

from exporter.schema.model import Column, Constraint, ConstraintKind, Index, Schema, Table


class ParseError(ValueError):
    """A schema.prisma that cannot be read (or cannot be turned into tables)."""

    def __init__(self, message: str, line: int):
        super().__init__(f"line {line}: {message}")
        self.message = message
        self.line = line


# -- the AST ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Str:
    """A quoted string literal (escapes decoded)."""

    value: str


@dataclass(frozen=True)
class Call:
    """`name(args)`: a function such as now() or env("X"), or a field with options: a(sort: Desc)."""

    name: str
    args: tuple[Arg, ...] = ()


# A value is a quoted string, a bare word (identifier, number, true/false, enum value),
# a call, or a list (tuple) of values.
Value = Str | str | Call | tuple[Any, ...]


@dataclass(frozen=True)
class Arg:
    name: str | None  # None for a positional argument
    value: Value


@dataclass(frozen=True)
class Attribute:
    name: str  # without the @ / @@: "id", "unique", "db.VarChar", "map"
    args: tuple[Arg, ...]
    line: int

    def arg(self, name: str, position: int | None = None) -> Value | None:
        """The value of argument `name`, or of the positional argument at `position`."""
        positional = [a.value for a in self.args if a.name is None]
        for a in self.args:
            if a.name == name:
                return a.value
        if position is not None and position < len(positional):
            return positional[position]
        return None


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # "String", "Post", or "Unsupported" (then unsupported holds the database type)
    optional: bool
    list: bool
    attributes: tuple[Attribute, ...]
    line: int
    unsupported: str | None = None

    def attribute(self, name: str) -> Attribute | None:
        return next((a for a in self.attributes if a.name == name), None)


@dataclass(frozen=True)
class Model:
    """A `model`, `view` or composite `type` block (kind says which)."""

    kind: str
    name: str
    fields: tuple[Field, ...]
    attributes: tuple[Attribute, ...]  # block attributes (@@...)
    line: int

    def attribute(self, name: str) -> Attribute | None:
        return next((a for a in self.attributes if a.name == name), None)

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


@dataclass(frozen=True)
class EnumValue:
    name: str
    attributes: tuple[Attribute, ...]
    line: int

    def attribute(self, name: str) -> Attribute | None:
        return next((a for a in self.attributes if a.name == name), None)


@dataclass(frozen=True)
class Enum:
    name: str
    values: tuple[EnumValue, ...]
    attributes: tuple[Attribute, ...]
    line: int

    def attribute(self, name: str) -> Attribute | None:
        return next((a for a in self.attributes if a.name == name), None)


@dataclass(frozen=True)
class ConfigBlock:
    """A `datasource` or `generator` block: `key = value` lines."""

    kind: str
    name: str
    entries: tuple[tuple[str, Value], ...]
    line: int

    def get(self, key: str) -> Value | None:
        return next((v for k, v in self.entries if k == key), None)


@dataclass(frozen=True)
class PrismaSchema:
    models: tuple[Model, ...] = ()
    enums: tuple[Enum, ...] = ()
    views: tuple[Model, ...] = ()
    types: tuple[Model, ...] = ()  # composite types (MongoDB only; recorded, never tables)
    config: tuple[ConfigBlock, ...] = ()

    def model(self, name: str) -> Model | None:
        return next((m for m in self.models if m.name == name), None)


# -- tokens -----------------------------------------------------------------------------------

# Blanks and comments are skipped by the pattern itself; `error` catches anything else.
_TOKEN = re.compile(
    r"""
    (?:[ \t\r\f\v\ufeff]+|//[^\n]*)*
    (?:
      (?P<newline>\n)
    | (?P<string>"(?:[^"\\\n]|\\[^\n])*")
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*)
    | (?P<punct>@@|[@{}()\[\],:=?])
    | (?P<error>.)
    | (?P<end>\Z)
    )
    """,
    re.X | re.S,
)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "/": "/", "'": "'", "0": "\0"}
_MAX_NESTING = 32  # lists/calls nested deeper than this are junk, not a schema


class _Token(NamedTuple):
    kind: str  # newline, string, number, name, punct, end
    text: str
    line: int


def _tokenize(text: str) -> list[_Token]:
    """Tokens with line numbers; comments and blanks dropped, line ends kept (they end a field)."""
    tokens, line = [], 1
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "error"  # every alternative of _TOKEN is a named group
        value = match.group(kind)
        if kind == "error":
            if value == '"':
                raise ParseError("unterminated string", line)
            raise ParseError(f"unexpected character {value!r}", line)
        tokens.append(_Token(kind, value, line))
        if kind == "end":
            return tokens
        if kind == "newline":
            line += 1
    raise AssertionError("the pattern always ends with an end token")


def _decode_string(raw: str, line: int) -> str:
    out, chars, i = [], raw[1:-1], 0
    while i < len(chars):
        ch = chars[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = chars[i + 1]
        if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", chars[i + 2 : i + 6]):
            out.append(chr(int(chars[i + 2 : i + 6], 16)))
            i += 6
            continue
        if nxt not in _ESCAPES:
            raise ParseError(f"unknown escape \\{nxt} in string", line)
        out.append(_ESCAPES[nxt])
        i += 2
    return "".join(out)


# -- the parser -------------------------------------------------------------------------------

_BLOCKS = ("model", "view", "type", "enum", "datasource", "generator")


class _Parser:
    def __init__(self, text: str):
        self.tokens = _tokenize(text)
        self.pos = 0
        self.tok = self.tokens[0]  # the current token

    # token helpers
    def next(self) -> _Token:
        tok = self.tok
        if tok.kind != "end":
            self.pos += 1
            self.tok = self.tokens[self.pos]
        return tok

    def at(self, text: str) -> bool:
        # Punctuation only: string tokens keep their quotes, so they never equal it.
        return self.tok.text == text

    def expect(self, text: str, what: str) -> _Token:
        if not self.at(text) and self.tok.kind == "newline" and text in ",)]":
            raise ParseError("line break inside attribute arguments (Prisma wants them on one line)", self.tok.line)
        if not self.at(text):
            raise ParseError(f"expected {what}, found {self._describe(self.tok)}", self.tok.line)
        return self.next()

    def expect_name(self, what: str) -> str:
        if self.tok.kind != "name":
            raise ParseError(f"expected {what}, found {self._describe(self.tok)}", self.tok.line)
        return self.next().text

    def end_of_line(self, what: str) -> None:
        if self.tok.kind not in ("newline", "end"):
            raise ParseError(f"unexpected {self._describe(self.tok)} after {what}", self.tok.line)
        self.skip_newlines()

    def skip_newlines(self) -> None:
        while self.tok.kind == "newline":
            self.next()

    @staticmethod
    def _describe(tok: _Token) -> str:
        return {"newline": "end of line", "end": "end of file"}.get(tok.kind, repr(tok.text))

    # grammar
    def schema(self) -> PrismaSchema:
        parts: dict[str, list[Any]] = {k: [] for k in ("model", "view", "type", "enum", "config")}
        self.skip_newlines()
        while self.tok.kind != "end":
            keyword = self.tok
            if keyword.kind != "name" or keyword.text not in _BLOCKS:
                raise ParseError(
                    f"expected a block ({', '.join(_BLOCKS)}), found {self._describe(keyword)}", keyword.line
                )
            self.next()
            name = self.expect_name(f"a name for the {keyword.text} block")
            self.expect("{", "'{'")
            self.end_of_line("'{'")  # Prisma wants each member on its own line
            if keyword.text in ("model", "view", "type"):
                parts[keyword.text].append(self.model_body(keyword.text, name, keyword.line))
            elif keyword.text == "enum":
                parts["enum"].append(self.enum_body(name, keyword.line))
            else:
                parts["config"].append(self.config_body(keyword.text, name, keyword.line))
            self.skip_newlines()  # Prisma lets the next block start on the line of '}'

        return PrismaSchema(
            models=tuple(parts["model"]),
            enums=tuple(parts["enum"]),
            views=tuple(parts["view"]),
            types=tuple(parts["type"]),
            config=tuple(parts["config"]),
        )

    def model_body(self, kind: str, name: str, line: int) -> Model:
        fields, attributes = [], []
        while not self.at("}"):
            if self.at("@@"):
                attributes.append(self.attribute("@@"))
                self.end_of_line("a block attribute")
            elif self.tok.kind == "name":
                fields.append(self.field())
                self.end_of_line("a field")
            else:
                raise ParseError(f"expected a field, '@@' or '}}', found {self._describe(self.tok)}", self.tok.line)
        self.next()
        return Model(kind, name, tuple(fields), tuple(attributes), line)

    def field(self) -> Field:
        line = self.tok.line
        name = self.next().text
        if not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise ParseError(f"invalid field name {name!r}", line)
        type_name = self.expect_name(f"a type for field {name!r}")
        unsupported = None
        if self.at("("):  # Unsupported("circle")
            args = self.args()
            if type_name != "Unsupported" or len(args) != 1 or not isinstance(args[0].value, Str):
                raise ParseError(f'only Unsupported("...") takes arguments as a type, not {type_name}', line)
            unsupported = args[0].value.value
        is_list = optional = False
        if self.at("["):
            self.next()
            self.expect("]", "']' of a list type")
            is_list = True
        if self.at("?"):
            if is_list:
                raise ParseError(f"field {name!r}: optional lists are not supported", line)
            self.next()
            optional = True
        attributes = []
        while self.at("@"):
            attributes.append(self.attribute("@"))
        return Field(name, type_name, optional, is_list, tuple(attributes), line, unsupported)

    def attribute(self, prefix: str) -> Attribute:
        line = self.expect(prefix, prefix).line
        name = self.expect_name(f"an attribute name after {prefix}")  # may be dotted: db.VarChar
        args = self.args() if self.at("(") else ()
        return Attribute(name, args, line)

    def args(self, depth: int = 0) -> tuple[Arg, ...]:
        self.expect("(", "'('")
        args = []
        while not self.at(")"):
            named = self.tok.kind == "name" and self.tokens[self.pos + 1].text == ":"
            arg_name = None
            if named:
                arg_name = self.next().text
                self.next()
            args.append(Arg(arg_name, self.value(depth + 1)))
            self.separator(")")
        self.next()
        return tuple(args)

    def separator(self, closing: str) -> None:
        """After an argument or list item: a ',' before the next one, or the closing bracket.
        Prisma accepts neither a trailing comma nor a line break inside the brackets."""
        if self.at(closing):
            return
        self.expect(",", f"',' or '{closing}'")
        if self.at(closing):
            raise ParseError(f"trailing comma before '{closing}'", self.tok.line)

    def value(self, depth: int) -> Value:
        if depth > _MAX_NESTING:
            raise ParseError("arguments nested too deeply", self.tok.line)
        tok = self.tok
        if tok.kind == "string":
            self.next()
            return Str(_decode_string(tok.text, tok.line))
        if tok.kind == "number":
            self.next()
            return tok.text
        if tok.kind == "name":
            self.next()
            return Call(tok.text, self.args(depth)) if self.at("(") else tok.text
        if self.at("["):
            self.next()
            items = []
            while not self.at("]"):
                items.append(self.value(depth + 1))
                self.separator("]")
            self.next()
            return tuple(items)
        if tok.kind == "newline":
            raise ParseError("line break inside attribute arguments (Prisma wants them on one line)", tok.line)
        raise ParseError(f"expected a value, found {self._describe(tok)}", tok.line)

    def enum_body(self, name: str, line: int) -> Enum:
        values, attributes = [], []
        while not self.at("}"):
            if self.at("@@"):
                attributes.append(self.attribute("@@"))
            else:
                value_line = self.tok.line
                value_name = self.expect_name("an enum value, '@@' or '}'")
                value_attributes = []
                while self.at("@"):
                    value_attributes.append(self.attribute("@"))
                values.append(EnumValue(value_name, tuple(value_attributes), value_line))
            self.end_of_line("an enum value")
        self.next()
        return Enum(name, tuple(values), tuple(attributes), line)

    def config_body(self, kind: str, name: str, line: int) -> ConfigBlock:
        entries = []
        while not self.at("}"):
            key = self.expect_name("a setting name or '}'")
            self.expect("=", "'='")
            entries.append((key, self.value(0)))
            self.end_of_line("a setting")
        self.next()
        return ConfigBlock(kind, name, tuple(entries), line)


def parse_prisma_schema(text: str) -> PrismaSchema:
    """Read the Prisma schema language. Raises ParseError with a line number."""
    return _Parser(text).schema()


# -- to_schema: what prisma migrate creates on PostgreSQL -------------------------------------

_SCALAR_TYPES = {
    "String": "text",
    "Int": "integer",
    "BigInt": "bigint",
    "Float": "double precision",
    "Decimal": "numeric(65,30)",
    "Boolean": "boolean",
    "DateTime": "timestamp(3) without time zone",
    "Json": "jsonb",
    "Bytes": "bytea",
}

# @db.X native types -> format_type() text: (name without args, name with args as a template).
_NATIVE_TYPES = {
    "Text": ("text", None),
    "VarChar": ("character varying", "character varying({})"),
    "Char": ("character(1)", "character({})"),
    "Uuid": ("uuid", None),
    "Xml": ("xml", None),
    "Inet": ("inet", None),
    "Citext": ("citext", None),
    "Bit": ("bit(1)", "bit({})"),
    "VarBit": ("bit varying", "bit varying({})"),
    "Integer": ("integer", None),
    "SmallInt": ("smallint", None),
    "BigInt": ("bigint", None),
    "Oid": ("oid", None),
    "DoublePrecision": ("double precision", None),
    "Real": ("real", None),
    "Decimal": ("numeric", "numeric({})"),
    "Money": ("money", None),
    "Timestamp": ("timestamp without time zone", "timestamp({}) without time zone"),
    "Timestamptz": ("timestamp with time zone", "timestamp({}) with time zone"),
    "Date": ("date", None),
    "Time": ("time without time zone", "time({}) without time zone"),
    "Timetz": ("time with time zone", "time({}) with time zone"),
    "Boolean": ("boolean", None),
    "Json": ("json", None),
    "JsonB": ("jsonb", None),
    "ByteA": ("bytea", None),
}

_ACTIONS = {
    "Cascade": "CASCADE",
    "Restrict": "RESTRICT",
    "NoAction": "NO ACTION",
    "SetNull": "SET NULL",
    "SetDefault": "SET DEFAULT",
}
_INDEX_METHODS = {"BTree": "btree", "Hash": "hash", "Gist": "gist", "Gin": "gin", "SpGist": "spgist", "Brin": "brin"}
_NO_DATABASE_DEFAULT = {"cuid", "uuid", "nanoid", "ulid", "auto"}  # filled in by the client
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1

# Words PostgreSQL's quote_ident() quotes even when lower case (all but its unreserved keywords).
_KEYWORDS = frozenset(
    """all analyse analyze and any array as asc asymmetric both case cast check collate column
    constraint create current_catalog current_date current_role current_time current_timestamp
    current_user default deferrable desc distinct do else end except false fetch for foreign from
    grant group having in initially intersect into lateral leading limit localtime localtimestamp
    not null offset on only or order placing primary references returning select session_user
    some symmetric system_user table then to trailing true union unique user using variadic when
    where window with authorization binary collation concurrently cross current_schema freeze full
    ilike inner is isnull join left like natural notnull outer overlaps right similar tablesample
    verbose between bigint bit boolean char character coalesce dec decimal exists extract float
    greatest grouping inout int integer interval least national nchar none normalize nullif
    numeric out overlay position precision real row setof smallint substring time timestamp treat
    trim values varchar xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces
    xmlparse xmlpi xmlroot xmlserialize xmltable""".split()
)


def quote_ident(name: str) -> str:
    """An identifier as PostgreSQL prints it (format_type, pg_get_constraintdef)."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def _truncate(name: str, limit: int) -> str:
    """Cut to `limit` bytes of UTF-8 without splitting a character."""
    data = name.encode()
    if len(data) <= limit:
        return name
    return data[:limit].decode("utf-8", "ignore")


def prisma_constraint_name(table: str, columns: tuple[str, ...], suffix: str) -> str:
    """Prisma's default name: {table}_{cols}_{suffix} ("pkey" takes no columns), the front cut
    so the whole fits PostgreSQL's 63 bytes (prisma-engines ConstraintNames)."""
    stem = "_".join((table, *columns))
    return _truncate(stem, MAX_IDENTIFIER_BYTES - len(suffix) - 1) + "_" + suffix


def _serial_sequence(table: str, column: str) -> str:
    """The sequence PostgreSQL creates for a SERIAL column (makeObjectName: the longer of the
    two names loses characters first). A name clash would add a digit: defaults using it are
    compared loosely by drift."""
    table_chars, column_chars = len(table.encode()), len(column.encode())
    available = MAX_IDENTIFIER_BYTES - len("_seq") - 1
    while table_chars + column_chars > available:
        if table_chars > column_chars:
            table_chars -= 1
        else:
            column_chars -= 1
    return f"{_truncate(table, table_chars)}_{_truncate(column, column_chars)}_seq"


def _string_arg(attribute: Attribute | None, name: str, position: int | None = 0) -> str | None:
    if attribute is None:
        return None
    value = attribute.arg(name, position)
    if value is None:
        return None
    if not isinstance(value, Str):
        raise ParseError(f"@{attribute.name}: {name} must be a string", attribute.line)
    return value.value


def _name_list(attribute: Attribute, name: str, position: int | None = 0) -> tuple[str, ...]:
    """Field names of a `fields: [a, b(sort: Desc)]` argument."""
    value = attribute.arg(name, position)
    if value is None:
        return ()
    if not isinstance(value, tuple):
        value = (value,)
    names = []
    for item in value:
        if isinstance(item, Call):
            item = item.name
        if not isinstance(item, str) or not re.fullmatch(r"[A-Za-z_][\w-]*", item):
            raise ParseError(f"@{attribute.name}: {name} must be a list of field names", attribute.line)
        names.append(item)
    return tuple(names)


class _Context:
    """Lookups shared by the derivation: models, enums and their database names."""

    def __init__(self, parsed: PrismaSchema):
        self.models = {m.name: m for m in parsed.models}
        self.enums = {e.name: e for e in parsed.enums}
        datasource = next((c for c in parsed.config if c.kind == "datasource"), None)
        mode = datasource and (datasource.get("relationMode") or datasource.get("referentialIntegrity"))
        # relationMode = "prisma": relations are emulated by the client, no foreign keys exist.
        self.foreign_keys = not (isinstance(mode, Str) and mode.value == "prisma")

    def table_name(self, model: Model) -> str:
        return _string_arg(model.attribute("map"), "name") or model.name

    def enum_name(self, enum: Enum) -> str:
        return _string_arg(enum.attribute("map"), "name") or enum.name

    def enum_value(self, value: EnumValue) -> str:
        return _string_arg(value.attribute("map"), "name") or value.name

    def column_name(self, field: Field) -> str:
        return _string_arg(field.attribute("map"), "name") or field.name

    def scalar_field(self, model: Model, name: str, line: int) -> Field:
        field = model.field(name)
        if field is None or field.type in self.models:
            raise ParseError(f"model {model.name} has no scalar field {name!r}", line)
        return field

    def columns(self, model: Model, names: tuple[str, ...], line: int) -> tuple[str, ...]:
        return tuple(self.column_name(self.scalar_field(model, n, line)) for n in names)

    def column_type(self, field: Field) -> str:
        native = next((a for a in field.attributes if a.name.startswith("db.")), None)
        if field.type == "Unsupported":
            base = field.unsupported or ""
        elif native is not None:
            base = _native_type(native)
        elif field.type in _SCALAR_TYPES:
            base = _SCALAR_TYPES[field.type]
        elif field.type in self.enums:
            base = quote_ident(self.enum_name(self.enums[field.type]))
        else:
            raise ParseError(f"field {field.name!r}: unknown type {field.type!r}", field.line)
        return base + "[]" if field.list else base


def _native_type(attribute: Attribute) -> str:
    name = attribute.name[len("db.") :]
    if name not in _NATIVE_TYPES:
        raise ParseError(f"unknown native type @{attribute.name}", attribute.line)
    plain, template = _NATIVE_TYPES[name]
    numbers = [a.value for a in attribute.args if isinstance(a.value, str)]
    if not attribute.args:
        return plain
    if template is None or len(numbers) != len(attribute.args) or not all(n.isdigit() for n in numbers):
        raise ParseError(f"@{attribute.name}: unexpected arguments", attribute.line)
    if name == "Decimal" and len(numbers) == 1:
        numbers.append("0")  # numeric(p) is numeric(p,0)
    return template.format(",".join(numbers))


def _literal(text: str, pg_type: str) -> str:
    """A quoted literal with the cast pg_get_expr() prints for a column of pg_type: the type
    without its length or precision, char(n) shown by its internal name bpchar."""
    cast = re.sub(r"\(\d+(?:,\d+)?\)", "", pg_type)
    if cast == "character":
        cast = "bpchar"
    return "'" + text.replace("'", "''") + "'::" + cast


def _number_default(text: str, pg_type: str) -> str:
    """How PostgreSQL prints a numeric default: plain when non-negative, else quoted with the
    type of the literal (a negative integer stays an integer literal even for bigint)."""
    if not re.fullmatch(r"-?\d+(\.\d+)?([eE][+-]?\d+)?", text):
        return text
    integer = re.fullmatch(r"-?\d+", text) is not None
    if integer and not -(2**31) <= int(text) < 2**31:
        return f"'{text}'::bigint"
    if not text.startswith("-"):
        return text
    return f"'{text}'::integer" if integer else f"'{text}'::numeric"


def _default(ctx: _Context, table: str, column: str, field: Field, pg_type: str) -> str | None:
    """pg_get_expr() text of the column default Prisma Migrate creates, or None."""
    if field.attribute("updatedAt"):
        return None
    attribute = field.attribute("default")
    if attribute is None:
        return None
    value = attribute.arg("value", 0)
    if isinstance(value, Call):
        if value.name == "autoincrement":
            return f"nextval('{quote_ident(_serial_sequence(table, column))}'::regclass)"
        if value.name == "now":
            return "CURRENT_TIMESTAMP"
        if value.name == "dbgenerated":
            expression = value.args[0].value if value.args else None
            return expression.value if isinstance(expression, Str) else None
        if value.name in _NO_DATABASE_DEFAULT:
            return None
        raise ParseError(f"@default: unknown function {value.name}()", attribute.line)
    if isinstance(value, tuple):  # scalar list default: ARRAY['a'::text, 'b'::text]
        element_type = pg_type[: -len("[]")]
        items = [_scalar_default(ctx, field, v, element_type, attribute.line) for v in value]
        return f"ARRAY[{', '.join(items)}]" if items else f"ARRAY[]::{pg_type}"
    if value is None:
        raise ParseError("@default needs a value", attribute.line)
    return _scalar_default(ctx, field, value, pg_type, attribute.line)


def _scalar_default(ctx: _Context, field: Field, value: Value, pg_type: str, line: int) -> str:
    if field.type in ctx.enums:
        enum = ctx.enums[field.type]
        match = next((v for v in enum.values if v.name == value), None)
        if match is None:
            raise ParseError(f"@default: {value!r} is not a value of enum {enum.name}", line)
        return f"'{ctx.enum_value(match)}'::{quote_ident(ctx.enum_name(enum))}"
    if isinstance(value, Str):
        return _literal(value.value, pg_type)
    if value in ("true", "false"):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?([eE][+-]?\d+)?", value):
        return _number_default(value, pg_type)
    raise ParseError(f"@default: unsupported value {value!r}", line)


def _fk_definition(columns: tuple[str, ...], ref_table: str, ref_columns: tuple[str, ...],
                   on_delete: str, on_update: str) -> str:
    """pg_get_constraintdef() text of a foreign key (NO ACTION is not printed)."""
    text = "FOREIGN KEY ({}) REFERENCES {}({})".format(
        ", ".join(map(quote_ident, columns)), quote_ident(ref_table), ", ".join(map(quote_ident, ref_columns))
    )
    if on_update != "NO ACTION":
        text += f" ON UPDATE {on_update}"
    if on_delete != "NO ACTION":
        text += f" ON DELETE {on_delete}"
    return text


def _primary_key(table: str, columns: tuple[str, ...], name: str | None) -> tuple[Index, Constraint]:
    name = name or prisma_constraint_name(table, (), "pkey")
    definition = f"PRIMARY KEY ({', '.join(map(quote_ident, columns))})"
    return (
        Index(name, table, columns, unique=True, primary=True),
        Constraint(name, table, ConstraintKind.PRIMARY_KEY, columns, definition),
    )


def _in_namespace(block: Model | Enum, namespace: str) -> bool:
    """multiSchema: a block with @@schema("x") lives in namespace x, the others in the default one."""
    schema = _string_arg(block.attribute("schema"), "name")
    return (schema or namespace) == namespace


def to_schema(parsed: PrismaSchema, namespace: str = "public") -> Schema:
    """The PostgreSQL structure `prisma migrate` creates for a parsed schema.prisma.

    Written as `catalog.introspect` reads it back: primary keys are a constraint plus their
    index, @unique/@@unique are unique indexes (Prisma creates no UNIQUE constraint), foreign
    keys are constraints only, autoincrement() is the nextval() default of a SERIAL column.
    Raises ParseError when the schema refers to things it does not define.
    """
    ctx = _Context(parsed)
    built = _Built()
    models = [m for m in parsed.models if _in_namespace(m, namespace)]
    for model in models:
        table = ctx.table_name(model)
        built.tables[table] = Table(table, _columns(ctx, model, table, built))
        _block_attributes(ctx, model, table, built)
        if ctx.foreign_keys:
            for field in model.fields:
                foreign_key = _foreign_key(ctx, model, table, field)
                if foreign_key is not None:
                    built.add_constraint(foreign_key)

    for join_table, join_indexes, join_constraints, line in _implicit_many_to_many(ctx, models):
        built.tables[join_table.name] = join_table
        for index in join_indexes:
            built.add_index(index, line)
        for constraint in join_constraints:
            built.add_constraint(constraint)

    enums = {
        ctx.enum_name(e): tuple(ctx.enum_value(v) for v in e.values)
        for e in parsed.enums
        if _in_namespace(e, namespace)
    }
    return Schema(built.tables, built.indexes, built.constraints, enums)



class _Built:
    """The tables, indexes and constraints of a schema being built; index names are unique."""

    def __init__(self) -> None:
        self.tables: dict[str, Table] = {}
        self.indexes: dict[str, Index] = {}
        self.constraints: dict[tuple[str, str], Constraint] = {}

    def add_index(self, index: Index, line: int) -> None:
        if index.name in self.indexes:
            raise ParseError(f"index name {index.name!r} is used twice", line)
        self.indexes[index.name] = index

    def add_constraint(self, constraint: Constraint) -> None:
        self.constraints[(constraint.table, constraint.name)] = constraint

    def add_primary_key(self, table: str, columns: tuple[str, ...], name: str | None, line: int) -> None:
        index, constraint = _primary_key(table, columns, name)
        self.add_index(index, line)
        self.add_constraint(constraint)


def _columns(ctx: _Context, model: Model, table: str, built: _Built) -> dict[str, Column]:
    """The model's scalar fields as columns, with the indexes of their @id and @unique."""
    columns = {}
    for field in model.fields:
        if field.type in ctx.models:
            continue  # a relation field: its scalar fields hold the data
        name = ctx.column_name(field)
        pg_type = ctx.column_type(field)
        # Prisma creates scalar list columns without NOT NULL.
        nullable = field.optional or field.list
        columns[name] = Column(name, pg_type, nullable, _default(ctx, table, name, field, pg_type))
        if field.attribute("id"):
            built.add_primary_key(table, (name,), _string_arg(field.attribute("id"), "map", None), field.line)
        unique = field.attribute("unique")
        if unique:
            index_name = _string_arg(unique, "map", None) or prisma_constraint_name(table, (name,), "key")
            built.add_index(Index(index_name, table, (name,), unique=True), unique.line)
    return columns


def _block_attributes(ctx: _Context, model: Model, table: str, built: _Built) -> None:
    """@@id, @@unique and @@index of a model."""
    for attribute in model.attributes:
        if attribute.name not in ("id", "unique", "index"):
            continue
        cols = ctx.columns(model, _name_list(attribute, "fields"), attribute.line)
        if not cols:
            raise ParseError(f"@@{attribute.name} needs a list of fields", attribute.line)
        map_name = _string_arg(attribute, "map", None)
        if attribute.name == "id":
            built.add_primary_key(table, cols, map_name, attribute.line)
            continue
        unique = attribute.name == "unique"
        name = map_name or prisma_constraint_name(table, cols, "key" if unique else "idx")
        method = attribute.arg("type")
        if method is not None and method not in _INDEX_METHODS:
            raise ParseError(f"@@index: unknown type {method!r}", attribute.line)
        access = _INDEX_METHODS[method] if isinstance(method, str) else "btree"
        built.add_index(Index(name, table, cols, unique, method=access), attribute.line)

def _foreign_key(ctx: _Context, model: Model, table: str, field: Field) -> Constraint | None:
    """The foreign key of a relation field that holds `fields:` / `references:`."""
    relation = field.attribute("relation")
    if field.type not in ctx.models or relation is None or relation.arg("fields") is None:
        return None
    target = ctx.models[field.type]
    own_fields = [ctx.scalar_field(model, n, relation.line) for n in _name_list(relation, "fields", None)]
    ref_columns = ctx.columns(target, _name_list(relation, "references", None), relation.line)
    columns = tuple(ctx.column_name(f) for f in own_fields)
    if not columns or len(columns) != len(ref_columns):
        raise ParseError("@relation: fields and references must have the same length", relation.line)
    # Prisma counts the relation as required when any of its scalar fields is required.
    required = any(not f.optional for f in own_fields) or not field.optional
    on_delete = relation.arg("onDelete") or ("Restrict" if required else "SetNull")
    on_update = relation.arg("onUpdate") or "Cascade"
    if on_delete not in _ACTIONS or on_update not in _ACTIONS:
        raise ParseError("@relation: unknown referential action", relation.line)
    on_delete, on_update = _ACTIONS[on_delete], _ACTIONS[on_update]
    ref_table = ctx.table_name(target)
    name = _string_arg(relation, "map", None) or prisma_constraint_name(table, columns, "fkey")
    return Constraint(
        name=name,
        table=table,
        kind=ConstraintKind.FOREIGN_KEY,
        columns=columns,
        definition=_fk_definition(columns, ref_table, ref_columns, on_delete, on_update),
        ref_table=ref_table,
        ref_columns=ref_columns,
        on_delete=on_delete,
        on_update=on_update,
    )


def _relation_name(field: Field, model: Model) -> str:
    relation = field.attribute("relation")
    explicit = _string_arg(relation, "name") if relation else None
    first, second = sorted((model.name, field.type))
    return explicit or f"{first}To{second}"


JoinTable = tuple[Table, list[Index], list[Constraint]]


def _implicit_many_to_many(
    ctx: _Context, models: list[Model]
) -> Iterator[tuple[Table, list[Index], list[Constraint], int]]:
    """Join tables of implicit many-to-many relations (both sides are lists, no `fields:`).

    Prisma 6+ layout: table `_{relation}` with columns "A" (the model whose name sorts
    first) and "B", primary key `_{relation}_AB_pkey`, index `_{relation}_B_index`, and both
    foreign keys ON DELETE CASCADE ON UPDATE CASCADE.
    """
    seen = set()
    for model in models:
        for field in model.fields:
            if not field.list or field.type not in ctx.models:
                continue
            relation = _relation_name(field, model)
            other = ctx.models[field.type]
            back = [
                f
                for f in other.fields
                if f.type == model.name and _relation_name(f, other) == relation and (f is not field)
            ]
            if not back or not all(f.list for f in back) or relation in seen:
                continue
            seen.add(relation)
            yield *_join_table(ctx, relation, *sorted((model, other), key=lambda m: m.name)), field.line


def _join_table(ctx: _Context, relation: str, model_a: Model, model_b: Model) -> JoinTable:
    name = f"_{relation}"
    columns: dict[str, Column] = {}
    constraints: list[Constraint] = []
    for column, model in (("A", model_a), ("B", model_b)):
        id_field = next((f for f in model.fields if f.attribute("id")), None)
        if id_field is None:
            raise ParseError(f"implicit many-to-many {relation}: model {model.name} needs a single @id", model.line)
        id_column = ctx.column_name(id_field)
        columns[column] = Column(column, ctx.column_type(id_field), False)
        ref_table = ctx.table_name(model)
        constraints.append(
            Constraint(
                name=f"{name}_{column}_fkey",
                table=name,
                kind=ConstraintKind.FOREIGN_KEY,
                columns=(column,),
                definition=_fk_definition((column,), ref_table, (id_column,), "CASCADE", "CASCADE"),
                ref_table=ref_table,
                ref_columns=(id_column,),
                on_delete="CASCADE",
                on_update="CASCADE",
            )
        )
    pk_index, pk = _primary_key(name, ("A", "B"), f"{name}_AB_pkey")
    indexes = [pk_index, Index(f"{name}_B_index", name, ("B",), unique=False)]
    return Table(name, columns), indexes, [pk, *constraints]
