"""Alert rules (alerts/venzory-db.rules.yml), their promtool tests (alerts/tests/), the on-call
runbook they link to (docs/runbook.md) and the example Alertmanager config
(alerts/alertmanager.yml), checked with the real tools: promtool (Debian package
`prometheus`) and amtool / prometheus-alertmanager (`prometheus-alertmanager`). A test
whose tool is missing is skipped with the reason.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from support import CONTRACT_METRICS, REPO, need
from test_grafana import metric_names

RULES = sorted((REPO / "alerts").glob("*.rules.yml"))
RULE_TESTS = sorted((REPO / "alerts" / "tests").glob("*.yml"))
ALERTMANAGER = REPO / "alerts" / "alertmanager.yml"
RUNBOOK = REPO / "docs" / "runbook.md"
MONITORING = REPO / "docs" / "monitoring.md"

SEVERITY_RECEIVER = {"critical": "pager", "warning": "chat"}
# Alerts computed from what the exporter reads in a database: inhibited while the exporter
# or that database is down (alerts/alertmanager.yml). Groups, plus single alerts.
DATA_GROUPS = {"venzory-db-data", "venzory-db-schema", "venzory-db-migrations"}
DATA_EXTRA = {"VenzoryDbCheckFailing"}
EXPORTER_DOWN_EXTRA = {"VenzoryDbDatabaseDown", "VenzoryDbPollsStale", "VenzoryDbPollsSkipped"}


def run(*cmd: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def groups() -> list[dict]:
    out = []
    for path in RULES:
        out += yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    return out


def alerts() -> list[dict]:
    return [r for g in groups() for r in g["rules"] if "alert" in r]


def alert_names() -> list[str]:
    return [a["alert"] for a in alerts()]


def recorded_names() -> set[str]:
    return {r["record"] for g in groups() for r in g["rules"] if "record" in r}


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def markdown_anchors(path: Path) -> set[str]:
    anchors, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.+)", line)):
            anchors.add(github_anchor(m.group(1)))
    return anchors


# -- promtool ---------------------------------------------------------------------------------


def test_promtool_check_rules():
    need("promtool")
    assert RULES, "no alerts/*.rules.yml"
    result = run("promtool", "check", "rules", *map(str, RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules():
    need("promtool")
    assert RULE_TESTS, "no alerts/tests/*.yml"
    result = run("promtool", "test", "rules", *map(str, RULE_TESTS), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the rules' conventions ---------------------------------------------------------------------


def test_every_alert_has_severity_and_annotations():
    problems = []
    for a in alerts():
        name, labels, ann = a["alert"], a.get("labels", {}), a.get("annotations", {})
        if not re.fullmatch(r"VenzoryDb[A-Z][A-Za-z0-9]+", name):
            problems.append(f"{name}: not a VenzoryDb... CamelCase name")
        if labels.get("severity") not in ("critical", "warning", "info"):
            problems.append(f"{name}: severity {labels.get('severity')!r}")
        for key in ("summary", "description", "runbook_url"):
            if not str(ann.get(key, "")).strip():
                problems.append(f"{name}: no {key}")
        if not str(ann.get("summary", "")).endswith("."):
            problems.append(f"{name}: summary is not one sentence ending with a period")
        if "{{ $labels" not in str(ann.get("description", "")):
            problems.append(f"{name}: description does not show the labels")
    assert not problems, "\n".join(problems)
    assert len(alert_names()) == len(set(alert_names())), "duplicate alert names"


def test_every_runbook_url_is_an_absolute_link_to_its_runbook_heading():
    """A pager or chat shows runbook_url as is: an absolute link, one base for every alert,
    ending in the anchor of the alert's heading in docs/runbook.md. A new alert's link is
    filled in by `python3 deploy/kubernetes/generate.py`."""
    anchors = markdown_anchors(RUNBOOK)
    fix = "run: python3 deploy/kubernetes/generate.py"
    bases, problems = set(), []
    for a in alerts():
        base, _, anchor = a["annotations"]["runbook_url"].partition("#")
        bases.add(base)
        if not re.fullmatch(r"https?://[^\s#]+/docs/runbook\.md", base):
            problems.append(f"{a['alert']}: {base!r} is not an absolute link to docs/runbook.md ({fix})")
        if anchor != a["alert"].lower():
            problems.append(f"{a['alert']}: anchor #{anchor}, expected #{a['alert'].lower()} ({fix})")
        if anchor not in anchors:
            problems.append(f"{a['alert']}: no heading in docs/runbook.md for #{anchor}")
    assert not problems, "\n".join(problems)
    assert len(bases) == 1, f"more than one runbook base: {sorted(bases)} ({fix})"


def test_runbook_links_resolve():
    """Links inside the runbook and to monitoring.md point to existing headings."""
    text = RUNBOOK.read_text(encoding="utf-8")
    local = markdown_anchors(RUNBOOK)
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in local, f"runbook link to missing #{anchor}"
    for target, anchor in re.findall(r"\]\(([\w./-]+\.md)#([^)]+)\)", text):
        assert anchor in markdown_anchors(RUNBOOK.parent / target), f"{target}#{anchor}"


def test_runbook_carries_the_corrections():
    text = RUNBOOK.read_text(encoding="utf-8")
    assert "P2004 never arrives on PostgreSQL" in text
    assert "P2039" in text and "P2010" in text
    assert "Database schema is up to date" in text
    for command in ("prisma migrate resolve", "migrate dev", "migrate reset", "db push", "pg_dump",
                    "venzory-db-exporter verify --config config/venzory.yaml", "amtool silence add", "acknowledge:"):
        assert command in text, command


def test_rules_query_only_contract_metrics():
    allowed = CONTRACT_METRICS | recorded_names() | {"up"}
    bad = {}
    for g in groups():
        for r in g["rules"]:
            unknown = metric_names(r["expr"]) - allowed
            if unknown:
                bad[r.get("alert") or r.get("record")] = sorted(unknown)
    assert not bad, f"metrics outside the contract (docs/metrics.md): {bad}"


def test_aggregations_keep_job_and_instance_for_inhibition():
    """Alertmanager inhibits on job and instance (alerts/alertmanager.yml): every
    aggregation of an alert must keep them."""
    for a in alerts():
        for clause in re.findall(r"\bby\s*\(([^)]*)\)", a["expr"]):
            labels = {label.strip() for label in clause.split(",")}
            assert {"job", "instance"} <= labels, f"{a['alert']}: by ({clause})"


# -- the promtool tests cover every alert ------------------------------------------------------


def _rule_test_cases() -> list[dict]:
    cases = []
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert doc["rule_files"], path
        for test in doc["tests"]:
            cases += test.get("alert_rule_test", [])
    return cases


def test_every_alert_is_tested_firing_and_not_firing():
    firing, silent = set(), set()
    for case in _rule_test_cases():
        (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = set(alert_names())
    untested = names - firing - silent
    assert not untested, f"alerts without a promtool test: {sorted(untested)}"
    assert not names - firing, f"never tested firing: {sorted(names - firing)}"
    assert not names - silent, f"never tested silent: {sorted(names - silent)}"
    assert not (firing | silent) - names, f"tests for unknown alerts: {sorted((firing | silent) - names)}"


def test_rule_tests_load_the_shipped_rules():
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        files = {(path.parent / f).resolve() for f in doc["rule_files"]}
        assert files == {p.resolve() for p in RULES}, path


# -- Alertmanager ----------------------------------------------------------------------------


def test_amtool_check_config():
    need("amtool")
    result = run("amtool", "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("severity, receiver", sorted(SEVERITY_RECEIVER.items()))
def test_amtool_routes_by_severity(severity, receiver):
    need("amtool")
    result = run("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                 f"--verify.receivers={receiver}", f"severity={severity}", "alertname=VenzoryDbTest", "database=venzory")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_amtool_routes_every_alert_to_its_receiver():
    need("amtool")
    wrong = []
    for a in alerts():
        want = SEVERITY_RECEIVER[a["labels"]["severity"]]
        result = run("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                     f"alertname={a['alert']}", f"severity={a['labels']['severity']}", "database=venzory",
                     "job=venzory-db-exporter", "instance=exporter:19187")
        if result.returncode != 0 or result.stdout.strip() != want:
            wrong.append(f"{a['alert']}: {result.stdout.strip() or result.stderr.strip()} (want {want})")
    assert not wrong, wrong


def _inhibit_rules() -> list[dict]:
    return yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))["inhibit_rules"]


def _targets_of(source: str) -> tuple[set[str], list[str]]:
    """Alert names an inhibit rule with this source alertname silences, and its `equal`."""
    for rule in _inhibit_rules():
        if rule["source_matchers"] == [f'alertname="{source}"']:
            (matcher,) = rule["target_matchers"]
            m = re.fullmatch(r'alertname=~"(.+)"', matcher)
            pattern = re.compile(m.group(1))
            return {n for n in alert_names() if pattern.fullmatch(n)}, rule["equal"]
    raise AssertionError(f"no inhibit rule with source {source}")


def test_inhibition_targets_are_the_data_alerts():
    data = {r["alert"] for g in groups() if g["name"] in DATA_GROUPS for r in g["rules"] if "alert" in r} | DATA_EXTRA
    targets, equal = _targets_of("VenzoryDbDatabaseDown")
    assert targets == data, (sorted(targets - data), sorted(data - targets))
    assert set(equal) == {"job", "instance", "database"}
    targets, equal = _targets_of("VenzoryDbExporterDown")
    assert targets == data | EXPORTER_DOWN_EXTRA, (sorted(targets - data), sorted(data - targets))
    assert set(equal) == {"job", "instance"}
    # ExporterDown comes from `up`: it has the labels it matches on, and no database label
    exporter_down = next(a for a in alerts() if a["alert"] == "VenzoryDbExporterDown")
    assert metric_names(exporter_down["expr"]) == {"up"} and "by" not in exporter_down["expr"]
    # application errors are never silenced by a down exporter or database
    for name in alert_names():
        if name in ("VenzoryDbConstraintViolationRateHigh", "VenzoryDbCriticalConstraintViolated",
                    "VenzoryDbPrismaErrors", "VenzoryDbErrorsAfterMigration"):
            assert name not in targets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, data: bytes | None = None) -> bytes:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read()


@pytest.mark.slow
def test_alertmanager_inhibits_data_alerts_of_a_down_exporter_or_database(tmp_path):
    """A real Alertmanager with the shipped route and inhibit rules (receivers swapped for
    local webhooks, so nothing leaves the machine): alerts posted through its API are
    suppressed exactly as docs/monitoring.md says."""
    binary = shutil.which("alertmanager") or need("prometheus-alertmanager")
    config = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    sink = f"http://127.0.0.1:{_free_port()}/"  # nothing listens: a notification would just fail
    config["receivers"] = [{"name": r["name"], "webhook_configs": [{"url": sink}]} for r in config["receivers"]]
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _http(f"{base}/-/ready")
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"alertmanager did not start: {proc.stderr.read() if proc.poll() is not None else 'timeout'}")
                time.sleep(0.2)

        common = {"job": "venzory-db-exporter"}
        a, b = {"instance": "exporter-a:19187", **common}, {"instance": "exporter-b:19187", **common}
        posted = {
            "exporter_down": {"alertname": "VenzoryDbExporterDown", "severity": "critical", **a},
            "negative_on_a": {"alertname": "VenzoryDbNegativeInventory", "severity": "critical", "database": "venzory", **a},
            "negative_on_b": {"alertname": "VenzoryDbNegativeInventory", "severity": "critical", "database": "venzory", **b},
            "db_down_b": {"alertname": "VenzoryDbDatabaseDown", "severity": "critical", "database": "staging", **b},
            "violations_staging": {"alertname": "VenzoryDbDataViolations", "severity": "warning", "database": "staging",
                                   "category": "invalid_quantity", **b},
            "drift_staging": {"alertname": "VenzoryDbSchemaDrift", "severity": "warning", "database": "staging",
                              "source": "migrations", "kind": "extra_column", **b},
            "errors_staging": {"alertname": "VenzoryDbPrismaErrors", "severity": "warning", "database": "staging",
                               "kind": "check", "code": "P2039", **b},
            "duplicates_venzory_b": {"alertname": "VenzoryDbDuplicateRows", "severity": "warning", "database": "venzory",
                                     "check": "item_name_duplicate", "table": "Item", **b},
        }
        body = json.dumps([{"labels": labels, "annotations": {"summary": key}} for key, labels in posted.items()])
        _http(f"{base}/api/v2/alerts", body.encode())

        expected = {
            "exporter_down": "active",
            "negative_on_a": "suppressed",  # its exporter is down
            "negative_on_b": "active",  # another exporter
            "db_down_b": "active",
            "violations_staging": "suppressed",  # its database is down
            "drift_staging": "suppressed",
            "errors_staging": "active",  # application errors are never inhibited
            "duplicates_venzory_b": "active",  # another database of the same exporter
        }
        deadline = time.monotonic() + 20
        while True:
            got = {a["annotations"]["summary"]: a["status"]["state"] for a in json.loads(_http(f"{base}/api/v2/alerts"))}
            if got == expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert got == expected
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
