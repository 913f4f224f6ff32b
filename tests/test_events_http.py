"""POST /events through a real HTTP server, with real HTTP requests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from exporter.config.events import EventsConfig
from exporter.events import EventPipeline, KnownNames
from test_events_support import error_counts, post, scrape, serving

SAMPLES = Path(__file__).parent / "prisma_app" / "samples"
KNOWN = KnownNames(constraints=frozenset({"Item_practiceId_name_key", "Item_practiceId_fkey",
                                          "check_quantity_non_negative"}),
                   tables=frozenset({"Item", "Location", "LocationInventory"}))
UNIQUE = json.dumps({"level": 50, "msg": "x", "err": {
    "code": "P2002", "meta": {"modelName": "Item", "driverAdapterError": {"cause": {
        "originalCode": "23505", "constraint": {"index": "Item_practiceId_name_key"}}}}}})
APP_LINE = json.dumps({"level": 30, "msg": "request served"})
NDJSON = {"Content-Type": "application/x-ndjson"}


def make(http: dict | None = None, databases=("venzory",), **events) -> EventPipeline:
    config = EventsConfig.model_validate({"http": http or {}, **events})
    return EventPipeline(config, list(databases), KNOWN)


@pytest.fixture
def pipeline():
    return make()


@pytest.fixture
def port(pipeline):
    with serving(pipeline.wsgi_app) as port:
        yield port


def sources(pipeline, metric: str) -> dict:
    return {dict(k).get("reason", dict(k)["source"]): v for k, v in scrape(pipeline.collector).get(metric, {}).items()
            if v}


def test_ndjson_body_counts_each_line(pipeline, port):
    status, answer = post(port, "\n".join([UNIQUE, APP_LINE, UNIQUE]) + "\n", headers=NDJSON)
    assert status == 200
    assert answer == {"accepted": 2, "ignored": 1, "rejected": 0, "rejected_by_reason": {}}
    assert error_counts(pipeline.collector) == {("P2002", "unique", "Item_practiceId_name_key", "Item"): 2}
    assert sources(pipeline, "venzory_db_events_received_total") == {"http": 3}


def test_one_json_object_and_a_json_array(pipeline, port):
    assert post(port, UNIQUE, headers={"Content-Type": "application/json"})[1]["accepted"] == 1
    array = f"[{UNIQUE}, {APP_LINE}, \"prisma:error Unique constraint failed on the constraint: " \
            f"`Item_practiceId_name_key`\", 42]"
    status, answer = post(port, array, headers={"Content-Type": "application/json"})
    assert (status, answer["accepted"], answer["ignored"], answer["rejected_by_reason"]) == \
        (200, 2, 1, {"not_object": 1})


@pytest.mark.parametrize("size", [10, 20_000])  # parsed whole / element by element (over 1 MiB)
def test_arrays_small_and_large(pipeline, port, size):
    status, answer = post(port, "[" + ",\n ".join([UNIQUE, APP_LINE] * size) + "]", gzipped=True)
    assert (status, answer["accepted"], answer["ignored"]) == (200, size, size)


@pytest.mark.parametrize("size", [10, 20_000])
def test_array_broken_part_way_counts_the_elements_before(pipeline, port, size):
    status, answer = post(port, "[" + ",".join([UNIQUE] * size) + ", {broken", gzipped=True)
    assert (status, answer["accepted"], answer["rejected_by_reason"]) == (200, size, {"invalid_json": 1})


def test_ndjson_sent_as_application_json_is_read_line_by_line(port):
    status, answer = post(port, f"{UNIQUE}\n{UNIQUE}\n", headers={"Content-Type": "application/json"})
    assert (status, answer["accepted"]) == (200, 2)


def test_gzip_body(pipeline, port):
    status, answer = post(port, "\n".join([UNIQUE] * 100), headers=NDJSON, gzipped=True)
    assert (status, answer["accepted"]) == (200, 100)


def test_real_prisma_lines_give_the_same_counts_as_the_file(pipeline, port):
    from exporter.events import ingest

    body = (SAMPLES / "prisma7-pino.jsonl").read_bytes()
    expected = ingest(body.splitlines(), KNOWN).counts()
    status, answer = post(port, body, headers=NDJSON, gzipped=True)
    assert status == 200 and answer["rejected"] == 0
    assert error_counts(pipeline.collector) == expected


def test_malformed_lines_are_rejected_one_by_one_and_good_ones_still_count(pipeline, port):
    lines = [UNIQUE, UNIQUE[:40], "not json at all", b"\xff\xfe\x00binary".decode("latin-1"), "[1]", UNIQUE]
    status, answer = post(port, "\n".join(lines).encode("latin-1"), headers=NDJSON)
    assert status == 200
    assert answer["accepted"] == 2
    assert answer["rejected_by_reason"] == {"invalid_json": 2, "invalid_utf8": 1, "not_object": 1}
    assert [e["record"] for e in answer["errors"]] == [2, 3, 4, 5]
    assert sources(pipeline, "venzory_db_events_rejected_total") == {"invalid_json": 2, "invalid_utf8": 1,
                                                                       "not_object": 1}


def test_binary_garbage_alone_is_a_bad_request(port):
    status, answer = post(port, bytes(range(256)) * 10, headers=NDJSON)
    assert status == 400 and answer["accepted"] == 0 and answer["rejected"] >= 1


SECRET = "SECRET-MARKER-9f8e7d"


@pytest.mark.parametrize("body, headers", [
    (f'{{"msg": "{SECRET}"', NDJSON), (SECRET, NDJSON),
    (SECRET, {"Content-Encoding": "gzip"}), (SECRET, {"Content-Encoding": "br"}),
], ids=["broken json", "not json", "not gzip", "unknown encoding"])
def test_error_messages_never_reflect_the_input(port, body, headers):
    status, answer = post(port, body, headers=headers)
    assert status >= 400 or answer["rejected"]
    assert SECRET not in json.dumps(answer)


def test_an_unknown_database_is_not_reflected(port):
    status, answer = post(port, UNIQUE, path=f"/events?database={SECRET}")
    assert status == 400 and SECRET not in json.dumps(answer)


def test_method_other_than_post_is_405(port):
    status, answer = post(port, "", method="GET")
    assert status == 405


def test_body_over_the_limit_is_413_with_the_limit_and_counted():
    pipeline = make({"max_body_bytes": 1000})
    with serving(pipeline.wsgi_app) as port:
        status, answer = post(port, "x" * 5000, headers=NDJSON)
    assert status == 413 and "1000 bytes" in answer["error"]
    assert sources(pipeline, "venzory_db_events_rejected_total") == {"body_too_large": 1}


def test_a_10_mb_line_is_refused_without_losing_the_other_lines():
    pipeline = make({"max_body_bytes": "16MiB"}, max_line_bytes="1MiB")
    big = '{"msg": "' + "a" * (10 * 1024 * 1024) + '"}'
    with serving(pipeline.wsgi_app) as port:
        status, answer = post(port, "\n".join([UNIQUE, big, UNIQUE]), headers=NDJSON)
        assert status == 413 and str(1024 * 1024) in answer["error"]
        assert answer["accepted"] == 2 and answer["rejected_by_reason"] == {"line_too_long": 1}
        # With the default body limit (8 MiB) the same line is refused whole.
    with serving(make().wsgi_app) as port:
        status, answer = post(port, big, headers=NDJSON)
        assert status == 413 and "max_body_bytes" in answer["error"]


def test_gzip_bomb_stops_at_the_decompressed_limit():
    pipeline = make({"max_body_bytes": "1MiB"})
    bomb = gzip.compress(b"\n" * (200 * 1024 * 1024))  # 200 MiB of newlines, ~200 KiB compressed
    assert len(bomb) < 1024 * 1024
    with serving(pipeline.wsgi_app) as port:
        status, answer = post(port, bomb, headers={"Content-Encoding": "gzip", **NDJSON})
    assert status == 413 and str(1024 * 1024) in answer["error"]
    assert sources(pipeline, "venzory_db_events_rejected_total") == {"body_too_large": 1}


def test_invalid_gzip_is_400(pipeline, port):
    status, answer = post(port, b"\x1f\x8b\x08\x00garbage", headers={"Content-Encoding": "gzip"})
    assert status == 400
    assert sources(pipeline, "venzory_db_events_rejected_total") == {"bad_encoding": 1}


def test_token_required_when_configured():
    pipeline = make({"token": "s3cret-token"})
    with serving(pipeline.wsgi_app) as port:
        assert post(port, UNIQUE)[0] == 401
        assert post(port, UNIQUE, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert post(port, UNIQUE, headers={"Authorization": "Bearer s3cret-token-and-more"})[0] == 401
        assert post(port, UNIQUE, headers={"Authorization": "s3cret-token"})[0] == 401
        # A large body (within max_body_bytes, 8 MiB) is drained: the client reads the answer,
        # not a reset. (Beyond the limit the connection is closed after the answer.)
        assert post(port, UNIQUE * 40_000)[0] == 401
        status, answer = post(port, UNIQUE, headers={"Authorization": "Bearer s3cret-token"})
    assert (status, answer["accepted"]) == (200, 1)
    assert sources(pipeline, "venzory_db_events_rejected_total") == {"unauthorized": 5}
    assert error_counts(pipeline.collector) == {("P2002", "unique", "Item_practiceId_name_key", "Item"): 1}


def test_empty_token_means_no_auth():
    pipeline = make({"token": ""})
    with serving(pipeline.wsgi_app) as port:
        assert post(port, UNIQUE)[0] == 200


def test_database_chosen_per_request_when_several_are_configured():
    pipeline = make(databases=("staging", "production"))
    with serving(pipeline.wsgi_app) as port:
        assert post(port, UNIQUE)[0] == 400  # which database? no default
        assert post(port, UNIQUE, path="/events?database=production")[0] == 200
        assert post(port, UNIQUE, path="/events?database=nope")[0] == 400
    assert error_counts(pipeline.collector, "production") == {
        ("P2002", "unique", "Item_practiceId_name_key", "Item"): 1}
    assert error_counts(pipeline.collector, "staging") == {}


def test_missing_content_length_is_411(port):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest("POST", "/events")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    connection.send(b"0\r\n\r\n")
    assert connection.getresponse().status == 411
    connection.close()


def test_disabled_endpoint_is_404():
    pipeline = make({"enabled": False})
    with serving(pipeline.wsgi_app) as port:
        assert post(port, UNIQUE)[0] == 404
    assert "http" not in sources(pipeline, "venzory_db_events_received_total")
