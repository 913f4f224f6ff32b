"""`verify` output: text for people, JSON for machines (a documented contract), exit code.

Exit codes: 0 everything healthy, 1 something violated, failed or missing, 2 could not
run (bad config, a database unreachable).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from exporter.backups.dumps import DumpStatus
from exporter.checks.constraints import DERIVED_CATEGORY, ConstraintResult, Source, Status
from exporter.checks.run import CheckResult, CheckStatus
from exporter.config.dsn import redact_dsn
from exporter.logs import redact, scrub
from exporter.migrations.deploy import Forecast, MigrationPrediction, Outcome, StatementResult
from exporter.migrations.history import PrismaStatus
from exporter.migrations.monitor import MigrationsResult
from exporter.poll import PollResult
from exporter.wording import counted

EXIT_OK, EXIT_PROBLEMS, EXIT_CANNOT_RUN = 0, 1, 2
TICK, CROSS, FAIL = "✔", "✘", "!"
WARN = "⚠"  # worth fixing, not a failure: the exit code does not change


def exit_code(results: Iterable[PollResult], *, allow_pending: bool = False, backup_within: float | None = None) -> int:
    results = list(results)
    if any(not r.up for r in results):
        return EXIT_CANNOT_RUN
    healthy = all(r.healthy(allow_pending=allow_pending, backup_within=backup_within) for r in results)
    return EXIT_OK if healthy else EXIT_PROBLEMS


def to_json(results: Iterable[PollResult], *, allow_pending: bool = False,
            backup_within: float | None = None) -> dict[str, Any]:
    results = list(results)
    return {
        "ok": exit_code(results, allow_pending=allow_pending, backup_within=backup_within) == EXIT_OK,
        "databases": [_database_json(r, backup_within) for r in results],
    }


def _backups_json(r: PollResult, backup_within: float | None) -> dict[str, Any] | None:
    b = r.backups
    required = None
    if backup_within is not None:
        missing = r.missing_backup(backup_within) if r.up else None
        required = {"within_seconds": backup_within, "met": missing is None, "problem": missing}
    if b is None:
        return {"sources": [], "archiver": None, "newest_complete": None, "required": required} if required else None
    newest = b.newest_complete
    return {
        "database": b.database,
        "sources": [{"name": s.name, "glob": s.glob, "matched": s.matched, "files": [d.as_dict() for d in s.files]}
                    for s in b.sources],
        "archiver": b.archiver.as_dict() if b.archiver else None,
        "newest_complete": newest.as_dict() if newest else None,
        "required": required,
    }


def _migrations_json(m: MigrationsResult) -> dict[str, Any]:
    history = m.history
    return {
        "migrations": {
            "managed": history.managed if history else None,
            "states": history.counts if history else {},
            "items": [{"name": i.name, "state": i.state, "detail": i.detail}
                      for i in (history.not_applied if history else ())],
        },
        "drift": [{"source": d.source, "kind": d.kind, "object": d.object, "detail": d.detail,
                   "acknowledged": d.acknowledged} for d in m.drift],
        "expected_schema_unknown": m.expected_unknown or None,
        "deploy": _deploy_json(m.forecast) if m.forecast else None,
        "migration_errors": [{"part": part, "error": message} for part, message in m.errors],
    }


def _statement_json(s: StatementResult) -> dict[str, Any]:
    return {"number": s.number, "line": s.line, "outcome": s.outcome.value, "table": s.table, "sql": s.text,
            "reason": s.reason, "sqlstate": s.sqlstate, "offending_rows": s.offending_rows,
            "inspect_sql": s.inspect_sql, "rows_inserted": s.rows_inserted,
            "rows_updated": s.rows_updated, "rows_deleted": s.rows_deleted, "rows_lost": s.rows_lost,
            "values_lost": s.values_lost, "lock": s.lock, "rows_scanned": s.rows_scanned, "rewrites": s.rewrites}


def _deploy_json(f: Forecast) -> dict[str, Any]:
    view, deploy = f.view, f.deploy
    failure = deploy.failure
    return {
        "outcome": deploy.outcome.value,
        "summary": deploy.summary(),
        "reason": deploy.reason,
        "failure": {"migration": failure[0]} | _statement_json(failure[1]) if failure else None,
        "prisma_status": view.status.value,
        "last_common_migration": view.last_common,
        "not_applied": list(view.not_applied),
        "not_in_folder": list(view.not_in_folder),
        "failed": list(view.failed),
        "baseline_unresolved": view.baseline_unresolved,
        "resolve_commands": list(f.commands),
        "migrations": [
            {"name": m.name, "outcome": m.outcome.value, "reason": m.reason, "warnings": list(m.warnings)}
            | m.effects | {"statements": [_statement_json(s) for s in m.statements]}
            for m in deploy.migrations
        ],
    }


def _database_json(r: PollResult, backup_within: float | None = None) -> dict[str, Any]:
    extra = _migrations_json(r.migrations) if r.migrations else {}
    return extra | {
        "backups": _backups_json(r, backup_within),
        "name": r.database,
        "up": r.up,
        "error": r.error,
        "full_scan": r.full_scan,
        "duration_seconds": round(r.duration, 6),
        "privileges": r.privileges.as_dict() if r.privileges else None,
        "checks": [
            {
                "name": c.check.name,
                "kind": c.check.kind,
                "table": c.check.table,
                "category": c.check.category,
                "derived": c.check.category == DERIVED_CATEGORY,
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
                "status": c.status,
                "actual": c.actual,
                "source": c.source,
            }
            for c in r.constraints
        ],
        "stale": [{"entry": n.check.name, "kind": "check", "table": n.check.table, "fix": n.why}
                  for n in r.not_run if n.status is Status.STALE]
        + [{"entry": c.name, "kind": "constraint", "table": c.table, "fix": c.detail}
           for c in r.constraints if c.status is Status.STALE],
        "pending_checks": [{"name": n.check.name, "table": n.check.table, "reason": n.why}
                           for n in r.not_run if n.status is Status.PENDING],
    }


def render_json(results: Iterable[PollResult], *, allow_pending: bool = False,
                backup_within: float | None = None) -> str:
    # Scrubbed of registered secrets like the logs: a database's error text is printed as is.
    return json.dumps(scrub(to_json(results, allow_pending=allow_pending, backup_within=backup_within)),
                      indent=2, default=str)


def _check_line(c: CheckResult) -> list[str]:
    name, table = c.check.name, c.check.table
    if c.status is CheckStatus.FAILED:
        return [f"  {FAIL} {name} ({table}): check failed [{c.reason}]: {c.error}"]
    if c.status is CheckStatus.OK:
        how = f" - guarded by {c.guarded_by}" if c.guarded else ""
        return [f"  {TICK} {name} ({table}): no violations{how}"]
    rows = counted(c.violations or 0, "row")  # set whenever the check counted (violated)
    what = f"{rows} in {counted(c.groups, 'duplicate group')}" if c.groups is not None else rows
    return [
        f"  {CROSS} {name} ({table}): {what} [{c.check.category}, {c.check.severity}]",
        f"      inspect: {c.inspect_sql}",
    ]


def render_text(results: Iterable[PollResult], dsns: dict[str, str], *, allow_pending: bool = False,
                backup_within: float | None = None) -> str:
    lines: list[str] = []
    results = list(results)
    for r in results:
        lines.append(f"== {r.database} ({redact_dsn(dsns.get(r.database, ''))})")
        if not r.up:
            lines.append(f"  {FAIL} cannot connect: {r.error}")
            continue
        if r.privileges is not None:
            mark = WARN if r.privileges.can_write else TICK
            lines.append(f"Privileges: {mark} {r.privileges.describe()}")
        scan = "full scan" if r.full_scan else "guarded checks answered from the catalog"
        lines.append(f"Checks ({scan}, {r.duration:.2f}s):")
        derived_ok = [c for c in r.checks if c.check.category == DERIVED_CATEGORY and c.status is CheckStatus.OK]
        for c in r.checks:
            if c not in derived_ok:
                lines.extend(_check_line(c))
        if derived_ok:
            guarded = sum(1 for c in derived_ok if c.guarded)
            lines.append(f"  {TICK} {len(derived_ok)} checks derived from the expected schema: no violations "
                         f"({guarded} answered from the catalog)")
        lines.extend(_constraint_lines(r))
        if r.migrations:
            lines.extend(_migration_lines(r.migrations, allow_pending))
        if r.backups or backup_within is not None:
            lines.extend(_backup_lines(r, backup_within))
        lines.append("")
    lines.append(_summary(results, allow_pending, backup_within))
    return redact("\n".join(lines))


def _constraint_lines(r: PollResult) -> list[str]:
    """Configured constraints one by one; of the derived ones only those not simply present."""
    lines = ["Constraints:"] if r.constraints else []
    quiet = sum(1 for c in r.constraints if c.source is not Source.CONFIG and c.status is Status.PRESENT)
    lines += [_constraint_line(c) for c in r.constraints
              if c.source is Source.CONFIG or c.status is not Status.PRESENT]
    if quiet:
        lines.append(f"  {TICK} {quiet} more constraints declared by the expected schema: present and valid")
    waiting = [n for n in r.not_run if n.status is Status.PENDING]
    if waiting:
        lines.append("Checks waiting for pending migrations:")
    lines += [f"  {TICK} {n.check.name}: not run yet - {n.why}" for n in waiting]
    stale = [n for n in r.not_run if n.status is Status.STALE]
    if stale:
        lines.append("Stale config (a warning: the exit code does not change):")
    lines += [f"  {WARN} check {n.check.name}: {n.why}" for n in stale]
    return lines


def _constraint_line(c: ConstraintResult) -> str:
    tag = f"{c.kind}, critical" if c.critical else str(c.kind)
    if c.source is not Source.CONFIG:
        tag += f", from {c.source}"
    if c.status is Status.PRESENT:
        state = "present and valid" + (f" as {c.actual}" if c.actual and c.actual != c.name else "")
        return f"  {TICK} {c.table}.{c.name} ({tag}): {state}"
    if c.status is Status.PENDING:
        return f"  {TICK} {c.table}.{c.name} ({tag}): pending - {c.detail}"
    if c.status is Status.STALE:
        return f"  {WARN} {c.table}.{c.name} ({tag}): stale - {c.detail}"
    actual = f" (live: {c.actual})" if c.actual and c.actual != c.name else ""
    return f"  {CROSS} {c.table}.{c.name} ({tag}): {c.status}{actual} - {c.detail}"


def _migration_lines(m: MigrationsResult, allow_pending: bool) -> list[str]:
    lines = ["Migrations:"]
    for part, message in m.errors:
        lines.append(f"  {FAIL} {part}: {message}")
    if m.history:
        mark = CROSS if m.history.problem_states(allow_pending=allow_pending) else TICK
        lines.append(f"  {mark} {m.history.summary}")
        for item in m.history.not_applied:
            detail = f" - {item.detail}" if item.detail else ""
            lines.append(f"      {item.state}: {item.name}{detail}")
    if m.forecast:
        lines.extend(_deploy_lines(m.forecast))
    if m.expected_unknown:
        lines.append(f"  {WARN} {m.expected_unknown}")
    if m.drift or m.drift_assessed:
        lines.append("Drift:" if m.drift else f"  {TICK} no schema drift")
    for d in m.drift:
        mark = CROSS if d.is_problem else TICK
        note = " (acknowledged)" if d.acknowledged else ""
        lines.append(f"  {mark} [{d.source}] {d.kind} {d.object}: {d.detail}{note}")
    return lines


def _backup_lines(r: PollResult, backup_within: float | None) -> list[str]:
    lines = ["Backups:"]
    b = r.backups
    for source in b.sources if b else ():
        newest = source.newest_complete
        mark = TICK if newest else CROSS
        lines.append(f"  {mark} {source.name}: {source.describe()}")
        for d in source.files:
            state = TICK if d.status is DumpStatus.COMPLETE else CROSS
            detail = f" - {d.detail}" if d.detail else ""
            taken = d.as_dict()["taken_at"]
            lines.append(f"      {state} {d.path} ({d.format}, {d.size} bytes, {taken}): {d.status}{detail}")
    if b and b.archiver:
        a = b.archiver
        mark = CROSS if a.failing else (TICK if a.enabled else WARN)
        archived = f"{a.archived} archived" + (f" (last {a.last_archived_wal})" if a.last_archived_wal else "")
        failed = f"{a.failed} failed" + (f" (last {a.last_failed_wal})" if a.last_failed_wal else "")
        lines.append(f"  {mark} WAL archiving: archive_mode={a.mode}, {archived}, {failed}"
                     + (", failing now" if a.failing else ""))
    if backup_within is not None:
        missing = r.missing_backup(backup_within)
        newest = b.newest_complete if b else None
        if missing:
            lines.append(f"  {CROSS} backup required before migrating: {missing}")
        elif newest is not None and r.started_at - newest.taken_at <= backup_within:
            lines.append(f"  {TICK} backup before migrating: {newest.path}, taken within {backup_within:g}s")
        else:
            lines.append(f"  {TICK} no backup required: no migration is pending")
    return lines




_EFFECT_WORDS = {"rows_inserted": "rows inserted", "rows_updated": "rows updated", "rows_deleted": "rows deleted",
                 "rows_lost": "rows lost (DROP TABLE)", "values_lost": "values lost (DROP COLUMN)"}


def _deploy_lines(f: Forecast) -> list[str]:
    deploy = f.deploy
    lines = _history_lines(f)
    if not deploy.migrations and deploy.outcome != Outcome.REFUSED:
        return lines
    mark = {Outcome.PASSES: TICK, Outcome.CANNOT_EVALUATE: WARN}.get(deploy.outcome, CROSS)
    lines.append(f"  {mark} prisma migrate deploy, predicted statement by statement: {deploy.summary()}")
    failure = deploy.failure
    if failure:
        s = failure[1]
        lines.append(f"      statement: {s.text.splitlines()[0][:160] if s.text else '(the whole script)'}")
        if s.inspect_sql:
            lines.append(f"      inspect: {s.inspect_sql}")
    for m in deploy.migrations:
        lines += _migration_prediction_lines(m)
    return lines


def _history_lines(f: Forecast) -> list[str]:
    view = f.view
    lines: list[str] = []
    if view.status == PrismaStatus.DIVERGED:
        lines.append(f"  {CROSS} the database's history and the folder differ (as `prisma migrate status` says): "
                     f"the last common migration is {view.last_common or 'null'}")
        if view.not_in_folder:
            lines.append(f"      applied, not in the folder: {', '.join(view.not_in_folder)}")
    if view.baseline_unresolved:
        lines.append(f"  {CROSS} the schema exists but no migration of the folder is recorded as applied "
                     "(a baseline never resolved): deploy would run it again")
    for command in f.commands:
        lines.append(f"      fix: {command}")
    return lines


def _migration_prediction_lines(m: MigrationPrediction) -> list[str]:
    effects = [f"{n} {_EFFECT_WORDS[effect]}" for effect, n in m.effects.items() if n]
    detail = f" - {', '.join(effects)}" if effects else ""
    reason = f" - {m.reason}" if m.reason and m.outcome != Outcome.FAILS else ""
    lines = [f"      {m.outcome.value}: {m.name}{detail}{reason}"]
    lines += [f"        {WARN} {warning}" for warning in m.warnings]
    for s in m.statements:
        if s.lock and s.rows_scanned:
            how = "rewrites" if s.rewrites else "scans"
            lines.append(f"        statement {s.number} (line {s.line}): {s.lock} lock on \"{s.table}\", "
                         f"{how} {s.rows_scanned} rows")
    return lines


def _summary(results: list[PollResult], allow_pending: bool, backup_within: float | None = None) -> str:
    down = [r.database for r in results if not r.up]
    checks = [c for r in results if r.up for c in r.checks]
    violated = [c for c in checks if c.status is CheckStatus.VIOLATED]
    failed = [c for c in checks if c.status is CheckStatus.FAILED]
    constraints = [c for r in results if r.up for c in r.constraints if c.is_problem]
    stale = sum(1 for r in results if r.up for n in r.not_run if n.status is Status.STALE) + sum(
        1 for r in results if r.up for c in r.constraints if c.status is Status.STALE)
    parts = [
        f"{len(checks) - len(violated) - len(failed)}/{len(checks)} checks healthy",
        f"{len(violated)} violated ({counted(sum(c.violations or 0 for c in violated), 'row')})",
        f"{len(failed)} failed",
        f"{counted(len(constraints), 'constraint')} missing or not valid",
    ]
    if stale:
        parts.append(f"{stale} stale config entries")
    migration_problems = [p for r in results if r.up and r.migrations
                          for p in r.migrations.problems(allow_pending=allow_pending)]
    if any(r.migrations for r in results):
        parts.append(f"{counted(len(migration_problems), 'migration/drift problem')}")
    if backup_within is not None:
        missing = [r.database for r in results if r.up and r.missing_backup(backup_within)]
        parts.append(f"backup missing: {', '.join(missing)}" if missing else "backups ok")
    if down:
        parts.append(f"unreachable: {', '.join(down)}")
    mark = TICK if exit_code(results, allow_pending=allow_pending, backup_within=backup_within) == EXIT_OK else CROSS
    return f"{mark} Summary: " + ", ".join(parts)
