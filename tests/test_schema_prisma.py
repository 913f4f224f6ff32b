"""schema.prisma parser and its translation to the Schema prisma migrate would create.

Two oracles, both real:
- Prisma's own parser (`get_dmmf` of @prisma/prisma-schema-wasm, tests/prisma_oracle): our
  AST must say the same models, fields, ids, uniques, indexes, relations and enums, and
  reject what Prisma rejects (skipped when node or the npm package is missing);
- PostgreSQL: `to_schema` must equal the catalog of a database built by Prisma's migration
  SQL (the fixture's migrations, and Prisma-style DDL for a schema with the odd corners).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from exporter.schema.catalog import introspect
from exporter.schema.diff import FULL_SCOPE, diff_schemas
from exporter.schema.model import ConstraintKind
from exporter.schema.prisma import (
    Call,
    ParseError,
    Str,
    parse_prisma_schema,
    prisma_constraint_name,
    to_schema,
)
from venzory_fixture import SCHEMA_PRISMA, build_database

ORACLE_DIR = Path(__file__).resolve().parent / "prisma_oracle"
ORACLE_INSTALLED = (ORACLE_DIR / "node_modules" / "@prisma" / "prisma-schema-wasm").is_dir()
needs_oracle = pytest.mark.skipif(
    shutil.which("node") is None or not ORACLE_INSTALLED,
    reason="Prisma's own parser is not installed: needs node, then `npm ci` in tests/prisma_oracle",
)

FIXTURE_TEXT = SCHEMA_PRISMA.read_text(encoding="utf-8")

# Odd but valid corners of the language, each checked against Prisma's own parse.
TRICKY = r'''
// leading comment
generator client {
  provider        = "prisma-client-js"
  previewFeatures = ["views"] // trailing comment
}

datasource db {
  provider = "postgresql"
  url      = env("DATABASE_URL")
}

/// doc comment on a model
model User { // comment after the brace
  id        Int      @id @default(autoincrement()) /// doc comment after a field
  email     String   @unique(map: "user_email_uq") @db.VarChar(320)
  // a comment between fields
  nick      String?  @map("nick_name") @default("it's \"quoted\" // not a comment")
  tags      String[] @default(["a", "b"])
  scores    Int[]
  weird     Unsupported("circle")?
  balance   Decimal  @default(-1.5) @db.Decimal(12, 4)
  big       BigInt   @default(-7)
  ratio     Float    @default(2)
  at        DateTime @default(now()) @db.Timestamptz(6)
  day       DateTime? @db.Date
  role      Role     @default(MEMBER)
  meta      Json     @default("{}")
  blob      Bytes?
  uid       String   @default(uuid()) @db.Uuid
  gen       String   @default(dbgenerated("gen_random_uuid()")) @db.Uuid
  active    Boolean  @default(true)
  posts     Post[]   @relation("authored")
  edited    Post[]   @relation(name: "edited")
  profile   Profile?
  followers User[]   @relation("follows")
  following User[]   @relation("follows")
  manager   User?    @relation("reports", fields: [managerId], references: [id], onDelete: NoAction, onUpdate: Restrict)
  managerId Int?
  reports   User[]   @relation("reports")
  groups    Group[]

  @@map("users")
  @@index([nick, active], map: "users_nick_active") // comment after a block attribute
  @@index([meta(ops: JsonbPathOps)], type: Gin)
} model Profile {
  userId Int    @id
  bio    String
  user   User   @relation(fields: [userId], references: [id], onDelete: Cascade)
}

model Post {
  id       String @id @default(cuid())
  authorId Int
  editorId Int?
  author   User   @relation("authored", fields: [authorId], references: [id])
  editor   User?  @relation("edited", fields: [editorId], references: [id])
  slug     String
  lang     String @default("en")

  @@unique([slug, lang], name: "slugLang")
  @@unique(fields: [authorId, slug], map: "post_author_slug")
}

model Group {
  id    String @id
  users User[]
}

model Composite {
  tenant   String
  number   Int
  label    String   @db.Char(3)
  children Child[]

  @@id([tenant, number], name: "tenantNumber", map: "composite_pk")
  @@map("composite_things")
}

model Child {
  id           Int       @id
  parentTenant String    @map("parent_tenant")
  parentNumber Int       @map("parent_number")
  parent       Composite @relation(fields: [parentTenant, parentNumber], references: [tenant, number], map: "child_parent_fk")
}

model AModelWithARatherLongNameToTestTruncationOfNames {
  id                                 Int    @id @default(autoincrement())
  aColumnWithAVeryLongNameIndeed     String
  anotherColumnWithAVeryLongNameToo  String

  @@unique([aColumnWithAVeryLongNameIndeed, anotherColumnWithAVeryLongNameToo])
  @@index([anotherColumnWithAVeryLongNameToo, aColumnWithAVeryLongNameIndeed])
}

enum Role {
  ADMIN  @map("admin")
  MEMBER
  GUEST  // comment
  @@map("user_role")
}

view ActiveUser {
  id    Int    @unique
  email String
}
'''

# What `prisma migrate dev` writes for TRICKY (Prisma 6+: implicit m2m tables get a primary key).
TRICKY_DDL = r'''
CREATE TYPE "user_role" AS ENUM ('admin', 'MEMBER', 'GUEST');
CREATE TABLE "users" (
    "id" SERIAL NOT NULL,
    "email" VARCHAR(320) NOT NULL,
    "nick_name" TEXT DEFAULT 'it''s "quoted" // not a comment',
    "tags" TEXT[] DEFAULT ARRAY['a', 'b']::TEXT[],
    "scores" INTEGER[],
    "weird" circle,
    "balance" DECIMAL(12,4) NOT NULL DEFAULT -1.5,
    "big" BIGINT NOT NULL DEFAULT -7,
    "ratio" DOUBLE PRECISION NOT NULL DEFAULT 2,
    "at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "day" DATE,
    "role" "user_role" NOT NULL DEFAULT 'MEMBER',
    "meta" JSONB NOT NULL DEFAULT '{}',
    "blob" BYTEA,
    "uid" UUID NOT NULL,
    "gen" UUID NOT NULL DEFAULT gen_random_uuid(),
    "active" BOOLEAN NOT NULL DEFAULT true,
    "managerId" INTEGER,
    CONSTRAINT "users_pkey" PRIMARY KEY ("id")
);
CREATE TABLE "Profile" ("userId" INTEGER NOT NULL, "bio" TEXT NOT NULL, CONSTRAINT "Profile_pkey" PRIMARY KEY ("userId"));
CREATE TABLE "Post" (
    "id" TEXT NOT NULL, "authorId" INTEGER NOT NULL, "editorId" INTEGER, "slug" TEXT NOT NULL,
    "lang" TEXT NOT NULL DEFAULT 'en',
    CONSTRAINT "Post_pkey" PRIMARY KEY ("id")
);
CREATE TABLE "Group" ("id" TEXT NOT NULL, CONSTRAINT "Group_pkey" PRIMARY KEY ("id"));
CREATE TABLE "composite_things" (
    "tenant" TEXT NOT NULL, "number" INTEGER NOT NULL, "label" CHAR(3) NOT NULL,
    CONSTRAINT "composite_pk" PRIMARY KEY ("tenant","number")
);
CREATE TABLE "Child" (
    "id" INTEGER NOT NULL, "parent_tenant" TEXT NOT NULL, "parent_number" INTEGER NOT NULL,
    CONSTRAINT "Child_pkey" PRIMARY KEY ("id")
);
CREATE TABLE "AModelWithARatherLongNameToTestTruncationOfNames" (
    "id" SERIAL NOT NULL,
    "aColumnWithAVeryLongNameIndeed" TEXT NOT NULL,
    "anotherColumnWithAVeryLongNameToo" TEXT NOT NULL,
    CONSTRAINT "AModelWithARatherLongNameToTestTruncationOfNames_pkey" PRIMARY KEY ("id")
);
CREATE TABLE "_follows" ("A" INTEGER NOT NULL, "B" INTEGER NOT NULL, CONSTRAINT "_follows_AB_pkey" PRIMARY KEY ("A","B"));
CREATE TABLE "_GroupToUser" ("A" TEXT NOT NULL, "B" INTEGER NOT NULL, CONSTRAINT "_GroupToUser_AB_pkey" PRIMARY KEY ("A","B"));
CREATE UNIQUE INDEX "user_email_uq" ON "users"("email");
CREATE INDEX "users_nick_active" ON "users"("nick_name", "active");
CREATE INDEX "users_meta_idx" ON "users" USING GIN ("meta" jsonb_path_ops);
CREATE UNIQUE INDEX "Post_slug_lang_key" ON "Post"("slug", "lang");
CREATE UNIQUE INDEX "post_author_slug" ON "Post"("authorId", "slug");
CREATE UNIQUE INDEX "AModelWithARatherLongNameToTestTruncationOfNames_aColumnWit_key"
    ON "AModelWithARatherLongNameToTestTruncationOfNames"("aColumnWithAVeryLongNameIndeed", "anotherColumnWithAVeryLongNameToo");
CREATE INDEX "AModelWithARatherLongNameToTestTruncationOfNames_anotherCol_idx"
    ON "AModelWithARatherLongNameToTestTruncationOfNames"("anotherColumnWithAVeryLongNameToo", "aColumnWithAVeryLongNameIndeed");
CREATE INDEX "_follows_B_index" ON "_follows"("B");
CREATE INDEX "_GroupToUser_B_index" ON "_GroupToUser"("B");
ALTER TABLE "users" ADD CONSTRAINT "users_managerId_fkey" FOREIGN KEY ("managerId") REFERENCES "users"("id") ON DELETE NO ACTION ON UPDATE RESTRICT;
ALTER TABLE "Profile" ADD CONSTRAINT "Profile_userId_fkey" FOREIGN KEY ("userId") REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE "Post" ADD CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") REFERENCES "users"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
ALTER TABLE "Post" ADD CONSTRAINT "Post_editorId_fkey" FOREIGN KEY ("editorId") REFERENCES "users"("id") ON DELETE SET NULL ON UPDATE CASCADE;
ALTER TABLE "Child" ADD CONSTRAINT "child_parent_fk" FOREIGN KEY ("parent_tenant", "parent_number") REFERENCES "composite_things"("tenant", "number") ON DELETE RESTRICT ON UPDATE CASCADE;
ALTER TABLE "_follows" ADD CONSTRAINT "_follows_A_fkey" FOREIGN KEY ("A") REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE "_follows" ADD CONSTRAINT "_follows_B_fkey" FOREIGN KEY ("B") REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE "_GroupToUser" ADD CONSTRAINT "_GroupToUser_A_fkey" FOREIGN KEY ("A") REFERENCES "Group"("id") ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE "_GroupToUser" ADD CONSTRAINT "_GroupToUser_B_fkey" FOREIGN KEY ("B") REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE CASCADE;
'''

# Lines Prisma refuses (checked against the oracle): our parser must refuse them too, at that line.
REJECTED = {
    "attribute arguments across lines": ("model A {\n  id Int @id\n  x Int\n  @@index([\n    x\n  ])\n}\n", 4),
    "relation arguments across lines": (
        "model A {\n  id Int @id\n  b B[]\n}\nmodel B {\n  id Int @id\n  aId Int\n"
        "  a A @relation(fields: [aId],\n    references: [id])\n}\n",
        8,
    ),
    "trailing comma": ('model A {\n  id Int @id\n  x String @unique(map: "x", )\n}\n', 3),
    "unterminated string": ('model A {\n  id Int @id\n  x String @default("abc)\n}\n', 3),
    "unknown escape": ('model A {\n  id Int @id\n  x String @default("a\\qb")\n}\n', 3),
    "optional list": ("model A {\n  id Int @id\n  x Int[]?\n}\n", 3),
    "block on one line": ("model A { id Int @id }\n", 1),
    "closing brace after a field": ("model A {\n  id Int @id }\n", 2),
    "brace on the next line": ("model A\n{\n  id Int @id\n}\n", 1),
    "dash in a field name": ("model A {\n  id Int @id\n  x-y String\n}\n", 3),
    "unknown block": ("modle A {\n  id Int @id\n}\n", 1),
    "field without a type": ("model A {\n  id Int @id\n  name\n}\n", 3),
}


# -- the oracle -------------------------------------------------------------------------------


def prisma_dmmf(text: str, tmp_path: Path) -> dict | None:
    """Prisma's parse of `text` (the DMMF datamodel), or None when Prisma rejects it."""
    path = tmp_path / "schema.prisma"
    path.write_text(text, encoding="utf-8")
    run = subprocess.run(
        ["node", str(ORACLE_DIR / "dmmf.js"), str(path)], capture_output=True, text=True, timeout=60
    )
    if run.returncode != 0:
        assert "P1012" in run.stderr, run.stderr  # a validation error, not a broken oracle
        return None
    return json.loads(run.stdout)


