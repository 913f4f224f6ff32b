"""The event metrics: series at 0 from the start, no _created series, bounded labels."""

from __future__ import annotations

import json
import os
import threading

from exporter.config import Config
from exporter.config.events import EventsConfig
from exporter.events import EventPipeline, KnownNames, ingest
from exporter.events.counters import EventCounters
from test_events_support import error_counts, post, scrape, serving

CONFIG = Config.model_validate({
    "databases": [{"name": "venzory", "dsn": "postgresql://localhost/venzory"}],
    "constraints": [
        {"table": "LocationInventory", "name": "check_quantity_non_negative", "kind": "check", "critical": True},
        {"table": "Item", "name": "Item_practiceId_name_key", "kind": "unique", "critical": True},
        {"table": "Item", "name": "Item_practiceId_fkey", "kind": "foreign_key"},
    ],
    "checks": [{"name": "duplicate_item_names", "kind": "duplicate", "table": "Item", "category": "duplicates",
                "severity": "warning", "columns": ["practiceId", "name"],
                "constraint": "Item_practiceId_name_key"}],
    "events": {"known_constraints": ["legacy_check"]},
})


def made_up(n: int, code: str = "P2002") -> str:
    return json.dumps({"err": {"code": code, "meta": {"modelName": f"Model{n}", "driverAdapterError": {
        "cause": {"originalCode": "23505", "constraint": {"index": f"made_up_constraint_{n}"}}}}}})


def test_known_names_from_config():
    known = KnownNames.from_config(CONFIG)
    assert known.constraints == {"check_quantity_non_negative", "Item_practiceId_name_key", "Item_practiceId_fkey",
                                 "legacy_check"}
    assert known.tables == {"LocationInventory", "Item"}
    assert known.critical_constraints == {"check_quantity_non_negative", "Item_practiceId_name_key"}
    assert known.unique_columns == {("Item", ("practiceId", "name")): "Item_practiceId_name_key"}


def test_series_exist_at_zero_from_the_start_without_created_series():
    pipeline = EventPipeline(CONFIG.events, ["venzory"], KnownNames.from_config(CONFIG))
    metrics = scrape(pipeline.collector)
    errors = {tuple(v for _, v in sorted(labels)) for labels in metrics["venzory_db_prisma_errors_total"]}
    # (code, constraint, database, kind, model) in label-name order
    for code in ("P2039", "P2010", "P2004", "unknown"):
        assert (code, "check_quantity_non_negative", "venzory", "check", "LocationInventory") in errors
    assert ("P2002", "Item_practiceId_name_key", "venzory", "unique", "Item") in errors
    assert ("P2003", "none", "venzory", "foreign_key", "none") in errors
    assert not any("Item_practiceId_fkey" in key for key in errors)  # not critical
    assert set(metrics["venzory_db_prisma_errors_total"].values()) == {0}
    assert metrics["venzory_db_events_received_total"] == {(("source", "http"),): 0}
    assert (("reason", "invalid_json"), ("source", "http")) in metrics["venzory_db_events_rejected_total"]
    assert not any(name.endswith("_created") for name in metrics)


def test_exposition_text():
    from prometheus_client import CollectorRegistry, generate_latest

    pipeline = EventPipeline(CONFIG.events, ["venzory"], KnownNames.from_config(CONFIG))
    registry = CollectorRegistry()
    registry.register(pipeline.collector)
    text = generate_latest(registry).decode()
    assert "# TYPE venzory_db_prisma_errors_total counter" in text
    assert ('venzory_db_prisma_errors_total{code="P2039",constraint="check_quantity_non_negative",'
            'database="venzory",kind="check",model="LocationInventory"} 0.0') in text
    assert "_created" not in text


def test_update_known_adds_series_and_names():
    pipeline = EventPipeline(EventsConfig(), ["venzory"], KnownNames())
    before = len(scrape(pipeline.collector)["venzory_db_prisma_errors_total"])
    pipeline.update_known(KnownNames.from_config(CONFIG))
    after = scrape(pipeline.collector)["venzory_db_prisma_errors_total"]
    assert len(after) == before + 5
    with serving(pipeline.wsgi_app) as port:
        post(port, made_up(1).replace("made_up_constraint_1", "Item_practiceId_name_key").replace("Model1", "Item"))
    assert error_counts(pipeline.collector) == {("P2002", "unique", "Item_practiceId_name_key", "Item"): 1}


def test_each_database_keeps_the_names_its_own_schema_knows():
    """Two databases with different schemas: a poll of one does not replace the names the
    other's events are classified with (last writer won before issue 11)."""
    from exporter.schema.model import Index, Schema, Table

    def schema_with(table: str, index: str) -> Schema:
        return Schema(tables={table: Table(table)},
                      indexes={index: Index(index, table, ("gtin",), unique=True)})

    pipeline = EventPipeline(EventsConfig(), ["shop", "warehouse"], KnownNames())
    base = KnownNames.from_config(CONFIG)
    pipeline.learn("shop", base.with_schema(schema_with("Product", "Product_gtin_key")))
    pipeline.learn("warehouse", base.with_schema(schema_with("Pallet", "Pallet_gtin_key")))
    line = made_up(0).replace("made_up_constraint_0", "Product_gtin_key").replace("Model0", "Product")
    with serving(pipeline.wsgi_app) as port:
        for database in ("shop", "warehouse"):
            assert post(port, line, path=f"/events?database={database}")[0] == 200
    assert error_counts(pipeline.collector, "shop") == {("P2002", "unique", "Product_gtin_key", "Product"): 1}
    assert error_counts(pipeline.collector, "warehouse") == {("P2002", "unique", "other", "other"): 1}


