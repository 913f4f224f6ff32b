"""Core benchmark: what a poll of a large Venzory database costs, against the least it could.

    python bench/core_bench.py [--scale 1.0] [--keep] [--repeat 3] [--gets 1000] [--work-mem 4MB]

Starts its own throwaway PostgreSQL (exporter.pgcluster), builds two databases from the
project's Prisma migrations fixture and fills them with generate_series:

  problems   steps 1-6 (no CHECK / unique guards), the 8 orphan-reference FKs dropped,
             a sprinkling of violations of every check;
  hardened   all 11 migrations (guards present and validated), the same sizes, clean data.

At --scale 1.0: 1,000,000 Item and LocationInventory rows, 500,000 Order and OrderItem
rows, the other tables in proportion (see PER_PRACTICE). Then, in one run, it measures

  1 poll       Poller.poll(full_scan=True) with config/venzory.yaml on `problems`
  2 floor      one sequential count(*) per table the checks read + one count-only GROUP BY
               per duplicate key (no index, no check expression: the least any correct
               method must do)
  3 runbook    every check as its own query (NOT (rule), NOT EXISTS, duplicates listed
               with array_agg(id)), like the runbook's verification
  4 guarded    Poller.poll(full_scan=False) on `hardened` (every check answered from the
               catalog)
  5 /metrics   GET latency of an in-process Daemon, idle and while full polls run,
               from a separate client process (http.client, a fresh connection per GET)
  6 RSS        resident memory of `python -m exporter run` after its first poll

1-3 are interleaved (poll, floor, runbook, poll, floor, ...) so that load from other
processes hits them alike; every figure is the median of --repeat runs, and the 1-minute
load average is recorded next to it. EXPLAIN (ANALYZE, BUFFERS) of every query of the
poll and of the floor is written to bench/out/explain/. Results: a table on stdout and
bench/out/core_bench-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from prometheus_client import generate_latest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from exporter.checks import duplicate as duplicate_kind  # noqa: E402
from exporter.checks.run import table_pass_sql  # noqa: E402
from exporter.checks.shape import ident  # noqa: E402
from exporter.config import DuplicateCheck, OrphanCheck, RowCheck, load_config  # noqa: E402
from exporter.daemon import Daemon  # noqa: E402
from exporter.db import session_options  # noqa: E402
from exporter.migrations.replay import apply_migrations  # noqa: E402
from exporter.pgcluster import free_port, start_cluster  # noqa: E402
from exporter.poll import Poller  # noqa: E402
from exporter.schema.catalog import introspect  # noqa: E402

CONFIG = REPO / "config" / "venzory.yaml"
MIGRATIONS = REPO / "tests" / "fixtures" / "venzory" / "prisma" / "migrations"
STEP_6 = "20251111122948_add_practice_supplier_to_orders_items"
OUT = REPO / "bench" / "out"

TARGETS = {
    "poll_vs_floor_max": 1.3,  # full poll <= 1.3 x floor
    "runbook_vs_poll_min": 2.0,  # runbook's way >= 2 x full poll
    "guarded_poll_ms_max": 50.0,
    "metrics_median_ms_max": 2.0,
    "idle_rss_mb_max": 60.0,
}

# The foreign keys whose absence the orphan checks exist for (dropped on `problems`).
ORPHAN_FKS = [
    ("Order", "Order_createdById_fkey"),
    ("GoodsReceipt", "GoodsReceipt_createdById_fkey"),
    ("StockAdjustment", "StockAdjustment_createdById_fkey"),
    ("InventoryTransfer", "InventoryTransfer_createdById_fkey"),
    ("StockCountSession", "StockCountSession_createdById_fkey"),
    ("OrderTemplate", "OrderTemplate_createdById_fkey"),
    ("Order", "Order_supplierId_fkey"),
    ("Item", "Item_defaultSupplierId_fkey"),
]

# Server settings of the throwaway cluster. shared_buffers holds both databases (about
# 2 GB at scale 1.0 with indexes), so every measurement is warm-cache; work_mem,
# parallelism and JIT stay at PostgreSQL's defaults, as on a stock server.
def server_settings(work_mem: str, shared_buffers: str) -> dict[str, str]:
    return {
        "shared_buffers": shared_buffers,
        "work_mem": work_mem,
        "maintenance_work_mem": "'512MB'",  # index builds of the load and of steps 7-11
        "max_wal_size": "'8GB'",  # no checkpoint storm while loading
        "checkpoint_timeout": "'30min'",
        "autovacuum": "off",  # the load ends with VACUUM (FREEZE, ANALYZE); no vacuum mid-run
        "track_io_timing": "on",
    }


# ----------------------------------------------------------------------------------------
# The data: P practices, each with PER_PRACTICE rows of every table (scale 1.0: P = 1000).
# Row n of a table belongs to practice n % P; "the j-th X of practice p" is X number p + P*j,
# so every reference stays inside its practice and every unique key holds by construction.
# A violation is planted where `n % <prime> = <k>` and the database is not clean.

PER_PRACTICE = {
    "User": 20, "PracticeUser": 20, "Supplier": 20, "GlobalSupplier": 5, "PracticeSupplier": 5,
    "Product": 200, "Location": 20, "Item": 1000, "LocationInventory": 1000,
    "SupplierItem": 500, "SupplierCatalog": 500, "Order": 500, "OrderItem": 500,
    "GoodsReceipt": 200, "GoodsReceiptLine": 400, "InventoryTransfer": 200,
    "StockAdjustment": 300, "StockCountSession": 20, "OrderTemplate": 10,
}


def table_sizes(scale: float) -> tuple[int, dict[str, int]]:
    practices = max(1, round(1000 * scale))
    return practices, {"Practice": practices, **{t: n * practices for t, n in PER_PRACTICE.items()}}


def load_sql(scale: float, clean: bool) -> list[tuple[str, str]]:
    """(table, INSERT ... SELECT FROM generate_series) for every table, in one list."""
    P, N = table_sizes(scale)
    bad = "false" if clean else "true"

    def planted(prime: int, k: int) -> str:
        return f"({bad} AND n % {prime} = {k})"

    def ref(prefix: str, table: str, per: int, shift: str = "0") -> str:
        """The ((n / P + shift) % per)-th row of `table` in row n's practice."""
        return f"pg_temp.vid('{prefix}', n % {P} + {P} * ((n / {P} + {shift}) % {per}))"

    ts = "timestamp '2025-01-01' + n * interval '1 second'"
    series = lambda table: f"FROM generate_series(0, {N[table] - 1}) AS n"  # noqa: E731
    missing_user = f"pg_temp.vid('us', {N['User']} + n)"  # a user id that does not exist
    missing_supplier = f"pg_temp.vid('su', {N['Supplier']} + n)"
    return [
        ("Practice", f"""INSERT INTO "Practice" (id, name, slug, "updatedAt")
            SELECT pg_temp.vid('pr', n), 'Practice ' || n, 'practice-' || n, {ts} {series('Practice')}"""),
        ("User", f"""INSERT INTO "User" (id, email, name, "updatedAt")
            SELECT pg_temp.vid('us', n), 'user' || n || '@example.com', 'User ' || n, {ts} {series('User')}"""),
        ("PracticeUser", f"""INSERT INTO "PracticeUser" (id, "practiceId", "userId", "updatedAt")
            SELECT pg_temp.vid('pu', n), pg_temp.vid('pr', n % {P}), pg_temp.vid('us', n), {ts}
            {series('PracticeUser')}"""),
        ("GlobalSupplier", f"""INSERT INTO "GlobalSupplier" (id, name, "updatedAt")
            SELECT pg_temp.vid('gs', n),
                   'Global supplier ' || CASE WHEN n > 0 AND {planted(499, 17)} THEN n - 1 ELSE n END,
                   {ts} {series('GlobalSupplier')}"""),
        ("PracticeSupplier", f"""INSERT INTO "PracticeSupplier" (id, "practiceId", "globalSupplierId", "updatedAt")
            SELECT pg_temp.vid('ps', n), pg_temp.vid('pr', n % {P}), pg_temp.vid('gs', n), {ts}
            {series('PracticeSupplier')}"""),
        ("Supplier", f"""INSERT INTO "Supplier" (id, "practiceId", name, email, "updatedAt")
            SELECT pg_temp.vid('su', n), pg_temp.vid('pr', n % {P}),
                   'Supplier ' || CASE WHEN n >= {P} AND {planted(997, 13)} THEN n - {P} ELSE n END,
                   'orders' || n || '@supplier.example', {ts} {series('Supplier')}"""),
        ("Product", f"""INSERT INTO "Product" (id, gtin, name, "updatedAt")
            SELECT pg_temp.vid('pd', n), lpad(n::text, 14, '0'), 'Product ' || n, {ts} {series('Product')}"""),
        ("Location", f"""INSERT INTO "Location" (id, "practiceId", name, code, "updatedAt")
            SELECT pg_temp.vid('lo', n), pg_temp.vid('pr', n % {P}), 'Location ' || n,
                   CASE WHEN n % 5 = 4 THEN NULL
                        ELSE 'L-' || CASE WHEN n >= {P} AND {planted(997, 11)} THEN n - {P} ELSE n END END,
                   {ts} {series('Location')}"""),
        ("Item", f"""INSERT INTO "Item" (id, "practiceId", "defaultSupplierId", name, sku, description, unit,
                                         "productId", "updatedAt")
            SELECT pg_temp.vid('it', n), pg_temp.vid('pr', n % {P}),
                   CASE WHEN n % 2 = 0 THEN NULL WHEN {planted(10007, 1)} THEN {missing_supplier}
                        ELSE {ref('su', 'Supplier', 20)} END,
                   'Item ' || CASE WHEN n >= {P} AND {planted(9973, 5)} THEN n - {P} ELSE n END,
                   CASE WHEN n % 5 = 0 THEN NULL
                        ELSE 'SKU-' || lpad((CASE WHEN n >= {P} AND {planted(9967, 7)} THEN n - {P} ELSE n END)::text, 8, '0') END,
                   'Description of item ' || n, 'box', pg_temp.vid('pd', n % {N['Product']}), {ts}
            {series('Item')}"""),
        ("LocationInventory", f"""INSERT INTO "LocationInventory" ("locationId", "itemId", quantity, "reorderPoint",
                                                              "reorderQuantity", "updatedAt")
            SELECT {ref('lo', 'Location', 20)}, pg_temp.vid('it', n),
                   CASE WHEN {planted(9973, 3)} THEN -1 - n % 7 ELSE n % 200 END,
                   CASE WHEN n % 3 = 0 THEN NULL WHEN {planted(10009, 4)} THEN -5 ELSE n % 20 END,
                   CASE WHEN n % 3 = 0 THEN NULL WHEN {planted(10037, 6)} THEN 0 ELSE 10 + n % 50 END,
                   {ts} {series('LocationInventory')}"""),
        ("SupplierItem", f"""INSERT INTO "SupplierItem" (id, "supplierId", "itemId", "supplierSku", "unitPrice",
                                                    "minOrderQty", "updatedAt")
            SELECT pg_temp.vid('si', n), {ref('su', 'Supplier', 20)}, pg_temp.vid('it', n), 'S-' || n,
                   CASE WHEN n % 10 = 0 THEN NULL WHEN {planted(4999, 9)} THEN -1.50 ELSE (n % 10000) / 100.0 END,
                   CASE WHEN n % 4 = 0 THEN NULL WHEN {planted(5003, 2)} THEN 0 ELSE 1 + n % 12 END,
                   {ts} {series('SupplierItem')}"""),
        # (supplier, product) unique: rows n and n + Product share a product, not a supplier.
        ("SupplierCatalog", f"""INSERT INTO "SupplierCatalog" (id, "supplierId", "productId", "supplierSku", "unitPrice",
                                                          "minOrderQty", "updatedAt")
            SELECT pg_temp.vid('sc', n), pg_temp.vid('su', (n + n / {N['Product']}) % {N['Supplier']}),
                   pg_temp.vid('pd', n % {N['Product']}), 'C-' || n,
                   CASE WHEN n % 10 = 0 THEN NULL WHEN {planted(4999, 19)} THEN -3.00 ELSE (n % 10000) / 100.0 END,
                   CASE WHEN n % 4 = 0 THEN NULL WHEN {planted(5003, 12)} THEN -1 ELSE 1 + n % 12 END,
                   {ts} {series('SupplierCatalog')}"""),
        ("Order", f"""INSERT INTO "Order" (id, "practiceId", "supplierId", status, reference, "createdById",
                                        "sentAt", "receivedAt", "createdAt", "updatedAt")
            SELECT pg_temp.vid('or', n), pg_temp.vid('pr', n % {P}),
                   CASE WHEN n % 10 = 0 THEN NULL WHEN {planted(10007, 2)} THEN {missing_supplier}
                        ELSE {ref('su', 'Supplier', 20)} END,
                   ('{{DRAFT,SENT,RECEIVED,CANCELLED}}'::"OrderStatus"[])[n % 4 + 1], 'PO-' || n,
                   CASE WHEN {planted(10007, 3)} THEN {missing_user} ELSE {ref('us', 'User', 20)} END,
                   CASE WHEN n % 4 NOT IN (1, 2) OR {planted(2503, 1)} THEN NULL ELSE {ts} END,
                   CASE WHEN n % 4 <> 2 OR {planted(2503, 2)} THEN NULL ELSE {ts} END,
                   {ts}, {ts} {series('Order')}"""),
        ("OrderItem", f"""INSERT INTO "OrderItem" (id, "orderId", "itemId", quantity, "unitPrice", "updatedAt")
            SELECT pg_temp.vid('oi', n), pg_temp.vid('or', n), pg_temp.vid('it', n % {N['Item']}),
                   CASE WHEN {planted(4999, 7)} THEN 0 ELSE 1 + n % 20 END,
                   CASE WHEN n % 10 = 0 THEN NULL WHEN {planted(5003, 8)} THEN -2.00 ELSE (n % 5000) / 100.0 END,
                   {ts} {series('OrderItem')}"""),
        ("GoodsReceipt", f"""INSERT INTO "GoodsReceipt" (id, "practiceId", "locationId", "orderId", "supplierId",
                                                    status, "createdById", "receivedAt", "updatedAt")
            SELECT pg_temp.vid('gr', n), pg_temp.vid('pr', n % {P}), {ref('lo', 'Location', 20)},
                   pg_temp.vid('or', n), {ref('su', 'Supplier', 20)},
                   ('{{DRAFT,CONFIRMED,CANCELLED}}'::"GoodsReceiptStatus"[])[n % 3 + 1],
                   CASE WHEN {planted(10007, 4)} THEN {missing_user} ELSE {ref('us', 'User', 20)} END,
                   CASE WHEN n % 3 <> 1 OR {planted(2003, 1)} THEN NULL ELSE {ts} END,
                   {ts} {series('GoodsReceipt')}"""),
        ("GoodsReceiptLine", f"""INSERT INTO "GoodsReceiptLine" (id, "receiptId", "itemId", quantity, "batchNumber",
                                                            "expiryDate")
            SELECT pg_temp.vid('gl', n), pg_temp.vid('gr', n % {N['GoodsReceipt']}), pg_temp.vid('it', n % {N['Item']}),
                   CASE WHEN {planted(4999, 11)} THEN -(n % 3) ELSE 1 + n % 30 END,
                   'B' || n % 1000, {ts} + interval '365 days' {series('GoodsReceiptLine')}"""),
        ("InventoryTransfer", f"""INSERT INTO "InventoryTransfer" (id, "practiceId", "itemId", "fromLocationId",
                                                              "toLocationId", quantity, "createdById")
            SELECT pg_temp.vid('tr', n), pg_temp.vid('pr', n % {P}), pg_temp.vid('it', n % {N['Item']}),
                   {ref('lo', 'Location', 20)},
                   CASE WHEN {planted(4999, 13)} THEN {ref('lo', 'Location', 20)} ELSE {ref('lo', 'Location', 20, '1')} END,
                   CASE WHEN {planted(5003, 14)} THEN 0 ELSE 1 + n % 10 END,
                   CASE WHEN {planted(10007, 5)} THEN {missing_user} ELSE {ref('us', 'User', 20)} END
            {series('InventoryTransfer')}"""),
        ("StockAdjustment", f"""INSERT INTO "StockAdjustment" (id, "itemId", "locationId", "practiceId", quantity,
                                                          reason, "createdById")
            SELECT pg_temp.vid('sa', n), pg_temp.vid('it', n % {N['Item']}), {ref('lo', 'Location', 20)},
                   pg_temp.vid('pr', n % {P}),
                   CASE WHEN {planted(4999, 15)} THEN 0 WHEN n % 2 = 0 THEN 1 + n % 9 ELSE -1 - n % 9 END,
                   'count correction',
                   CASE WHEN {planted(10007, 6)} THEN {missing_user} ELSE {ref('us', 'User', 20)} END
            {series('StockAdjustment')}"""),
        ("StockCountSession", f"""INSERT INTO "StockCountSession" (id, "practiceId", "locationId", status,
                                                              "createdById", "updatedAt")
            SELECT pg_temp.vid('cs', n), pg_temp.vid('pr', n % {P}), {ref('lo', 'Location', 20)},
                   ('{{IN_PROGRESS,COMPLETED,CANCELLED}}'::"StockCountStatus"[])[n % 3 + 1],
                   CASE WHEN {planted(997, 7)} THEN {missing_user} ELSE {ref('us', 'User', 20)} END,
                   {ts} {series('StockCountSession')}"""),
        ("OrderTemplate", f"""INSERT INTO "OrderTemplate" (id, "practiceId", name, "createdById", "updatedAt")
            SELECT pg_temp.vid('ot', n), pg_temp.vid('pr', n % {P}), 'Template ' || n,
                   CASE WHEN {planted(499, 8)} THEN {missing_user} ELSE {ref('us', 'User', 20)} END,
                   {ts} {series('OrderTemplate')}"""),
    ]