def summary_from_dmmf(dmmf: dict) -> dict:
    models = {}
    for model in dmmf["models"]:
        fields = {}
        for f in model["fields"]:
            relation = None
            if f["kind"] == "object":
                relation = (
                    f["relationName"],
                    tuple(f["relationFromFields"]),
                    tuple(f["relationToFields"]),
                    f.get("relationOnDelete"),
                )
            fields[f["name"]] = {
                "kind": f["kind"],
                "type": f["type"],
                "required": f["isRequired"],
                "list": f["isList"],
                "id": f["isId"],
                "unique": f["isUnique"],
                "db_name": f.get("dbName"),
                "default": _dmmf_default(f.get("default")),
                "relation": relation,
            }
        models[model["name"]] = {"db_name": model["dbName"], "fields": fields}
    indexes = sorted(
        (
            i["model"],
            i["type"],
            tuple(f["name"] for f in i["fields"]),
            i.get("dbName"),
            i.get("name"),
            i.get("algorithm"),
        )
        for i in dmmf["indexes"]
    )
    enums = {
        e["name"]: (e["dbName"], tuple((v["name"], v["dbName"]) for v in e["values"])) for e in dmmf["enums"]
    }
    return {"models": models, "indexes": indexes, "enums": enums}


def _dmmf_default(value):
    if isinstance(value, dict):  # a function: {"name": "uuid(4)", "args": [...]}
        return ("fn", value["name"].split("(")[0], tuple(value["args"]))
    if isinstance(value, list):
        return tuple(_dmmf_default(v) for v in value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)) or _is_number(value):
        return float(value)
    return value


