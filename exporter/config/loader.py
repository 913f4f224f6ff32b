"""YAML file -> validated Config, or a ConfigError that names file, line, key path and problem."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from exporter.config.models import Config


class ConfigError(Exception):
    """A config that cannot be used. str() is the operator-facing message."""


# ${VAR} or ${VAR:-default}; $$ escapes a literal dollar.
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand(text: str, path: str, env: os._Environ | dict[str, str]) -> str:
    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value:
            return value
        if default is not None:
            return default
        raise _KeyProblem(path, f"environment variable {name} is not set (write ${{{name}:-}} to make it optional)")

    return _VARIABLE.sub(substitute, text)


class _KeyProblem(Exception):
    def __init__(self, path: str, problem: str):
        super().__init__(problem)
        self.path, self.problem = path, problem


def _expand_tree(value: Any, path: str, env) -> Any:
    # Expansion happens after YAML parsing, so a secret containing ':' or '#' needs no quoting.
    if isinstance(value, str):
        return expand(value, path, env)
    if isinstance(value, dict):
        return {k: _expand_tree(v, _join(path, k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_tree(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    return value


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _line_index(node: yaml.Node, path: str = "", index: dict | None = None) -> dict[str, int]:
    """Key path -> 1-based line, so errors can point into the file."""
    index = {} if index is None else index
    index.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = _join(path, key.value)
            index[child] = key.start_mark.line + 1
            _line_index(value, child, index)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, f"{path}[{i}]", index)
    return index


def _where(file: str, lines: dict[str, int], path: str) -> str:
    probe = path
    while probe and probe not in lines:  # a missing key: point at its parent
        probe = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", probe)
    line = lines.get(probe)
    prefix = f"{file}:{line}" if line else file
    return f"{prefix}: {path}" if path else prefix


def _loc_path(loc: tuple, data: Any) -> str:
    """pydantic's error location -> 'checks[3].rule' (dropping union tags like 'row')."""
    path, node = "", data
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
        elif isinstance(node, dict) and part in node:
            path = _join(path, part)
            node = node[part]
        elif isinstance(node, dict) and part in ("row", "orphan", "duplicate") or part.startswith("function-"):
            continue  # a discriminated-union tag or validator name, not a key in the file
        else:
            path = _join(path, part)
            node = None
    return path


def load_config(file: str | Path, env: dict[str, str] | None = None) -> Config:
    file = str(file)
    env = os.environ if env is None else env
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{file}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text") from None
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping at the top (databases:, checks:, ...)")
    lines = _line_index(node)
    try:
        data = _expand_tree(raw, "", env)
    except _KeyProblem as e:
        raise ConfigError(f"{_where(file, lines, e.path)}: {e.problem}") from None
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False, include_input=False):
            path = _loc_path(err["loc"], data)
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key"
            problems.append(f"{_where(file, lines, path)}: {message}")
        raise ConfigError("\n".join(problems)) from None