# A cuid-like id: 25 characters, deterministic (references are computed, not looked up) and
# increasing with n, like real cuids, which start with a timestamp. Increasing keys make the
# primary-key inserts appends: random ids (md5) made the load three times slower. The body
# must stay IMMUTABLE all through (n::text, not an implicit cast) so that it is inlined.
VID_FUNCTION = """
CREATE FUNCTION pg_temp.vid(prefix text, n bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 'cl' || prefix || lpad(n::text, 12, '0') || 'k7q2m9x4b' $$
"""


def build_database(cluster, name: str, scale: float, *, hardened: bool) -> dict:
    """Steps 1-6, data, then (hardened) steps 7-11 or (problems) the orphan FKs dropped."""
    started = time.monotonic()
    dsn = cluster.create_database(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        apply_migrations(conn, MIGRATIONS, upto=STEP_6, record=True)
        if not hardened:
            for table, fk in ORPHAN_FKS:
                conn.execute(f"ALTER TABLE {ident(table)} DROP CONSTRAINT {ident(fk)}")
        conn.execute(VID_FUNCTION)
        # The data is consistent by construction: skip the per-row FK triggers while loading
        # (the FKs stay, as valid; steps 7-11 re-validate the ones they re-create).
        conn.execute("SET session_replication_role = replica")
        steps = {}
        for table, sql in load_sql(scale, clean=hardened):
            steps[table], _ = timed(conn.execute, sql)
        conn.execute("RESET session_replication_role")
        if hardened:
            steps["migrations 7-11"], _ = timed(apply_migrations, conn, MIGRATIONS, record=True)
        steps["VACUUM (FREEZE, ANALYZE)"], _ = timed(conn.execute, "VACUUM (FREEZE, ANALYZE)")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return {"name": name, "dsn": dsn, "seconds": round(time.monotonic() - started, 1), "bytes": size,
            "steps_s": {k: round(v, 2) for k, v in steps.items()}}


# ----------------------------------------------------------------------------------------
# Measurement helpers

def load1() -> float:
    return round(os.getloadavg()[0], 2)


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def exporter_session(config) -> psycopg.Connection:
    """A session exactly like the exporter's (read-only, timeouts, autocommit)."""
    db = config.databases[0]
    return psycopg.connect(db.dsn, **session_options(db))


def tables_read(checks) -> list[str]:
    """Every table the checks read: their own and the parents of orphan checks."""
    seen: dict[str, None] = {}
    for c in checks:
        seen[c.table] = None
        if isinstance(c, OrphanCheck):
            seen[c.references.table] = None
    return list(seen)


def dup_where(check: DuplicateCheck) -> str:
    conditions = [f"{ident(c)} IS NOT NULL" for c in check.columns]
    return " AND ".join(conditions + ([f"({check.where})"] if check.where else []))


def floor_queries(checks) -> list[tuple[str, str]]:
    """(label, sql): the least any correct method must read, without indexes."""
    queries = [(t, f"SELECT count(*) FROM {ident(t)}") for t in tables_read(checks)]
    for c in checks:
        if isinstance(c, DuplicateCheck):
            key = ", ".join(ident(col) for col in c.columns)
            queries.append((f"{c.name} (dup count)", f"SELECT count(*) FROM (SELECT 1 FROM {ident(c.table)} "
                                                       f"WHERE {dup_where(c)} GROUP BY {key} HAVING count(*) > 1) d"))
    return queries


# The floor is a sequential read: no index may stand in for the table.
FLOOR_SETTINGS = ("SET enable_indexscan = off", "SET enable_indexonlyscan = off", "SET enable_bitmapscan = off")


def run_floor(config, queries) -> dict:
    per_query = {}
    with exporter_session(config) as conn:
        for s in FLOOR_SETTINGS:
            conn.execute(s)
        started = time.perf_counter()
        for label, sql in queries:
            t, _ = timed(lambda: conn.execute(sql).fetchall())
            per_query[label] = t
        total = time.perf_counter() - started
    return {"seconds": total, "queries": per_query}


def runbook_queries(checks) -> list[tuple[object, str]]:
    """One query per check, the way the runbook's SQL verification reads."""
    out = []
    for c in checks:
        t = ident(c.table)
        if isinstance(c, RowCheck):
            out.append((c, f"SELECT count(*) FROM {t} WHERE NOT ({c.rule})"))
        elif isinstance(c, OrphanCheck):
            col, parent, key = ident(c.column), ident(c.references.table), ident(c.references.column)
            out.append((c, f"SELECT count(*) FROM {t} t WHERE t.{col} IS NOT NULL "
                           f"AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.{key} = t.{col})"))
        else:
            key = ", ".join(ident(col) for col in c.columns)
            out.append((c, f"SELECT {key}, array_agg(id) FROM {t} WHERE {dup_where(c)} "
                           f"GROUP BY {key} HAVING count(*) > 1"))
    return out


def run_runbook(config, queries) -> dict:
    per_check, counts = {}, {}
    with exporter_session(config) as conn:
        started = time.perf_counter()
        for check, sql in queries:
            t, rows = timed(lambda: conn.execute(sql).fetchall())
            per_check[check.name] = t
            if isinstance(check, DuplicateCheck):
                counts[check.name] = (len(rows), sum(len(r[-1]) for r in rows))  # (groups, rows)
            else:
                counts[check.name] = rows[0][0]
        total = time.perf_counter() - started
    return {"seconds": total, "queries": per_check, "counts": counts}


def poll_counts(result) -> dict:
    return {c.check.name: ((c.groups, c.violations) if c.check.kind == "duplicate" else c.violations)
            for c in result.checks}


def sum_of_minimums(breakdowns: list[dict]) -> float:
    """Each query's fastest run, summed: what the method costs when no other process gets
    in its way. Much steadier than the medians on a busy machine."""
    return sum(min(b[k] for b in breakdowns) for k in breakdowns[0])


def poll_breakdown(result) -> dict:
    """Seconds per query of a poll: one per table pass, one per duplicate check."""
    out = {}
    for c in result.checks:
        label = c.check.name + " (dup)" if c.check.kind == "duplicate" else f"{c.check.table} (table pass)"
        out[label] = c.duration
    return out


# ----------------------------------------------------------------------------------------
# EXPLAIN (ANALYZE, BUFFERS) of every query of the poll and of the floor

def poll_queries(checks, schema) -> list[tuple[str, str]]:
    """The poll's own SQL (the full scan's: no guards), built by the exporter's code."""
    by_table: dict[str, list] = {}
    queries = []
    for c in checks:
        if isinstance(c, DuplicateCheck):
            queries.append((f"{c.name} (dup)", duplicate_kind.probe(c).sql))
        else:
            by_table.setdefault(c.table, []).append(c)
    return [(f"{t} (table pass)", table_pass_sql(t, cs, schema)) for t, cs in by_table.items()] + queries


def explain_all(config, queries, folder: Path, prefix: str, settings=()) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    summary = []
    with exporter_session(config) as conn:
        for s in settings:
            conn.execute(s)
        for label, sql in queries:
            plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, SETTINGS) {sql}"))
            slug = re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")
            (folder / f"{prefix}_{slug}.txt").write_text(f"-- {label}\n{sql}\n\n{plan}\n")
            summary.append({"query": label, **plan_facts(plan)})
    return summary