def _is_number(text) -> bool:
    try:
        float(text)
        return True
    except (TypeError, ValueError):
        return False


def summary_from_parser(text: str) -> dict:
    """The same facts as summary_from_dmmf, read off our AST."""
    parsed = parse_prisma_schema(text)
    blocks = [*parsed.models, *parsed.views]
    model_names = {m.name for m in blocks}
    enum_names = {e.name for e in parsed.enums}
    models, indexes = {}, []
    for model in blocks:
        fields = {}
        for f in model.fields:
            if f.type == "Unsupported":
                continue  # Prisma leaves unsupported fields out of the DMMF
            kind = "object" if f.type in model_names else "enum" if f.type in enum_names else "scalar"
            fields[f.name] = {
                "kind": kind,
                "type": f.type,
                "required": not f.optional,
                "list": f.list,
                "id": f.attribute("id") is not None,
                "unique": f.attribute("unique") is not None,
                "db_name": _str(f.attribute("map"), "name", 0),
                "default": _our_default(f, kind),
                "relation": _our_relation(model, f) if kind == "object" else None,
            }
            for kind_name, attr in (("id", f.attribute("id")), ("unique", f.attribute("unique"))):
                if attr is not None:
                    indexes.append((model.name, kind_name, (f.name,), _str(attr, "map"), None, None))
        for attr in model.attributes:
            if attr.name in ("id", "unique", "index"):
                names = tuple(v.name if isinstance(v, Call) else v for v in _as_list(attr.arg("fields", 0)))
                algorithm = attr.arg("type")
                kind_name = {"index": "normal"}.get(attr.name, attr.name)
                indexes.append((model.name, kind_name, names, _str(attr, "map"), _str(attr, "name"), algorithm))
        models[model.name] = {"db_name": _str(model.attribute("map"), "name", 0), "fields": fields}
    enums = {
        e.name: (
            _str(e.attribute("map"), "name", 0),
            tuple((v.name, _str(v.attribute("map"), "name", 0)) for v in e.values),
        )
        for e in parsed.enums
    }
    return {"models": models, "indexes": sorted(indexes, key=repr), "enums": enums}


