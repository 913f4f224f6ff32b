"""deploy/kubernetes/: assembled by `kubectl kustomize` (offline), every resource validated
against its schema - the Kubernetes API's (kubernetes-validate, strict: unknown fields are
errors) and prometheus-operator's (tests/k8s_schemas, generated from the operator's API
types) - and wired to the image, the config and the alerts as they really are."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
KUSTOMIZE = REPO / "deploy" / "kubernetes"
SCHEMAS = REPO / "tests" / "k8s_schemas"
# The oldest Kubernetes release still commonly run that the manifests must suit.
KUBERNETES_VERSION = "1.29"


def _generator():
    spec = importlib.util.spec_from_file_location("k8s_generate", KUSTOMIZE / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def resources() -> dict[str, dict]:
    """kind -> the resource, as `kubectl kustomize` assembles them."""
    if not shutil.which("kubectl"):
        pytest.skip("kubectl not installed (apt-get install kubernetes-client; .ci/run does)")
    result = subprocess.run(["kubectl", "kustomize", str(KUSTOMIZE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one resource per kind expected"
    return by_kind


def test_generated_files_are_up_to_date():
    stale = [str(path.relative_to(REPO)) for path, text in _generator().generated().items()
             if not path.is_file() or path.read_text(encoding="utf-8") != text]
    assert not stale, f"run python3 deploy/kubernetes/generate.py: {stale} differ from what it writes"


def test_prometheus_rule_is_the_rules_file():
    generator = _generator()
    rule = yaml.safe_load((KUSTOMIZE / "prometheusrule.yaml").read_text(encoding="utf-8"))
    assert rule["spec"]["groups"] == yaml.safe_load(generator.RULES.read_text(encoding="utf-8"))["groups"]


def test_runbook_base_rewrites_every_link_and_rejects_a_relative_one():
    generator = _generator()
    text = generator.RULES.read_text(encoding="utf-8")
    moved = yaml.safe_load(generator.with_runbook_base(text, "https://git.example.com/ops/x/blob/v2/docs/runbook.md"))
    urls = {r["alert"]: r["annotations"]["runbook_url"] for g in moved["groups"] for r in g["rules"] if "alert" in r}
    assert urls and all(url == f"https://git.example.com/ops/x/blob/v2/docs/runbook.md#{name.lower()}"
                        for name, url in urls.items()), urls
    with pytest.raises(ValueError):
        generator.with_runbook_base(text, "docs/runbook.md")


def test_a_new_alerts_relative_link_gets_the_shared_base():
    """What the next engineer adding an alert sees: write any runbook_url, run generate.py."""
    generator = _generator()
    text = generator.RULES.read_text(encoding="utf-8")
    base = generator.current_runbook_base(text)
    added = text.replace("      - alert: VenzoryDbExporterDown",
                         "      - alert: VenzoryDbSomethingNew\n        expr: vector(1)\n"
                         "        annotations:\n          runbook_url: docs/runbook.md#tbd\n\n"
                         "      - alert: VenzoryDbExporterDown", 1)
    assert generator.current_runbook_base(added) == base
    fixed = yaml.safe_load(generator.with_runbook_base(added, base))
    rules = {r["alert"]: r for g in fixed["groups"] for r in g["rules"] if "alert" in r}
    assert rules["VenzoryDbSomethingNew"]["annotations"]["runbook_url"] == f"{base}#venzorydbsomethingnew"
    assert generator.with_runbook_base(text, base) == text  # idempotent on the shipped rules


def test_core_resources_match_the_kubernetes_schemas(resources):
    problems = []
    for kind, resource in resources.items():
        if resource["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{kind}: {'.'.join(map(str, e.path))}: {e.message}")
    assert not problems, "\n".join(problems)
    assert {"Deployment", "Service", "ConfigMap"} <= set(resources)


def test_kubernetes_validation_rejects_what_it_should(resources):
    """The validator really checks: a typo'd field and a wrong type are errors."""
    deployment = json.loads(json.dumps(resources["Deployment"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment = json.loads(json.dumps(resources["Deployment"]))
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def _operator_validate(docs: list[dict]) -> subprocess.CompletedProcess:
    if not (SCHEMAS / "node_modules").is_dir():
        pytest.skip("npm install in tests/k8s_schemas first (.ci/run does)")
    return subprocess.run(["node", "validate.mjs"], cwd=SCHEMAS, input="\n".join(map(json.dumps, docs)),
                          capture_output=True, text=True, timeout=60)


def test_operator_resources_match_the_prometheus_operator_schemas(resources):
    result = _operator_validate([resources["ServiceMonitor"], resources["PrometheusRule"]])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["ServiceMonitor/venzory-db-exporter:", "valid",
                                     "PrometheusRule/venzory-db-exporter:", "valid"]
    broken = json.loads(json.dumps(resources["PrometheusRule"]))
    broken["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    assert _operator_validate([broken]).returncode == 1


def test_deployment_runs_the_image_as_the_dockerfile_built_it(resources):
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"requests", "limits"} <= set(container["resources"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (port,) = container["ports"]
    assert port["containerPort"] == 19187
    # The config: the ConfigMap holds the shipped file, mounted where the args read it.
    config_path = container["args"][container["args"].index("--config") + 1]
    mount = next(m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = resources["ConfigMap"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["data"][Path(config_path).name] == (REPO / "config" / "venzory.yaml").read_text(encoding="utf-8")
    # DATABASE_URL from a Secret, never a literal.
    env = {e["name"]: e for e in container["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "DATABASE_URL"
    assert all("value" not in e for name, e in env.items() if name.endswith(("_URL", "_TOKEN", "_DSN")))


def test_prometheus_scrapes_it_under_the_job_the_alerts_match(resources):
    service, monitor = resources["Service"], resources["ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    assert service["spec"]["selector"].items() <= resources["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    # The operator names the job after the Service; the alerts select job="venzory-db-exporter".
    rules = (REPO / "alerts" / "venzory-db.rules.yml").read_text(encoding="utf-8")
    assert f'job="{service["metadata"]["name"]}"' in rules
    assert "jobLabel" not in monitor["spec"]
