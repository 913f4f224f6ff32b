"""`init-config`: a starting config for an app's database and migrations folder.

The template config (normally the shipped config/venzory.yaml) gives the runbook's checks
and constraints; the migrations folder (replayed on the shadow server) gives what the app
declares now. Each runbook entry whose rule the app still declares is written with the name
the app gives it today (matched by meaning, exporter.schema.meaning); entries whose table or
column the app dropped are left out, with a comment; every CHECK the runbook has no
category for is written as a check of category `schema_rule`. Foreign keys, unique indexes
and NOT NULL columns need no entry: they are expectations of the migrations on their own
(docs/expectations.md). Every entry carries a comment saying where it came from.

The template's other sections (exporter, databases, events) are copied as they are.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

import yaml

from exporter.checks.constraints import DERIVED_CATEGORY, _columns_named, check_meaning, derive, derived_check_name
from exporter.config import Config
from exporter.migrations.shadow import ExpectedSteps
from exporter.schema.meaning import Key, meanings
from exporter.schema.model import ConstraintKind, Schema

_REGENERATED = ("checks", "constraints")


def render(template_text: str, template: Config, steps: ExpectedSteps, live: Schema | None, source: str) -> str:
    final = steps.final
    rules = meanings(final)
    origin = _origins(steps)
    out = [f"# Written by `venzory-db-exporter init-config` on {dt.date.today().isoformat()} from {source}",
           f"# ({len(steps.steps)} migrations, the last {steps.names[-1] if steps.names else 'none'}) and the",
           "# runbook's entries of the template config. Review it, then:",
           "#   venzory-db-exporter check-config --config FILE",
           ""]
    out += _kept_sections(template_text)

    out += ["checks:"]
    covered: set[Key] = set()
    for check in template.checks:
        key = check_meaning(check)
        missing = [f"{t}.{c}" for t, c in _columns_named(check) if not final.has_column(t, c)]
        if not final.has_table(check.table) or missing:
            what = f"table {check.table}" if not final.has_table(check.table) else f"column {missing[0]}"
            out += [f"  # left out: runbook check {check.name} - {what} no longer exists in the migrations", ""]
            continue
        covered.add(key)
        entry = check.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
        kept = rules.get(key)
        if kept is not None:
            entry["constraint"] = kept.name
        note = (f"guarded by {kept.name} ({origin.get(kept.name, 'the migrations')})" if kept is not None
                else "no constraint of the migrations guards it: counted on the rows")
        out += [f"  # runbook ({check.category}): {note}"] + _item(entry)
    extra = [(d, d.check) for d in derive(final)
             if d.kind == ConstraintKind.CHECK and d.key not in covered and d.check is not None]
    if extra:
        out += ["", "  # -- CHECK constraints of the app that no runbook category covers --------------------"]
    for d, derived in extra:
        entry = derived.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
        entry["name"] = derived_check_name(d.table, d.name)
        entry["category"] = DERIVED_CATEGORY
        out += [f"  # from {origin.get(d.name, 'the migrations')}"] + _item(entry)

    out += ["", "# Expected constraints. Foreign keys, unique indexes and NOT NULL columns of the migrations are",
            "# expectations without an entry here (docs/expectations.md); these are the runbook's, under",
            "# the names the app gives them now. `critical: true` pages when the rule is missing.",
            "constraints:"]
    template_meaning = {(c.table, c.constraint): check_meaning(c) for c in template.checks if c.constraint}
    for expected in template.constraints:
        meaning = template_meaning.get((expected.table, expected.name))
        kept = rules.get(meaning) if meaning is not None else None
        by_name = kept is None and (final.constraint(expected.table, expected.name) is not None
                                    or expected.name in final.indexes)
        if kept is None and not by_name:
            out += [f"  # left out: runbook constraint {expected.table}.{expected.name} - the migrations no longer "
                    "declare it (under any name)"]
            continue
        name = kept.name if kept is not None else expected.name
        entry = expected.model_dump(mode="json", exclude_defaults=True) | {"name": name}
        renamed = f" (runbook name: {expected.name})" if name != expected.name else ""
        pending = "" if live is None or name in _live_names(live, expected.table) else "; not in the database yet"
        out += [f"  # {origin.get(name, 'the migrations')}{renamed}{pending}"] + _item(entry)
    return "\n".join(out) + "\n"


def _item(entry: dict[str, Any]) -> list[str]:
    return ["  - " + yaml.safe_dump(entry, default_flow_style=True, sort_keys=False, width=10_000).strip()]


def _kept_sections(text: str) -> list[str]:
    """The template's top-level sections other than checks and constraints, verbatim."""
    lines, keep = [], True
    for line in text.splitlines():
        top = re.match(r"^([A-Za-z_]+):", line)
        if top:
            keep = top.group(1) not in _REGENERATED
        if keep:
            lines.append(line)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines + [""]


def _origins(steps: ExpectedSteps) -> dict[str, str]:
    """Constraint/index name -> "migration X", the first step whose schema has it."""
    found: dict[str, str] = {}
    for step in steps.steps:
        names: Iterable[str] = [c.name for c in step.schema.constraints.values()] + list(step.schema.indexes)
        for name in names:
            found.setdefault(name, f"migration {step.migration}")
    return found


def _live_names(live: Schema, table: str) -> set[str]:
    return {c.name for c in live.constraints_of(table)} | {i.name for i in live.indexes_of(table)}