def _str(attribute, name, position=None):
    value = attribute.arg(name, position) if attribute is not None else None
    return value.value if isinstance(value, Str) else None


def _as_list(value):
    return value if isinstance(value, tuple) else (value,)


def _our_relation(model, field):
    relation = field.attribute("relation")
    names = lambda arg: tuple(_as_list(relation.arg(arg))) if relation and relation.arg(arg) else ()  # noqa: E731
    explicit = _str(relation, "name", 0)
    generated = "To".join(sorted((model.name, field.type)))
    return explicit or generated, names("fields"), names("references"), relation.arg("onDelete") if relation else None


def _our_default(field, kind):
    attr = field.attribute("default")
    if attr is None:
        return None
    return _our_value(attr.arg("value", 0), kind)


def _our_value(value, kind):
    if isinstance(value, Call):
        return ("fn", value.name, tuple(a.value.value for a in value.args if isinstance(a.value, Str)))
    if isinstance(value, tuple):
        return tuple(_our_value(v, kind) for v in value)
    if isinstance(value, Str):
        return value.value
    if value in ("true", "false"):
        return value == "true"
    return float(value) if _is_number(value) else value


def _normalized(summary: dict) -> dict:
    summary = dict(summary)
    summary["indexes"] = sorted(summary["indexes"], key=repr)
    return summary