def plan_facts(plan: str) -> dict:
    def number(pattern: str) -> float | None:
        m = re.search(pattern, plan)
        return float(m.group(1)) if m else None

    launched = [int(x) for x in re.findall(r"Workers Launched: (\d+)", plan)]
    spills = re.findall(r"(Disk Usage: \d+kB|Batches: \d+ .*?Disk Usage: \d+kB|Sort Method: external \w+ +Disk: \d+kB"
                        r"|Batches: (?:[2-9]|\d\d+) \(originally \d+\))", plan)
    return {
        "execution_ms": number(r"Execution Time: ([\d.]+) ms"),
        "jit_ms": number(r"Timing: Generation [\d.]+ ms, .*Total ([\d.]+) ms"),
        "workers_launched": max(launched) if launched else 0,
        "spill": sorted(set(spills)),
        "temp_read_blocks": int(sum(int(x) for x in re.findall(r"temp read=(\d+)", plan))),
    }


# ----------------------------------------------------------------------------------------
# /metrics latency, measured from a separate client process (Prometheus is one, too)

CLIENT = textwrap.dedent("""
    import http.client, json, sys, time
    port, count, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    out = []
    for _ in range(count):
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        out.append((started, time.monotonic() - started, response.status, len(body)))
    json.dump(out, sys.stdout)
""")


