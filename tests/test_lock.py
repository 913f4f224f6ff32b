"""The dependency locks (requirements/*.lock, written by scripts/lock) stay in step with
pyproject.toml: every dependency is pinned, at a version its specifier allows, with hashes.
A dependency added without running scripts/lock fails here, not in the image build."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
# The build backend, locked too (requirements/build.in).
BUILD = [line for line in (REPO / "requirements" / "build.in").read_text(encoding="utf-8").splitlines()
         if line.strip() and not line.startswith("#")]


def pins(lock: str) -> dict[str, str]:
    text = (REPO / "requirements" / lock).read_text(encoding="utf-8")
    entries = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) ((?:\\\n\s+--hash=sha256:[0-9a-f]{64}\s*)+)", text, re.M)
    assert entries, f"{lock}: no hash-pinned entries"
    return {canonicalize_name(name): version for name, version, _ in entries}


def unmet(requirements: list[str], pinned: dict[str, str]) -> list[str]:
    problems = []
    for line in requirements:
        req = Requirement(line)
        version = pinned.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req.name}: not in the lock")
        elif version not in req.specifier:
            problems.append(f"{req.name}: locked {version}, pyproject.toml wants {req.specifier}")
    return problems


def test_runtime_lock_pins_every_dependency():
    problems = unmet(PROJECT["dependencies"] + BUILD, pins("runtime.lock"))
    assert not problems, f"run scripts/lock: {problems}"


def test_test_lock_pins_the_test_extras_at_the_runtime_versions():
    runtime, test = pins("runtime.lock"), pins("test.lock")
    problems = unmet(PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"] + BUILD, test)
    problems += [f"{name}: {version} in runtime.lock, {test.get(name)} in test.lock"
                 for name, version in runtime.items() if test.get(name) != version]
    assert not problems, f"run scripts/lock: {problems}"