# -- parser vs Prisma's own parser ----------------------------------------------------------


@needs_oracle
@pytest.mark.parametrize("name", ["fixture", "tricky"])
def test_parser_agrees_with_prisma(name, tmp_path):
    text = {"fixture": FIXTURE_TEXT, "tricky": TRICKY}[name]
    dmmf = prisma_dmmf(text, tmp_path)
    assert dmmf is not None, "Prisma rejects the schema under test"
    assert _normalized(summary_from_parser(text)) == _normalized(summary_from_dmmf(dmmf))


@needs_oracle
@pytest.mark.parametrize("case", sorted(REJECTED))
def test_parser_rejects_what_prisma_rejects(case, tmp_path):
    text, line = REJECTED[case]
    assert prisma_dmmf(text, tmp_path) is None, "Prisma accepts it: the table is wrong"
    with pytest.raises(ParseError) as error:
        parse_prisma_schema(text)
    assert error.value.line == line
    assert str(error.value).startswith(f"line {line}: ")


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_parse_errors_name_the_line(case):  # runs without node too
    text, line = REJECTED[case]
    with pytest.raises(ParseError) as error:
        parse_prisma_schema(text)
    assert error.value.line == line


def test_ast_of_a_field_with_comments_and_escapes():
    parsed = parse_prisma_schema(TRICKY)
    user = parsed.model("User")
    nick = user.field("nick")
    assert (nick.type, nick.optional, nick.list) == ("String", True, False)
    assert nick.attribute("default").arg("value", 0) == Str('it\'s "quoted" // not a comment')
    assert user.field("weird").unsupported == "circle"
    assert user.attribute("index").arg("type") is None
    assert [v.name for v in parsed.enums[0].values] == ["ADMIN", "MEMBER", "GUEST"]
    assert [c.kind for c in parsed.config] == ["generator", "datasource"]
    assert parsed.config[1].get("url") == Call("env", (parsed.config[1].get("url").args[0],))
    assert [v.name for v in parsed.views] == ["ActiveUser"]