def get_metrics(port: int, count: int, path: str = "/metrics") -> list[tuple[float, float, int, int]]:
    done = subprocess.run([sys.executable, "-c", CLIENT, str(port), str(count), path],
                          capture_output=True, text=True, check=True)
    return [tuple(x) for x in json.loads(done.stdout)]


def latency_stats(samples) -> dict:
    ms = [s[1] * 1000 for s in samples]
    bad = sum(1 for s in samples if s[2] != 200)
    return {"n": len(ms), "median_ms": median(ms), "p99_ms": percentile(ms, 0.99), "max_ms": max(ms),
            "non_200": bad, "body_bytes": samples[-1][3]}


def measure_metrics(config, gets: int) -> dict:
    daemon = Daemon(config, "127.0.0.1:0").start()
    try:
        deadline = time.monotonic() + 600
        while not daemon.store.ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon's first poll did not finish in 10 minutes")
            time.sleep(0.2)
        port, began = daemon.server.port, time.monotonic()
        get_metrics(port, 50)  # warm-up
        idle_load = load1()
        idle = latency_stats(get_metrics(port, gets))
        # What the HTTP stack alone costs (a constant body), and what rendering the body costs.
        healthz = latency_stats(get_metrics(port, gets, "/healthz"))
        render = []
        for _ in range(200):
            t, _body = timed(generate_latest, daemon.metrics.registry)
            render.append(t * 1000)
        rendering = {"median_ms": median(render), "p99_ms": percentile(render, 0.99)}

        # Busy: full polls back to back in the daemon's own process while the client runs.
        intervals, stop = [], threading.Event()

        def poll_loop():
            poller = daemon.pollers[0]
            while not stop.is_set():
                started = time.monotonic()
                daemon.store.put(poller.poll(full_scan=True))
                intervals.append((started, time.monotonic()))

        thread = threading.Thread(target=poll_loop, name="bench-poll")
        thread.start()
        time.sleep(0.3)  # let the first poll reach the database
        busy_samples = get_metrics(port, int(gets * 1.2))
        busy_load = load1()
        stop.set()
        thread.join()
        inside = [s for s in busy_samples if any(a <= s[0] <= b for a, b in intervals)]
        busy = latency_stats(inside)
        busy["polls_during"] = len(intervals)
        busy["poll_seconds"] = [round(b - a, 3) for a, b in intervals]
        return {"idle": {**idle, "load1": idle_load}, "during_poll": {**busy, "load1": busy_load},
                "healthz_idle": healthz, "render_in_process": rendering,
                "seconds_after_first_poll": round(time.monotonic() - began, 1)}
    finally:
        daemon.stop()