def test_concurrent_polls_of_many_databases_lose_no_names():
    """Each scheduler thread learns its own database's names; none overwrites another's."""
    from exporter.schema.model import Schema, Table

    databases = [f"db{i}" for i in range(8)]
    pipeline = EventPipeline(EventsConfig(), databases, KnownNames())

    def poll_results(database: str) -> None:
        for n in range(200):
            pipeline.learn(database, KnownNames().with_schema(Schema(tables={f"{database}_{n}": Table("t")})))

    threads = [threading.Thread(target=poll_results, args=(name,)) for name in databases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {name: pipeline.sink.resolver(name).known.tables for name in databases} == {
        name: frozenset({f"{name}_199"}) for name in databases}


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_100000_made_up_names_keep_series_and_memory_bounded():
    pipeline = EventPipeline(EventsConfig(), ["venzory"], KnownNames.from_config(CONFIG))
    before = len(pipeline.counters.errors())

    def send(port: int, first: int, count: int) -> None:
        for start in range(first, first + count, 5000):
            body = "\n".join(made_up(n) for n in range(start, start + 5000))
            status, answer = post(port, body, headers={"Content-Type": "application/x-ndjson"}, gzipped=True)
            assert (status, answer["accepted"]) == (200, 5000)

    with serving(pipeline.wsgi_app) as port:
        send(port, 0, 50_000)
        baseline = resident_bytes()
        send(port, 50_000, 50_000)  # 50,000 more new names cost no more memory
        grown = resident_bytes() - baseline
    assert len(pipeline.counters.errors()) == before + 1
    assert error_counts(pipeline.collector) == {("P2002", "unique", "other", "other"): 100_000}
    assert grown < 4 * 1024 * 1024


def test_made_up_codes_are_capped_by_max_series():
    counters_cap = 200
    pipeline = EventPipeline(EventsConfig(max_series=counters_cap), ["venzory"], KnownNames())
    lines = [made_up(0, code=f"P{n:04d}") for n in range(10_000)]
    with serving(pipeline.wsgi_app) as port:
        post(port, "\n".join(lines), headers={"Content-Type": "application/x-ndjson"})
    errors = pipeline.counters.errors()
    assert len(errors) <= counters_cap  # the overflow series (one per kind) within the cap
    assert sum(errors.values()) == 10_000


def test_10000_codes_in_one_post_stay_within_the_default_cap():
    # issue 14, item 9: one POST of 10,000 distinct codes left 10,002 series (cap 10,000)
    pipeline = EventPipeline(EventsConfig(), ["venzory"], KnownNames())
    lines = [made_up(n % 7, code=f"P{n:04d}") for n in range(10_000)]
    with serving(pipeline.wsgi_app) as port:
        status, _ = post(port, "\n".join(lines), headers={"Content-Type": "application/x-ndjson"})
    assert status == 200
    errors = pipeline.counters.errors()
    assert len(errors) <= 10_000 and sum(errors.values()) == 10_000


def test_concurrent_merges_and_known_updates_lose_nothing():
    pipeline = EventPipeline(EventsConfig(), ["venzory"], KnownNames())
    known = KnownNames.from_config(CONFIG)
    line = made_up(0).replace("made_up_constraint_0", "Item_practiceId_name_key").replace("Model0", "Item")

    def send():
        with serving(pipeline.wsgi_app) as port:
            for _ in range(20):
                post(port, "\n".join([line] * 50), headers={"Content-Type": "application/x-ndjson"})

    senders = [threading.Thread(target=send) for _ in range(3)]
    for t in senders:
        t.start()
    for _ in range(50):
        pipeline.update_known(known)
        pipeline.update_known(KnownNames())
    for t in senders:
        t.join()
    assert sum(error_counts(pipeline.collector).values()) == 3 * 20 * 50


def test_ingest_summary_is_printable():
    summary = ingest([made_up(1), "GET / 200", "{bad"], KnownNames.from_config(CONFIG))
    text = str(summary)
    assert text.splitlines()[0] == "1 Prisma error in 3 records (1 ignored, 1 rejected)"
    assert "P2002" in text and "rejected: invalid_json 1" in text
    assert summary.as_dict()["errors"] == [{"code": "P2002", "kind": "unique", "constraint": "other",
                                            "model": "other", "count": 1}]


def test_event_counters_alone():
    counters = EventCounters(max_series=100)
    counters.reject_request("http", "unauthorized")
    metrics = scrape(counters)
    assert metrics["venzory_db_events_rejected_total"] == {(("reason", "unauthorized"), ("source", "http")): 1}
    assert metrics["venzory_db_events_received_total"] == {(("source", "http"),): 1}
