"""Every line shape the app's logs hold -> (code, kind, constraint, model).

The Prisma 7 lines are real: captured from tests/prisma_app/violate.js (a real Prisma
7.10 client with @prisma/adapter-pg on PostgreSQL, logging with pino, with Prisma log
events, and with `log: ['error']` on stdout). The Prisma 5 shapes follow
shared/reference/prisma-facts.md.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from exporter.events import KnownNames, ingest
from exporter.events.classify import NONE, OTHER, Labels, Resolver
from exporter.events.parse import LineParser, Rejected, facts_from_record

SAMPLES = Path(__file__).parent / "prisma_app" / "samples"

KNOWN = KnownNames(
    constraints=frozenset({"Item_practiceId_name_key", "Item_practiceId_fkey", "check_quantity_non_negative",
                           "Supplier_practiceId_name_key", "LocationInventory_itemId_fkey"}),
    tables=frozenset({"Item", "Location", "LocationInventory", "Practice", "Supplier", "Order"}),
    critical_constraints=frozenset({"check_quantity_non_negative"}),
    unique_columns={("Item", ("practiceId", "name")): "Item_practiceId_name_key"},
)


def classify_record(record: dict, known: KnownNames = KNOWN) -> Labels | None:
    facts = facts_from_record(record)
    return None if facts is None else Resolver(known).classify(facts)


def classify_line(line: str, known: KnownNames = KNOWN) -> Labels | None:
    summary = ingest([line], known)
    assert summary.received == 1, summary
    return next(iter(summary.errors), None)


# -- real Prisma 7 lines ---------------------------------------------------------------------------

@pytest.mark.parametrize("style, log", [("pino", "prisma7-pino.jsonl"), ("events", "prisma7-log-events.jsonl"),
                                        ("stdout", "prisma7-stdout.log")])
def test_real_prisma7_logs_are_counted_as_what_the_app_did(style, log):
    expected = Counter((e["code"], e["kind"], e["constraint"], e["model"])
                       for e in json.loads((SAMPLES / f"expected-{style}.json").read_text()))
    with open(SAMPLES / log, "rb") as lines:
        summary = ingest(lines, KNOWN)
    assert summary.counts() == dict(expected)
    assert summary.rejected == {}
    assert summary.ignored > 0  # the app's ordinary lines


def test_check_violation_is_kind_check_whatever_the_code():
    lines = (SAMPLES / "prisma7-pino.jsonl").read_text().splitlines()
    kinds = {}
    for line in lines:
        labels = classify_line(line)
        if labels and labels.constraint == "check_quantity_non_negative":
            kinds[labels.code] = labels.kind
    assert kinds == {"P2039": "check", "P2010": "check"}  # never P2004 from real Prisma


# -- pino: err, another key, the error logged as itself --------------------------------------------

ADAPTER_UNIQUE_META = {
    "driverAdapterError": {"name": "DriverAdapterError", "cause": {
        "originalCode": "23505", "kind": "UniqueConstraintViolation",
        "originalMessage": 'duplicate key value violates unique constraint "Item_practiceId_name_key"',
        "constraint": {"index": "Item_practiceId_name_key"}, "table": "Item"}},
    "modelName": "Item",
}


@pytest.mark.parametrize("key", ["err", "error", "e", "exception"])
def test_error_under_any_usual_key(key):
    record = {"level": 50, "time": 1, "msg": "failed", key: {"code": "P2002", "meta": ADAPTER_UNIQUE_META,
                                                            "clientVersion": "7.10.1"}}
    assert classify_record(record) == ("P2002", "unique", "Item_practiceId_name_key", "Item")


def test_prisma_error_wrapped_as_the_cause_of_an_app_error():
    record = {"level": 50, "err": {"type": "AppError", "message": "could not save",
                                   "cause": {"type": "PrismaClientKnownRequestError", "code": "P2002",
                                             "meta": ADAPTER_UNIQUE_META}}}
    assert classify_record(record) == ("P2002", "unique", "Item_practiceId_name_key", "Item")


def test_fields_merged_at_top_level_by_logger_error_with_the_error_object():
    record = {"level": 50, "msg": "x", "code": "P2003", "clientVersion": "7.10.1",
              "meta": {"modelName": "Item", "driverAdapterError": {"cause": {
                  "originalCode": "23503", "kind": "ForeignKeyConstraintViolation",
                  "constraint": {"index": "Item_practiceId_fkey"}}}}}
    assert classify_record(record) == ("P2003", "foreign_key", "Item_practiceId_fkey", "Item")


def test_older_adapter_reports_fields_with_quotes_kept():
    record = {"err": {"code": "P2002", "meta": {"modelName": "Item", "driverAdapterError": {"cause": {
        "kind": "UniqueConstraintViolation", "constraint": {"fields": ['"practiceId"', '"name"']}}}}}}
    assert classify_record(record) == ("P2002", "unique", "Item_practiceId_name_key", "Item")


# -- Prisma 5 (Rust engine) ------------------------------------------------------------------------

def test_prisma5_unique_gives_columns_mapped_to_the_known_constraint():
    error = {"name": "PrismaClientKnownRequestError", "code": "P2002", "clientVersion": "5.22.0",
             "meta": {"modelName": "Item", "target": ["practiceId", "name"]},
             "message": "\nInvalid `prisma.item.create()` invocation:\n\n\n"
                        "Unique constraint failed on the fields: (`practiceId`,`name`)"}
    assert classify_record({"err": error}) == ("P2002", "unique", "Item_practiceId_name_key", "Item")


def test_prisma5_unique_columns_fall_back_to_prismas_default_name():
    error = {"code": "P2002", "meta": {"modelName": "Supplier", "target": ["practiceId", "name"]}}
    assert classify_record({"error": error}) == ("P2002", "unique", "Supplier_practiceId_name_key", "Supplier")


def test_prisma5_unique_on_unknown_columns_is_other():
    error = {"code": "P2002", "meta": {"modelName": "Item", "target": ["sku"]}}
    assert classify_record({"err": error}) == ("P2002", "unique", OTHER, "Item")


def test_prisma5_foreign_key_field_name_with_index_suffix():
    error = {"code": "P2003", "clientVersion": "5.22.0",
             "meta": {"modelName": "LocationInventory", "field_name": "LocationInventory_itemId_fkey (index)"},
             "message": "\nInvalid `prisma.locationInventory.create()` invocation:\n\n\n"
                        "Foreign key constraint failed on the field: `LocationInventory_itemId_fkey (index)`"}
    assert classify_record({"err": error}) == ("P2003", "foreign_key", "LocationInventory_itemId_fkey",
                                               "LocationInventory")


def test_prisma5_not_null_lists_columns_not_a_constraint():
    error = {"code": "P2011", "meta": {"modelName": "Location", "constraint": ["description"]}}
    assert classify_record({"err": error}) == ("P2011", "not_null", NONE, "Location")


def test_prisma5_check_violation_has_no_code_only_the_message():
    message = (
        "\nInvalid `prisma.locationInventory.update()` invocation:\n\n\n"
        "Error occurred during query execution:\nConnectorError(ConnectorError { user_facing_error: None, "
        'kind: QueryError(PostgresError { code: "23514", message: "new row for relation \\"LocationInventory\\" '
        'violates check constraint \\"check_quantity_non_negative\\"", severity: "ERROR", detail: '
        'Some("Failing row contains (l1, i1, -1, null)."), column: None, hint: None }), transient: false })'
    )
    error = {"type": "PrismaClientUnknownRequestError", "message": message, "clientVersion": "5.22.0"}
    assert classify_record({"level": 50, "err": error, "msg": message}) == (
        "unknown", "check", "check_quantity_non_negative", "LocationInventory")


def test_prisma5_raw_query_meta_holds_sqlstate_and_message():
    error = {"code": "P2010", "meta": {"code": "23514", "message":
             'new row for relation "LocationInventory" violates check constraint "check_quantity_non_negative"'}}
    assert classify_record({"err": error}) == ("P2010", "check", "check_quantity_non_negative", "LocationInventory")


# -- the runbook's example, log events, plain text -------------------------------------------------

RUNBOOK_EXAMPLE = {"error": "PrismaClientKnownRequestError", "code": "P2004",
                   "message": "Check constraint violation: check_quantity_non_negative",
                   "meta": {"constraint": "check_quantity_non_negative"}}


def test_runbook_example_shape():
    assert classify_record(RUNBOOK_EXAMPLE) == ("P2004", "check", "check_quantity_non_negative", NONE)


def test_runbook_example_gets_the_table_of_its_constraint_from_the_shipped_config():
    # issue 14, item 9: it named no model, so it was counted under model="none"; the
    # constraint is an expected one on exactly one table, which is then the model.
    from exporter.config import load_config
    from venzory_fixture import SHIPPED_CONFIG

    known = KnownNames.from_config(load_config(SHIPPED_CONFIG, env={"DATABASE_URL": "postgresql://u@127.0.0.1/db"}))
    assert classify_record(RUNBOOK_EXAMPLE, known) == (
        "P2004", "check", "check_quantity_non_negative", "LocationInventory")
    # check_quantity_positive is on three tables: no guess
    ambiguous = {"code": "P2004", "meta": {"constraint": "check_quantity_positive"}}
    assert classify_record(ambiguous, known) == ("P2004", "check", "check_quantity_positive", NONE)


@pytest.mark.parametrize("scalar", [b"42", b'"a string"', b"true", b"null", b"-1.5e3"])
def test_a_json_scalar_line_is_not_object(scalar):
    # issue 14, item 9: documented as not_object, was counted invalid_json
    outcomes = []
    parser = LineParser(outcomes.append, json_only=True)
    for line in (scalar + b"\n", b"not json at all\n"):
        parser.feed(line)
    parser.flush()
    assert [o.reason for o in outcomes] == ["not_object", "invalid_json"]


def test_p2004_without_any_other_hint_is_check():
    assert classify_record({"code": "P2004", "meta": {}}) == ("P2004", "check", NONE, NONE)


def test_prisma_log_event_of_level_info_is_not_an_error():
    event = {"message": "Starting a postgresql pool with 9 connections.", "target": "quaint::pooled",
             "timestamp": "2025-11-24T10:00:00.000Z"}
    assert facts_from_record(event) is None


def test_single_line_prisma_error_text():
    line = ("2025-11-24T10:00:00Z prisma:error Foreign key constraint violated on the constraint: "
            "`Item_practiceId_fkey`")
    assert classify_line(line) == ("unknown", "foreign_key", "Item_practiceId_fkey", NONE)


def test_multi_line_prisma_error_text_ends_at_the_database_text():
    lines = ["prisma:error ", "Invalid `db.locationInventory.update()` invocation in", "/app/route.ts:9:3", "",
             "  8 const x = 1", "→ 9 await db.locationInventory.update(",
             'Database error. Code: `23514`. Message: `new row for relation "LocationInventory" violates check '
             'constraint "check_quantity_non_negative"`', "GET /api 500 in 3ms"]
    summary = ingest(lines, KNOWN)
    assert summary.counts() == {("unknown", "check", "check_quantity_non_negative", "LocationInventory"): 1}
    # The message's other lines and the app line are ignored; a blank line is no record.
    assert (summary.received, summary.ignored) == (len(lines) - 1, len(lines) - 2)


def test_multi_line_message_closed_by_the_next_record():
    outcomes = []
    parser = LineParser(outcomes.append)
    for line in [b"prisma:error ", b"Invalid `prisma.item.findMany()` invocation:", b'{"level":30,"msg":"ok"}']:
        parser.feed(line)
    errors = [o for o in outcomes if o is not None]
    assert len(errors) == 1 and len(outcomes) == 3


@pytest.mark.parametrize("envelope", ["log", "message"])
def test_shipper_envelope_around_a_pino_line(envelope):
    inner = json.dumps({"level": 50, "err": {"code": "P2002", "meta": ADAPTER_UNIQUE_META}})
    assert classify_record({envelope: inner, "file": "/var/log/app.log", "host": "web-1"}) == (
        "P2002", "unique", "Item_practiceId_name_key", "Item")


def test_shipper_envelope_around_prisma_error_text():
    record = {"message": "prisma:error Unique constraint failed on the constraint: `Item_practiceId_name_key`"}
    assert classify_record(record) == ("unknown", "unique", "Item_practiceId_name_key", NONE)


# -- kinds from codes, SQLSTATEs and texts ---------------------------------------------------------

@pytest.mark.parametrize("error, kind", [
    ({"code": "P2034", "message": "Transaction failed due to a write conflict or a deadlock."}, "write_conflict"),
    ({"code": "P2010", "meta": {"driverAdapterError": {"cause": {"originalCode": "40P01", "kind": "postgres",
                                                                  "originalMessage": "deadlock detected"}}}},
     "write_conflict"),
    ({"code": "P2025", "message": "An operation failed because it depends on one or more records that were "
                                  "required but not found. Record to update not found."}, "record_not_found"),
    ({"code": "P2014", "meta": {"relation_name": "ItemToPractice"}}, "relation"),
    ({"code": "P2039", "meta": {"driverAdapterError": {"cause": {"originalCode": "23503", "kind": "postgres"}}}},
     "foreign_key"),
    ({"code": "P2003", "meta": {"driverAdapterError": {"cause": {"originalCode": "23001"}}}}, "foreign_key"),
    ({"code": "P2002", "meta": {"driverAdapterError": {"cause": {"originalCode": "23514"}}}}, "unique"),
    ({"code": "P2000", "message": "The provided value for the column is too long"}, "other"),
    ({"type": "PrismaClientUnknownRequestError", "message": 'null value in column "name" of relation "Item" '
                                                            "violates not-null constraint"}, "not_null"),
])
def test_kind(error, kind):
    assert classify_record({"err": error}).kind == kind


def test_specific_code_wins_over_sqlstate_and_text():
    record = {"err": {"code": "P2003", "message": "violates check constraint \"check_quantity_non_negative\""}}
    assert classify_record(record).kind == "foreign_key"


# -- what is not a Prisma error --------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    '{"level":30,"time":1,"msg":"request served","route":"/api/items"}',
    '{"level":50,"err":{"type":"TypeError","message":"x is undefined","stack":"TypeError: ..."},"msg":"boom"}',
    '{"level":40,"code":404,"msg":"not found"}',
    '{"level":50,"code":"ECONNRESET","msg":"socket hang up"}',
    "GET /api/items 200 in 12ms",
    "▲ Next.js 14.2.3",
])
def test_ordinary_app_lines_are_ignored(line):
    summary = ingest([line], KNOWN)
    assert (summary.ignored, summary.accepted, summary.rejected) == (1, 0, {})


@pytest.mark.parametrize("line, reason", [
    ('{"level":50,"err":{"code":"P2002","meta":', "invalid_json"),
    ("[1, 2", "invalid_json"),
    ("[1, 2]", "not_object"),
    ('{"msg": "\xff\xfe"}'.encode("latin-1"), "invalid_utf8"),
    (b"\x00\x9f\x92\x96 binary \xc3\x28", "invalid_utf8"),
    ("[" * 100_000 + "]" * 100_000, "invalid_json"),
])
def test_malformed_lines_are_rejected_with_a_reason(line, reason):
    summary = ingest([line], KNOWN)
    assert summary.rejected == {reason: 1}


def test_a_line_over_the_limit_is_rejected():
    summary = ingest(["x" * 2000, '{"level":30}'], KNOWN, max_line_bytes=1000)
    assert summary.rejected == {"line_too_long": 1} and summary.ignored == 1


# -- label bounds ----------------------------------------------------------------------------------

def test_unknown_names_become_other_and_odd_codes_unknown():
    record = {"err": {"name": "PrismaClientKnownRequestError", "code": "P20021", "meta": {
        "modelName": "NoSuchModel", "driverAdapterError": {"cause": {
            "originalCode": "23505", "constraint": {"index": "made_up_name"}}}}}}
    assert classify_record(record) == ("unknown", "unique", OTHER, OTHER)


def test_what_is_kept_of_an_event_is_bounded_in_size():
    resolver = Resolver(KNOWN)
    for n in range(6000):
        huge = {"err": {"code": "P2039", "message": f"{n} violates check constraint " + "x" * 100_000,
                        "meta": {"modelName": "M" * 100_000, "target": ["c" * 1000] * 1000}}}
        facts = facts_from_record(huge)
        assert len(facts.text) <= 1000 and len(facts.model) <= 128 and len(facts.columns) <= 32
        assert resolver.classify(facts).kind == "check"
    assert len(resolver._cache) <= Resolver._CACHE_SIZE


def test_client_accessor_and_model_names_map_to_tables_case_insensitively():
    event = {"message": "\nInvalid `prisma.locationInventory.update()` invocation:\n\n\nRecord to update not found.",
             "target": "locationInventory.update", "timestamp": "2025-11-24T10:00:00.000Z"}
    assert classify_record(event) == ("unknown", "record_not_found", NONE, "LocationInventory")


def test_known_names_from_the_expected_schema():
    from exporter.schema.model import Constraint, Index, Schema, Table

    schema = Schema(
        tables={"Product": Table("Product")},
        indexes={"Product_gtin_key": Index("Product_gtin_key", "Product", ("gtin",), unique=True)},
        constraints={("Product", "Product_pkey"): Constraint("Product_pkey", "Product", "primary_key", ("id",))},
    )
    known = KNOWN.with_schema(schema)
    error = {"code": "P2002", "meta": {"modelName": "Product", "target": ["gtin"]}}
    assert classify_record({"err": error}, known) == ("P2002", "unique", "Product_gtin_key", "Product")
    assert "Product_pkey" in known.constraints and "Item" in known.tables


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30)
    | st.sampled_from(["P2002", "P2004", "P2039", "23514", "PrismaClientKnownRequestError", "prisma:error x"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["err", "error", "e", "code", "meta", "message", "msg", "target", "cause", "name",
                         "driverAdapterError", "constraint", "index", "fields", "modelName", "table",
                         "originalCode", "target", "field_name", "log", "clientVersion"]) | st.text(max_size=8),
        children, max_size=6),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_any_json_is_classified_within_the_bounds(value):
    summary = ingest([json.dumps(value)], KNOWN)
    assert summary.received == 1
    for labels in summary.errors:
        assert labels.constraint in KNOWN.constraints | {NONE, OTHER}
        assert labels.model in KNOWN.tables | {NONE, OTHER}
        assert labels.code == "unknown" or (labels.code[0] == "P" and labels.code[1:].isdigit()
                                            and len(labels.code) == 5)
    assert not any(isinstance(r, Rejected) for r in summary.errors)
