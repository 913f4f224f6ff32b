"""`verify` output: text for people, JSON for machines (a documented contract), exit code.

Exit codes: 0 everything healthy, 1 something violated, failed or missing, 2 could not
run (bad config, a database unreachable).
"""

from __future__ import annotations

import json
from typing import Iterable

from exporter.db import redact_dsn
from exporter.poll import PollResult

EXIT_OK, EXIT_PROBLEMS, EXIT_CANNOT_RUN = 0, 1, 2
TICK, CROSS, FAIL = "✔", "✘", "!"


def exit_code(results: Iterable[PollResult]) -> int:
    results = list(results)
    if any(not r.up for r in results):
        return EXIT_CANNOT_RUN
    return EXIT_OK if all(r.healthy for r in results) else EXIT_PROBLEMS


def to_json(results: Iterable[PollResult]) -> dict:
    results = list(results)
    return {
        "ok": exit_code(results) == EXIT_OK,
        "databases": [_database_json(r) for r in results],
    }


def _database_json(r: PollResult) -> dict:
    return {
        "name": r.database,
        "up": r.up,
        "error": r.error,
        "full_scan": r.full_scan,
        "duration_seconds": round(r.duration, 6),
        "checks": [
            {
                "name": c.check.name,
                "kind": c.check.kind,
                "table": c.check.table,
                "category": c.check.category,
                "severity": c.check.severity,
                "violations": c.violations,
                "groups": c.groups,
                "status": c.status,
                "guarded": c.guarded,
                "guarded_by": c.guarded_by,
                "reason": c.reason,
                "error": c.error,
                "inspect_sql": c.inspect_sql,
            }
            for c in r.checks
        ],
        "constraints": [
            {
                "table": c.table,
                "name": c.name,
                "kind": c.kind,
                "present": c.present,
                "valid": c.valid,
                "critical": c.critical,
                "detail": c.detail,
            }
            for c in r.constraints
        ],
    }


def render_json(results: Iterable[PollResult]) -> str:
    return json.dumps(to_json(results), indent=2)


def _check_line(c) -> list[str]:
    name, table = c.check.name, c.check.table
    if c.status == "failed":
        return [f"  {FAIL} {name} ({table}): check failed [{c.reason}]: {c.error}"]
    if c.status == "ok":
        how = f" - guarded by {c.guarded_by}" if c.guarded else ""
        return [f"  {TICK} {name} ({table}): no violations{how}"]
    what = f"{c.violations} rows in {c.groups} duplicate groups" if c.groups is not None else f"{c.violations} rows"
    return [
        f"  {CROSS} {name} ({table}): {what} [{c.check.category}, {c.check.severity}]",
        f"      inspect: {c.inspect_sql}",
    ]


def render_text(results: Iterable[PollResult], dsns: dict[str, str]) -> str:
    lines: list[str] = []
    results = list(results)
    for r in results:
        lines.append(f"== {r.database} ({redact_dsn(dsns.get(r.database, ''))})")
        if not r.up:
            lines.append(f"  {FAIL} cannot connect: {r.error}")
            continue
        scan = "full scan" if r.full_scan else "guarded checks answered from the catalog"
        lines.append(f"Checks ({scan}, {r.duration:.2f}s):")
        for c in r.checks:
            lines.extend(_check_line(c))
        if r.constraints:
            lines.append("Constraints:")
        for c in r.constraints:
            mark = TICK if c.healthy else CROSS
            tag = f"{c.kind}, critical" if c.critical else c.kind
            state = "present and valid" if c.healthy else c.detail
            lines.append(f"  {mark} {c.table}.{c.name} ({tag}): {state}")
        lines.append("")
    lines.append(_summary(results))
    return "\n".join(lines)


def _summary(results: list[PollResult]) -> str:
    down = [r.database for r in results if not r.up]
    checks = [c for r in results if r.up for c in r.checks]
    violated = [c for c in checks if c.status == "violated"]
    failed = [c for c in checks if c.status == "failed"]
    constraints = [c for r in results if r.up for c in r.constraints if not c.healthy]
    parts = [
        f"{len(checks) - len(violated) - len(failed)}/{len(checks)} checks healthy",
        f"{len(violated)} violated ({sum(c.violations for c in violated)} rows)",
        f"{len(failed)} failed",
        f"{len(constraints)} constraints missing or not valid",
    ]
    if down:
        parts.append(f"unreachable: {', '.join(down)}")
    mark = TICK if exit_code(results) == EXIT_OK else CROSS
    return f"{mark} Summary: " + ", ".join(parts)
