"""Deployment files: docker-compose.yml, Dockerfile, .dockerignore, deploy/.

No Docker engine here: the compose file is parsed (pyyaml) and every path it mounts or
builds is checked against the repository; the Prometheus config goes through
`promtool check config` (rule files resolved), the Dockerfile is read line by line.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

from exporter.config.models import ExporterConfig, parse_listen
from support import REPO

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
PROMETHEUS = REPO / "deploy" / "prometheus" / "prometheus.yml"
DEFAULT_PORT = parse_listen(ExporterConfig().listen)[1]
CONFIG_ENV = ("DATABASE_URL", "SHADOW_DATABASE_URL", "PRISMA_MIGRATIONS_DIR", "PRISMA_SCHEMA", "EVENTS_TOKEN",
              "SENTRY_DSN")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def expand(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR-default} with VAR unset; ${VAR} must have a default here."""
    def default(m: re.Match) -> str:
        assert m.group(2) is not None, f"{value}: ${{{m.group(1)}}} has no default"
        return m.group(2)
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", default, value)


def bind_mounts(service: dict) -> list[tuple[Path, str]]:
    """(host path in the repository, container path) of every bind mount (short syntax)."""
    out = []
    for volume in service.get("volumes", []):
        source, target = expand(volume).split(":")[:2]
        if source.startswith((".", "/")):
            out.append(((REPO / source).resolve(), target))
    return out


def container_to_repo(service: dict, container_path: str) -> Path | None:
    """The repository path a container path of a service comes from, through its bind mounts."""
    path = PurePosixPath(container_path)
    for host, target in bind_mounts(service):
        try:
            rest = path.relative_to(target)
        except ValueError:
            continue
        return host / rest
    return None


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


# -- docker-compose.yml -------------------------------------------------------------------------


