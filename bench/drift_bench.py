"""Drift benchmark: what parse + to_schema + diff cost per poll, on the fixture and on a large
generated schema.

    python bench/drift_bench.py [--tables 150] [--repeat 30]

Pure CPU, no database: the "live" side of the diff is the expected Schema with a few
changes (a dropped index, a changed default, an extra column, a changed foreign key action,
an added enum value), so every branch of the diff runs. Each figure is the median and the
minimum of --repeat runs, in milliseconds; the 1-minute load average is printed alongside
(other processes on a small machine move the medians, the minimums much less).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.schema.diff import DriftSource, diff_schemas  # noqa: E402
from exporter.schema.model import ConstraintKind, Schema, Table  # noqa: E402
from exporter.schema.prisma import parse_prisma_schema, to_schema  # noqa: E402
from timing import time_runs  # noqa: E402 - bench/timing.py, beside this script

FIXTURE = ROOT / "tests" / "fixtures" / "venzory" / "prisma" / "schema.prisma"


def generated_schema(tables: int) -> str:
    """A Venzory-like schema.prisma: `tables` models of 12 fields, each with a required and
    an optional relation to earlier models, a compound unique, two indexes, and 10 enums."""
    lines = ['datasource db {\n  provider = "postgresql"\n  url      = env("DATABASE_URL")\n}\n']
    for e in range(10):
        values = "\n".join(f"  VALUE_{v}" for v in range(6))
        lines.append(f"enum Status{e} {{\n{values}\n}}\n")
    for t in range(tables):
        parent, other = max(t - 1, 0), max(t - 7, 0)
        fields = [
            "  id          String    @id @default(cuid())",
            "  practiceId  String",
            f"  parentId    String{'?' if t == 0 else ''}",
            "  otherId     String?",
            "  name        String    @db.VarChar(200)",
            "  code        String?",
            "  quantity    Int       @default(0)",
            "  price       Decimal?  @db.Decimal(10, 2)",
            f"  status      Status{t % 10}   @default(VALUE_0)",
            "  note        String?   @map(\"note_text\")",
            "  createdAt   DateTime  @default(now())",
            "  updatedAt   DateTime  @updatedAt",
            f"  parent      Model{parent}?  @relation(\"p{t}\", fields: [parentId], references: [id])",
            f"  other       Model{other}?  @relation(\"o{t}\", fields: [otherId], references: [id], onDelete: SetNull)",
        ]
        if t + 1 < tables:  # the back relations Prisma requires
            fields.append(f"  children    Model{t + 1}[] @relation(\"p{t + 1}\")")
        if t + 7 < tables:
            fields.append(f"  others      Model{t + 7}[] @relation(\"o{t + 7}\")")
        fields += [
            "",
            "  @@unique([practiceId, name])",
            "  @@index([practiceId])",
            "  @@index([practiceId, status, createdAt])",
            f'  @@map("model_{t}")',
        ]
        lines.append(f"model Model{t} {{\n" + "\n".join(fields) + "\n}\n")
    return "\n".join(lines)


def drifted(schema: Schema) -> Schema:
    """The schema with five changes, one of each common kind."""
    tables = dict(schema.tables)
    indexes = dict(schema.indexes)
    constraints = dict(schema.constraints)
    enums = dict(schema.enums)
    table = next(iter(tables.values()))
    columns = dict(table.columns)
    first = next(iter(columns.values()))
    columns[first.name] = replace(first, default="42")
    columns["extra"] = replace(first, name="extra")
    tables[table.name] = Table(table.name, columns)
    indexes.pop(next(name for name, index in indexes.items() if not index.primary))
    key, fk = next((k, c) for k, c in constraints.items() if c.kind == ConstraintKind.FOREIGN_KEY)
    constraints[key] = replace(fk, on_delete="CASCADE" if fk.on_delete != "CASCADE" else "RESTRICT")
    name, labels = next(iter(enums.items()))
    enums[name] = labels + ("ADDED",)
    return Schema(tables, indexes, constraints, enums)


def timed(function, repeat: int) -> tuple[float, float, object]:
    runs, result = time_runs(function, repeat)
    return statistics.median(runs), runs[0], result


def measure(label: str, text: str, repeat: int) -> None:
    parse_med, parse_min, parsed = timed(lambda: parse_prisma_schema(text), repeat)
    build_med, build_min, expected = timed(lambda: to_schema(parsed), repeat)
    live = drifted(expected)
    diff_med, diff_min, items = timed(lambda: diff_schemas(expected, live, DriftSource.SCHEMA_PRISMA), repeat)
    same_med, same_min, none = timed(lambda: diff_schemas(expected, expected, DriftSource.SCHEMA_PRISMA), repeat)
    assert none == [] and len(items) >= 5, items
    total_med = parse_med + build_med + diff_med
    print(
        f"{label:<22} {len(text) / 1024:7.1f} KiB  {len(expected.tables):4d} tables "
        f"{sum(len(t.columns) for t in expected.tables.values()):5d} columns "
        f"{len(expected.indexes):4d} indexes {len(expected.constraints):4d} constraints"
    )
    for name, med, low in (
        ("parse", parse_med, parse_min),
        ("to_schema", build_med, build_min),
        ("diff (5 drift items)", diff_med, diff_min),
        ("diff (identical)", same_med, same_min),
        ("parse+to_schema+diff", total_med, parse_min + build_min + diff_min),
    ):
        print(f"    {name:<22} median {med:8.2f} ms   min {low:8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, load average (1 min) {os.getloadavg()[0]:.2f}, {args.repeat} runs each")
    measure("fixture schema.prisma", FIXTURE.read_text(encoding="utf-8"), args.repeat)
    measure(f"generated, {args.tables} models", generated_schema(args.tables), args.repeat)
    print(f"load average (1 min) at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