# -- to_schema vs real databases ----------------------------------------------------------------


def test_to_schema_of_the_fixture_is_what_its_migrations_create(pg_server):
    """The init migration is `prisma migrate dev` output: apart from what schema.prisma cannot
    say (the hand-written CHECK constraints and partial predicates), to_schema must match the
    migrated database exactly - names, types, defaults, foreign key actions, enums."""
    dsn = build_database(pg_server, "prisma_to_schema_fixture", record=False)
    with psycopg.connect(dsn) as conn:
        live = introspect(conn)
    expected = to_schema(parse_prisma_schema(FIXTURE_TEXT))
    items = diff_schemas(expected, live, "schema_prisma", scope=FULL_SCOPE)
    assert {(i.kind, i.object) for i in items if i.kind != "extra_constraint"} == {
        ("index_definition", "Item_practiceId_sku_key"),
        ("index_definition", "Location_practiceId_code_key"),
    }
    extra = [i.object for i in items if i.kind == "extra_constraint"]
    assert len(extra) == 17 and all(o.split(".")[1].startswith("check_") for o in extra)
    assert _defaults(expected) == _defaults(live)


def test_to_schema_of_odd_corners_is_what_prisma_ddl_creates(pg_server):
    dsn = pg_server.create_database("prisma_to_schema_tricky")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TRICKY_DDL)
        live = introspect(conn)
    expected = to_schema(parse_prisma_schema(TRICKY))
    assert diff_schemas(expected, live, "schema_prisma", scope=FULL_SCOPE) == []
    assert _defaults(expected) == _defaults(live)  # exactly as pg_get_expr prints them
    assert {k: c.definition for k, c in expected.constraints.items()} == {
        k: c.definition for k, c in live.constraints.items()
    }  # and constraints as pg_get_constraintdef prints them


def _defaults(schema):
    return {(t.name, c.name): c.default for t in schema.tables.values() for c in t.columns.values()}


def test_what_produces_no_column_and_no_table():
    schema = to_schema(parse_prisma_schema(TRICKY))
    assert "ActiveUser" not in schema.tables  # a view is not created by migrate
    assert "posts" not in schema.tables["users"].columns  # relation fields hold no data
    assert "manager" not in schema.tables["users"].columns
    assert set(schema.tables["Post"].columns) == {"id", "authorId", "editorId", "slug", "lang"}


def test_foreign_key_defaults_follow_the_relation_arity():
    text = """
model Parent {
  id       Int     @id
  required Child[] @relation("required")
  optional Child[] @relation("optional")
  mixed    Child[] @relation("mixed")
}
model Child {
  id         Int     @id
  requiredId Int
  optionalId Int?
  mixedId    Int
  required   Parent  @relation("required", fields: [requiredId], references: [id])
  optional   Parent? @relation("optional", fields: [optionalId], references: [id])
  mixed      Parent? @relation("mixed", fields: [mixedId], references: [id])
}
"""
    constraints = to_schema(parse_prisma_schema(text)).constraints
    actions = {name: (c.on_delete, c.on_update) for (_, name), c in constraints.items() if c.kind == ConstraintKind.FOREIGN_KEY}
    assert actions == {
        "Child_requiredId_fkey": ("RESTRICT", "CASCADE"),
        "Child_optionalId_fkey": ("SET NULL", "CASCADE"),
        # an optional relation over a required field counts as required (prisma-engines)
        "Child_mixedId_fkey": ("RESTRICT", "CASCADE"),
    }