def test_compose_parses_with_the_whole_picture():
    services = compose()["services"]
    assert {"postgres", "exporter", "prometheus", "alertmanager", "grafana"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name


def test_everything_compose_mounts_or_builds_exists():
    doc = compose()
    missing = []
    for name, service in doc["services"].items():
        build = service.get("build")
        if build:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not (REPO / context / dockerfile).is_file():
                missing.append(f"{name}: build {context}/{dockerfile}")
        for host, _ in bind_mounts(service):
            if not host.exists():
                missing.append(f"{name}: {host.relative_to(REPO)}")
            elif REPO not in host.parents and host != REPO:
                missing.append(f"{name}: {host} is outside the repository")
        for volume in service.get("volumes", []):
            source = expand(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in (doc.get("volumes") or {}), f"{name}: named volume {source} not declared"
    assert not missing, missing


def test_exporter_service_gets_its_config_and_environment():
    service = compose()["services"]["exporter"]
    env = service["environment"]
    for name in CONFIG_ENV:
        assert name in env, name
    # the config the image's CMD reads comes from the repository's config/
    cmd_config = next(i for i in dockerfile_instructions() if i[0] == "CMD")[1]
    config_path = json.loads(cmd_config)[-1]
    assert container_to_repo(service, config_path) == REPO / "config" / "venzory.yaml"
    # every ${VAR} the config requires (no default) is set
    required = set(re.findall(r"\$\{(\w+)\}", json.dumps(yaml.safe_load(
        (REPO / "config" / "venzory.yaml").read_text(encoding="utf-8")))))
    assert required <= set(env), required - set(env)
    # the migrations folder and schema it points at are mounted
    assert container_to_repo(service, env["PRISMA_MIGRATIONS_DIR"]).is_dir()
    assert container_to_repo(service, env["PRISMA_SCHEMA"]).is_file()
    ports = [p.split(":")[-1] for p in service["ports"]]
    assert str(DEFAULT_PORT) in ports


def test_prometheus_service_runs_the_repository_config_and_rules():
    service = compose()["services"]["prometheus"]
    flag = next(a for a in service["command"] if a.startswith("--config.file="))
    config = container_to_repo(service, flag.split("=", 1)[1])
    assert config == PROMETHEUS
    # rule_files resolve inside the container exactly as in the repository
    doc = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    container_dir = PurePosixPath(flag.split("=", 1)[1]).parent
    for pattern in doc["rule_files"]:
        resolved = PurePosixPath(posixpath.normpath(container_dir / pattern))  # what Prometheus opens
        host_dir = container_to_repo(service, str(resolved.parent))
        assert host_dir is not None, pattern
        assert sorted(host_dir.glob(resolved.name)) == sorted((REPO / "alerts").glob("*.rules.yml")), pattern


def test_alertmanager_and_grafana_services_use_the_repository_files():
    services = compose()["services"]
    am = services["alertmanager"]
    flag = next(a for a in am["command"] if a.startswith("--config.file="))
    assert container_to_repo(am, flag.split("=", 1)[1]) == REPO / "alerts" / "alertmanager.yml"

    grafana = services["grafana"]
    provisioning = container_to_repo(grafana, "/etc/grafana/provisioning")
    assert provisioning == REPO / "deploy" / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["uid"] == "venzory-prometheus" and ds["isDefault"] is True
    assert ds["url"] == "http://prometheus:9090"
    dashboards = yaml.safe_load((provisioning / "dashboards" / "venzory.yml").read_text(encoding="utf-8"))
    (provider,) = dashboards["providers"]
    folder = container_to_repo(grafana, provider["options"]["path"])
    assert (folder / "venzory-db.json").is_file()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert container_to_repo(grafana, home) == REPO / "grafana" / "venzory-db.json"


# -- deploy/prometheus/prometheus.yml -----------------------------------------------------------


def test_promtool_check_config_resolves_the_rule_files():
    if not shutil.which("promtool"):
        pytest.skip("promtool not installed (apt-get install -y prometheus)")
    result = subprocess.run(["promtool", "check", "config", str(PROMETHEUS)], capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 rule files found" in output and "venzory-db.rules.yml" in output, output


def test_prometheus_scrapes_the_exporter_and_alerts_to_alertmanager():
    doc = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    targets = [t for sc in jobs["venzory-db-exporter"]["static_configs"] for t in sc["targets"]]
    assert targets == [f"exporter:{DEFAULT_PORT}"]
    assert "exporter" in compose()["services"]
    am_targets = [t for a in doc["alerting"]["alertmanagers"] for sc in a["static_configs"] for t in sc["targets"]]
    assert am_targets == ["alertmanager:9093"]
    assert doc["global"]["evaluation_interval"] == "1m"  # what alerts/tests/ evaluate at


# -- Dockerfile and .dockerignore ----------------------------------------------------------------


def test_dockerfile_base_user_healthcheck_port_entrypoint():
    ins = dockerfile_instructions()
    # Pinned to a Debian release (the digest: docs/monitoring.md, "Image"); both stages alike.
    (base,) = [rest.split("=", 1)[1] for word, rest in ins if word == "ARG" and rest.startswith("BASE=")]
    assert base.split("@")[0] == "python:3.11-slim-bookworm", base
    froms = [rest for word, rest in ins if word == "FROM"]
    assert froms and all(f.split()[0] == "${BASE}" for f in froms), froms
    final = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    users = [rest for word, rest in ins[final:] if word == "USER"]
    assert users, "the final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users
    # Hash-checked locked versions only; the package itself adds no dependency.
    runs = [rest for word, rest in ins if word == "RUN"]
    assert "pip install --require-hashes --no-deps -r requirements/runtime.lock" in runs
    assert "pip install --no-deps --no-build-isolation ." in runs

    (health,) = [rest for word, rest in ins if word == "HEALTHCHECK"]
    command = json.loads(health[health.index("CMD") + 3:].strip())
    assert command[:2] == ["python", "-c"]
    compile(command[2], "HEALTHCHECK", "exec")  # valid Python
    assert "urllib.request" in command[2] and f"127.0.0.1:{DEFAULT_PORT}/healthz" in command[2]

    exposed = [rest for word, rest in ins if word == "EXPOSE"]
    assert exposed == [str(DEFAULT_PORT)]
    assert [json.loads(rest) for word, rest in ins if word == "ENTRYPOINT"] == [["venzory-db-exporter"]]
    assert [json.loads(rest) for word, rest in ins if word == "CMD"] == [
        ["run", "--config", "/etc/venzory-db-exporter/venzory.yaml"]]


def _dockerignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.replace("**/", "")) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_build_copies():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]
    copied = []
    for word, rest in dockerfile_instructions():
        if word == "COPY" and "--from=" not in rest:
            copied += rest.split()[:-1]
    assert copied
    for source in copied:
        assert (REPO / source).exists(), source
        assert not _dockerignored(source.rstrip("/"), patterns), f"{source} is excluded by .dockerignore"
        for file in ((REPO / source).rglob("*.py") if (REPO / source).is_dir() else []):
            rel = file.relative_to(REPO).as_posix()
            if "__pycache__" not in rel:
                assert not _dockerignored(rel, patterns), rel
    for heavy in (".git", "tests", "tests/prisma_app/node_modules"):
        assert _dockerignored(heavy, patterns), heavy


def test_postgres_init_creates_the_roles_the_exporter_uses():
    service = compose()["services"]["postgres"]
    initdb = container_to_repo(service, "/docker-entrypoint-initdb.d")
    sql = "\n".join(p.read_text(encoding="utf-8") for p in sorted(initdb.iterdir()))
    exporter_env = compose()["services"]["exporter"]["environment"]
    for variable in ("DATABASE_URL", "SHADOW_DATABASE_URL"):
        role = re.match(r"postgresql://(\w+):", exporter_env[variable]).group(1)
        assert f"CREATE ROLE {role} LOGIN" in sql, role
    assert "pg_read_all_data" in sql and "default_transaction_read_only = on" in sql
