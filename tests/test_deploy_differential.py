"""The deploy prediction against the real Prisma CLI, scenario by scenario (tests/deploy_scenarios.py).

Every scenario is predicted by the exporter on a read-only session, then `prisma migrate
status` and `prisma migrate deploy` run for real on a copy of the database. The agreement
table is printed (and written to $DEPLOY_AGREEMENT_OUT when set); docs/migrations.md holds
the last one measured.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

import prisma_cli_runner
from deploy_scenarios import Lab, agreement_table, all_scenarios, describe, scenario_counts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def comparisons(pg_server):
    missing = prisma_cli_runner.available()
    if missing:
        pytest.skip(f"the real Prisma CLI is not installed: {missing}")
    lab = Lab(pg_server)
    lab.build_templates()
    with ThreadPoolExecutor(max_workers=2) as pool:  # 2 cores: two CLI runs at a time
        results = list(pool.map(lab.run, all_scenarios()))
    table = agreement_table(results)
    print(f"\n{len(results)} scenarios ({scenario_counts(results)})\n{table}")
    out = os.environ.get("DEPLOY_AGREEMENT_OUT")
    if out:
        with open(out, "w") as f:
            f.write(f"{len(results)} scenarios ({scenario_counts(results)})\n\n{table}\n\n")
            f.write("\n".join(describe(c) for c in results if False in c.fields.values()) + "\n")
    return results


def test_at_least_200_scenarios_of_every_kind(comparisons):
    assert len(comparisons) >= 200
    outcomes = {c.real.outcome for c in comparisons}
    assert {"passes", "fails", "refused"} <= outcomes


def test_never_predicts_success_when_the_real_deploy_fails(comparisons):
    wrong = [describe(c) for c in comparisons if c.predicted_success_but_failed]
    assert not wrong, "\n".join(wrong)


def test_every_evaluated_scenario_agrees_with_the_real_cli(comparisons):
    wrong = [describe(c) for c in comparisons if False in c.fields.values()]
    assert not wrong, f"{len(wrong)} disagreements:\n" + "\n".join(wrong)


def test_only_the_scenarios_built_to_abstain_are_left_unevaluated(comparisons):
    # A DO block with a LOOP and an INSERT ... ON CONFLICT keep the honest fallback proven;
    # everything else (the fixture's idempotent DO block, INSERT ... SELECT, cascades) is evaluated.
    abstained = [c.scenario.name for c in comparisons if c.predicted.outcome == "cannot_evaluate"]
    assert sorted(abstained) == ["clean/do_loop[rows]", "clean/insert_on_conflict[rows]"], abstained