def measure_rss(url: str, runs: int) -> dict:
    """RSS of `python -m exporter run` once its first poll is done and it sits idle."""
    samples = []
    for _ in range(runs):
        port = free_port()
        env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "warning"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", "--config", str(CONFIG), "--listen", f"127.0.0.1:{port}"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 600
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"exporter did not become ready: {proc.stderr.read()}")
                time.sleep(0.5)
            time.sleep(2)  # idle
            status = Path(f"/proc/{proc.pid}/status").read_text()
            kb = {k: int(v.split()[0]) for k, v in re.findall(r"^(VmRSS|VmHWM|RssAnon|RssFile):\s+(.*)$", status, re.M)}
            samples.append({k: round(v / 1024, 1) for k, v in kb.items()} | {"load1": load1()})
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"runs": samples, "median_rss_mb": median([s["VmRSS"] for s in samples]),
            "median_peak_mb": median([s["VmHWM"] for s in samples])}


# ----------------------------------------------------------------------------------------
# Extra: the scheduled poll with the migrations feature on (history, shadow replay, drift,
# deploy prediction), as production would run it. Not one of the targets.

def _healthy(result) -> bool:
    h = result.healthy
    return h() if callable(h) else h


def measure_migrations_feature(cluster, repeat: int) -> dict:
    out = {}
    for db in ("venzory_problems", "venzory_hardened"):
        env = {"DATABASE_URL": cluster.url(db), "PRISMA_MIGRATIONS_DIR": str(MIGRATIONS),
               "SHADOW_DATABASE_URL": cluster.url("postgres")}
        config = load_config(CONFIG, env=env)
        poller = Poller(config, config.databases[0])
        first_s, _ = timed(poller.poll, full_scan=False)  # includes the shadow replay (then cached)
        loads, runs = [], []
        for _ in range(repeat):
            loads.append(load1())
            runs.append(timed(poller.poll, full_scan=False))
        poller.close()
        result = runs[-1][1]
        m = getattr(result, "migrations", None)
        out[db] = {
            "first_s": first_s, "median_s": median([s for s, _ in runs]), "runs_s": [s for s, _ in runs],
            "load1": median(loads), "guarded_checks": sum(c.guarded for c in result.checks),
            "pending": list(m.history.pending_names) if m and m.history else None,
            "deploy": m.forecast.deploy.summary() if m and m.forecast else None,
            "errors": list(m.errors) if m else None,
        }
    return out