def test_relation_mode_prisma_creates_no_foreign_keys():
    text = """
datasource db {
  provider     = "postgresql"
  url          = env("DATABASE_URL")
  relationMode = "prisma"
}
model A {
  id Int @id
  bs B[]
}
model B {
  id  Int @id
  aId Int
  a   A   @relation(fields: [aId], references: [id])
}
"""
    schema = to_schema(parse_prisma_schema(text))
    assert [c.kind for c in schema.constraints.values()] == [ConstraintKind.PRIMARY_KEY, ConstraintKind.PRIMARY_KEY]


@pytest.mark.parametrize(
    "table, columns, suffix, expected",
    [
        ("Order", ("practiceId", "status", "createdAt"), "idx", "Order_practiceId_status_createdAt_idx"),
        ("Order", (), "pkey", "Order_pkey"),
        ("T" * 70, (), "pkey", "T" * 58 + "_pkey"),
        ("Table", ("c" * 60,), "key", "Table_" + "c" * 53 + "_key"),
        ("Table", ("c" * 60,), "fkey", "Table_" + "c" * 52 + "_fkey"),
        # never splits a character: 62 bytes (Prisma's own String::truncate would panic here)
        ("Tä", ("ö" * 40,), "idx", "Tä_" + "ö" * 27 + "_idx"),
    ],
)
def test_default_names_fit_63_bytes(table, columns, suffix, expected):
    name = prisma_constraint_name(table, columns, suffix)
    assert name == expected
    assert len(name.encode()) <= 63


def test_semantic_errors_are_parse_errors_with_a_line():
    text = "model A {\n  id Int @id\n  x Strin\n}\n"
    with pytest.raises(ParseError) as error:
        to_schema(parse_prisma_schema(text))
    assert error.value.line == 3
    text = "model A {\n  id Int @id\n  @@index([nope])\n}\n"
    with pytest.raises(ParseError) as error:
        to_schema(parse_prisma_schema(text))
    assert error.value.line == 3


# -- junk never crashes the parser ----------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        "model", "enum", "view", "type", "datasource", "generator", "A", "id", "Int", "String", "@id",
        "@@id", "@default(", "@relation(", "fields:", "[", "]", "(", ")", "{", "}", ",", ":", "=", "?",
        "@", "@@", '"x"', '"', "\\", "//", "///", "\n", " ", "1", "-1.5", "@db.VarChar(3)", "@map(",
        "@@map(", "now()", "autoincrement()", "é", "\t", "\r\n",
    ]
)


def _check_never_crashes(text: str) -> None:
    try:
        parsed = parse_prisma_schema(text)
        to_schema(parsed)
    except ParseError as error:
        assert 1 <= error.line <= text.count("\n") + 1
        assert str(error).startswith(f"line {error.line}: ")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_PIECES, max_size=60).map("".join))
def test_junk_from_schema_pieces_gives_a_clean_error(text):
    _check_never_crashes(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_gives_a_clean_error(text):
    _check_never_crashes(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_fixture_schema_gives_a_clean_error(data):
    text = FIXTURE_TEXT
    for _ in range(data.draw(st.integers(1, 3))):
        start = data.draw(st.integers(0, len(text)))
        end = data.draw(st.integers(start, min(len(text), start + 40)))
        text = text[:start] + data.draw(st.sampled_from(["", "(", "}", "\n", '"', "[x,", "@@"])) + text[end:]
    _check_never_crashes(text)


def test_deep_nesting_is_an_error_not_a_crash():
    text = "model A {\n  id Int @id @default(" + "[" * 5000 + "\n}\n"
    with pytest.raises(ParseError):
        parse_prisma_schema(text)