# ----------------------------------------------------------------------------------------

def machine_info(cluster) -> dict:
    meminfo = Path("/proc/meminfo").read_text()
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        version = conn.execute("SELECT version()").fetchone()[0]
        settings = dict(conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name IN ('shared_buffers', 'work_mem',"
            " 'hash_mem_multiplier', 'max_parallel_workers_per_gather', 'max_parallel_workers', 'jit',"
            " 'jit_above_cost', 'effective_cache_size', 'random_page_cost', 'lc_collate')").fetchall())
    return {"nproc": os.cpu_count(), "mem_total_gb": round(mem_kb / 1024 / 1024, 1),
            "cpu": cpu.group(1) if cpu else platform.processor(), "kernel": platform.release(),
            "python": platform.python_version(), "postgres": version, "settings": settings,
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}


def summarize(results: dict) -> list[tuple[str, str, str, str, str]]:
    t = TARGETS
    poll, floor_, runbook = results["full_poll"], results["floor"], results["runbook"]
    guarded, metrics, rss = results["guarded_poll"], results["metrics"], results["rss"]
    poll_vs_floor = poll["median_s"] / floor_["median_s"]
    runbook_vs_poll = runbook["median_s"] / poll["median_s"]
    # The same ratios run by run (poll, floor and runbook of one run ran back to back, under
    # about the same load): their spread shows how much the load moved the medians.
    paired_pf = [p / f for p, f in zip(poll["runs_s"], floor_["runs_s"])]
    paired_rp = [r / p for p, r in zip(poll["runs_s"], runbook["runs_s"])]
    ok = lambda b: "MET" if b else "MISSED"  # noqa: E731
    rows = [
        ("full poll (problems, full_scan=True)", f"{poll['median_s']:.3f} s", "", "", f"{poll['load1']}"),
        ("floor (seq counts + dup counts)", f"{floor_['median_s']:.3f} s", "", "", f"{floor_['load1']}"),
        ("runbook's way (query per check)", f"{runbook['median_s']:.3f} s", "", "", f"{runbook['load1']}"),
        ("poll / floor (run by run)", f"{poll_vs_floor:.2f}x ({min(paired_pf):.2f}-{max(paired_pf):.2f})",
         f"<= {t['poll_vs_floor_max']}x", ok(poll_vs_floor <= t["poll_vs_floor_max"]), ""),
        ("runbook / poll (run by run)", f"{runbook_vs_poll:.2f}x ({min(paired_rp):.2f}-{max(paired_rp):.2f})",
         f">= {t['runbook_vs_poll_min']}x", ok(runbook_vs_poll >= t["runbook_vs_poll_min"]), ""),
        ("poll / floor, sums of per-query minimums",
         f"{poll['sum_of_query_minimums_s'] / floor_['sum_of_query_minimums_s']:.2f}x", "", "", ""),
        ("runbook / poll, sums of per-query minimums",
         f"{runbook['sum_of_query_minimums_s'] / poll['sum_of_query_minimums_s']:.2f}x", "", "", ""),
        ("guarded poll (hardened)", f"{guarded['median_ms']:.1f} ms (p95 {guarded['p95_ms']:.1f})",
         f"< {t['guarded_poll_ms_max']:.0f} ms", ok(guarded["median_ms"] < t["guarded_poll_ms_max"]),
         f"{guarded['load1']}"),
        ("  of which: open + close the session", f"{guarded['session_open_close_median_ms']:.1f} ms", "", "", ""),
        ("full poll (hardened, for reference)", f"{results['hardened_full_poll']['median_s']:.3f} s", "", "",
         f"{results['hardened_full_poll']['load1']}"),
        ("/metrics idle: median / p99", f"{metrics['idle']['median_ms']:.2f} / {metrics['idle']['p99_ms']:.2f} ms",
         f"median < {t['metrics_median_ms_max']} ms", ok(metrics["idle"]["median_ms"] < t["metrics_median_ms_max"]),
         f"{metrics['idle']['load1']}"),
        ("/metrics during poll: median / p99",
         f"{metrics['during_poll']['median_ms']:.2f} / {metrics['during_poll']['p99_ms']:.2f} ms",
         f"median < {t['metrics_median_ms_max']} ms",
         ok(metrics["during_poll"]["median_ms"] < t["metrics_median_ms_max"]), f"{metrics['during_poll']['load1']}"),
        ("  /healthz idle (HTTP stack alone)",
         f"{metrics['healthz_idle']['median_ms']:.2f} / {metrics['healthz_idle']['p99_ms']:.2f} ms", "", "", ""),
        ("  render of the /metrics body, in-process",
         f"{metrics['render_in_process']['median_ms']:.2f} ms ({metrics['idle']['body_bytes']} bytes)", "", "", ""),
        ("idle daemon RSS (peak)", f"{rss['median_rss_mb']:.1f} MB ({rss['median_peak_mb']:.1f})",
         f"< {t['idle_rss_mb_max']:.0f} MB", ok(rss["median_rss_mb"] < t["idle_rss_mb_max"]),
         f"{rss['runs'][-1]['load1']}"),
    ]
    for db, m in results.get("migrations_feature", {}).items():
        rows.append((f"extra: poll w/ migrations feature, {db.removeprefix('venzory_')}",
                     f"{m['median_s']:.3f} s ({m['deploy']})", "", "", f"{m['load1']}"))
    results["verdict"] = {"poll_vs_floor": round(poll_vs_floor, 3), "runbook_vs_poll": round(runbook_vs_poll, 3),
                          "poll_vs_floor_by_run": [round(x, 3) for x in paired_pf],
                          "runbook_vs_poll_by_run": [round(x, 3) for x in paired_rp],
                          "met": {r[0]: r[3] == "MET" for r in rows if r[3]}}
    return rows


def print_table(rows) -> None:
    header = ("measurement", "value", "target", "", "load1")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = 1M items (default)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running and print its DSNs")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement, median reported (>= 3)")
    parser.add_argument("--gets", type=int, default=1000, help="GETs of /metrics per phase")
    parser.add_argument("--work-mem", default="'4MB'", help="server work_mem (default PostgreSQL's 4MB)")
    parser.add_argument("--shared-buffers", default="'2GB'")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the JSON and the plans (bench/out)")
    args = parser.parse_args()
    out = args.out.resolve()
    logging.basicConfig(level=logging.ERROR)

    results: dict = {"args": vars(args), "targets": TARGETS, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    cluster = start_cluster(settings=server_settings(args.work_mem, args.shared_buffers))
    try:
        results["machine"] = machine_info(cluster)
        print(f"cluster on port {cluster.port}; {results['machine']['uptime']}", flush=True)

        print("building databases ...", flush=True)
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:  # one per core: both load at once
            problems_f = pool.submit(build_database, cluster, "venzory_problems", args.scale, hardened=False)
            hardened_f = pool.submit(build_database, cluster, "venzory_hardened", args.scale, hardened=True)
            problems, hardened = problems_f.result(), hardened_f.result()
        _, sizes = table_sizes(args.scale)
        results["build"] = {"seconds": round(time.monotonic() - started, 1), "rows": sizes,
                            "problems": {k: v for k, v in problems.items() if k != "dsn"},
                            "hardened": {k: v for k, v in hardened.items() if k != "dsn"}}
        print(f"  built in {results['build']['seconds']} s: problems {problems['bytes'] / 2**30:.2f} GiB, "
              f"hardened {hardened['bytes'] / 2**30:.2f} GiB", flush=True)

        config = load_config(CONFIG, env={"DATABASE_URL": problems["dsn"]})
        hconfig = load_config(CONFIG, env={"DATABASE_URL": hardened["dsn"]})
        checks = config.checks
        floor_q, runbook_q = floor_queries(checks), runbook_queries(checks)

        # 1-3, interleaved. The first poll opens the pool and warms the cache: reported apart.
        print("full poll / floor / runbook ...", flush=True)
        poller = Poller(config, config.databases[0])
        first_s, first = timed(poller.poll, full_scan=True)
        assert first.up, first.error
        polls, floors, runbooks, loads = [], [], [], {"poll": [], "floor": [], "runbook": []}
        for i in range(args.repeat):
            loads["poll"].append(load1())
            s, result = timed(poller.poll, full_scan=True)
            polls.append((s, result))
            loads["floor"].append(load1())
            floors.append(run_floor(config, floor_q))
            loads["runbook"].append(load1())
            runbooks.append(run_runbook(config, runbook_q))
            print(f"  run {i + 1}: poll {s:.3f} s, floor {floors[-1]['seconds']:.3f} s, "
                  f"runbook {runbooks[-1]['seconds']:.3f} s (load {load1()})", flush=True)
        poller.close()
        mid = sorted(range(args.repeat), key=lambda i: polls[i][0])[args.repeat // 2]
        counted, truth = poll_counts(polls[mid][1]), runbooks[-1]["counts"]
        results["full_poll"] = {
            "median_s": median([s for s, _ in polls]), "runs_s": [s for s, _ in polls], "first_s": first_s,
            "sum_of_query_minimums_s": sum_of_minimums([poll_breakdown(r) for _, r in polls]),
            "load1": median(loads["poll"]), "breakdown_s": poll_breakdown(polls[mid][1]),
            "counts": counted, "counts_agree_with_runbook": counted == truth,
            "statuses": {c.check.name: c.status for c in polls[mid][1].checks},
        }
        results["floor"] = {"median_s": median([f["seconds"] for f in floors]), "runs_s": [f["seconds"] for f in floors],
                            "sum_of_query_minimums_s": sum_of_minimums([f["queries"] for f in floors]),
                            "load1": median(loads["floor"]),
                            "breakdown_s": {k: median([f["queries"][k] for f in floors]) for k in floors[0]["queries"]}}
        results["runbook"] = {"median_s": median([r["seconds"] for r in runbooks]),
                              "runs_s": [r["seconds"] for r in runbooks], "load1": median(loads["runbook"]),
                              "sum_of_query_minimums_s": sum_of_minimums([r["queries"] for r in runbooks]),
                              "breakdown_s": {k: median([r["queries"][k] for r in runbooks])
                                              for k in runbooks[0]["queries"]},
                              "counts": truth}
        if counted != truth:
            print(f"  WARNING: poll counts differ from the runbook's: {counted} vs {truth}", flush=True)

        # 4: guarded poll on the hardened database (and, for reference, its full scan).
        print("guarded poll ...", flush=True)
        hpoller = Poller(hconfig, hconfig.databases[0])
        hpoller.poll(full_scan=False)  # opens the pool
        guarded, gload = [], load1()
        for _ in range(max(20, args.repeat)):
            s, g = timed(hpoller.poll, full_scan=False)
            guarded.append(s)
        sessions = []  # what opening and closing the poll's session costs (part of every poll)
        for _ in range(20):
            started = time.perf_counter()
            with hpoller.database.connection():
                pass
            sessions.append(time.perf_counter() - started)
        hfull = [timed(hpoller.poll, full_scan=True) for _ in range(args.repeat)]
        hpoller.close()
        results["guarded_poll"] = {
            "median_ms": median(guarded) * 1000, "p95_ms": percentile(guarded, 0.95) * 1000,
            "min_ms": min(guarded) * 1000, "session_open_close_median_ms": median(sessions) * 1000,
            "runs_ms": [round(s * 1000, 2) for s in guarded], "load1": gload,
            "guarded_checks": sum(c.guarded for c in g.checks), "checks": len(g.checks), "healthy": _healthy(g),
            "unguarded": [c.check.name for c in g.checks if not c.guarded],
        }
        results["hardened_full_poll"] = {"median_s": median([s for s, _ in hfull]), "runs_s": [s for s, _ in hfull],
                                         "load1": load1(), "healthy": all(_healthy(r) for _, r in hfull),
                                         "breakdown_s": poll_breakdown(hfull[len(hfull) // 2][1])}

        # 5 and 6
        print("/metrics latency ...", flush=True)
        results["metrics"] = measure_metrics(config, args.gets)
        print("idle RSS ...", flush=True)
        results["rss"] = measure_rss(cluster.url("venzory_problems"), max(3, args.repeat))

        print("extra: scheduled poll with the migrations feature on ...", flush=True)
        results["migrations_feature"] = measure_migrations_feature(cluster, args.repeat)

        # Where the time goes.
        print("EXPLAIN (ANALYZE, BUFFERS) ...", flush=True)
        explain_dir = out / "explain"
        with exporter_session(config) as conn:
            live = introspect(conn, config.databases[0].db_schema)
        results["explain"] = {
            "poll": explain_all(config, poll_queries(checks, live), explain_dir, "poll"),
            "floor": explain_all(config, floor_q, explain_dir, "floor", FLOOR_SETTINGS),
            "poll_jit_off": explain_all(config, poll_queries(checks, live), explain_dir, "poll_jit_off",
                                        ("SET jit = off",)),
        }
        results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        results["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

        rows = summarize(results)
        print()
        print_table(rows)
        print(f"\ncounts agree with the runbook's queries: {results['full_poll']['counts_agree_with_runbook']}")
        out.mkdir(parents=True, exist_ok=True)
        out_file = out / f"core_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out_file.write_text(json.dumps(results, indent=2, default=str))
        print(f"results: {out_file}; plans: {explain_dir}/")
        if args.keep:
            print(f"kept: problems {cluster.url('venzory_problems')}, hardened {cluster.url('venzory_hardened')}"
                  f" (data {cluster.datadir}; stop with pg_ctl -D {cluster.datadir} stop)")
    finally:
        if not args.keep:
            cluster.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
