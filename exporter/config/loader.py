"""YAML file -> validated Config, or a ConfigError that names file, line, key path and problem."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from exporter.config.models import Config


class ConfigError(Exception):
    """A config that cannot be used. str() is the operator-facing message."""


# ${VAR}, ${VAR:-default} or ${file:/path}; $$ escapes a literal dollar.
_VARIABLE = re.compile(r"\$\$|\$\{file:([^}]+)\}|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# A secret file is a password or a DSN: anything larger is a wrong path (/dev/zero, a log).
MAX_SECRET_FILE_BYTES = 64 * 1024


class _Expander:
    """Expands the variables of one config file. Remembers every value it read from a
    file (`${file:...}`, `VAR_FILE`): those are secrets, never shown in an error."""

    def __init__(self, env: Mapping[str, str], stand_in_unset: bool = False):
        self.env = env
        self.secrets: list[str] = []
        # Offline validation (check-config): an unset required variable is reported, not an
        # error; its value is a stand-in "${NAME}" so the rest of the file is still checked.
        self.stand_in_unset = stand_in_unset
        self.unset: list[UnsetVariable] = []

    def expand(self, text: str, path: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            if match.group(1) is not None:
                return self._read_secret(match.group(1).strip(), path)
            return self._variable(match.group(2), match.group(3), path)

        return _VARIABLE.sub(substitute, text)

    def _variable(self, name: str, default: str | None, path: str) -> str:
        value, from_file = self.env.get(name), self.env.get(f"{name}_FILE")
        if value and from_file:
            raise _KeyProblem(path, f"both {name} and {name}_FILE are set: set only one of them")
        if value:
            return value
        # Docker and Kubernetes secrets: DATABASE_URL_FILE=/run/secrets/db_url stands for
        # DATABASE_URL, the convention of the official images.
        if from_file:
            return self._read_secret(from_file, path, f" (from {name}_FILE)")
        if default is not None:
            return default
        if self.stand_in_unset:
            self.unset.append(UnsetVariable(name, path))
            return f"${{{name}}}"
        raise _KeyProblem(path, f"environment variable {name} is not set (write ${{{name}:-}} to make it optional, "
                                f"or set {name}_FILE to a file holding the value)")

    def _read_secret(self, file: str, path: str, via: str = "") -> str:
        # The error names the file, never its content.
        try:
            with open(file, "rb") as stream:
                data = stream.read(MAX_SECRET_FILE_BYTES + 1)
        except OSError as e:
            raise _KeyProblem(path, f"cannot read secret file {file}{via}: {e.strerror or type(e).__name__}") from None
        if len(data) > MAX_SECRET_FILE_BYTES:
            raise _KeyProblem(path, f"secret file {file}{via} is larger than {MAX_SECRET_FILE_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _KeyProblem(path, f"secret file {file}{via} is not UTF-8 text") from None
        # `echo secret > file` and editors end the file with a newline: not part of the value.
        value = text.removesuffix("\n").removesuffix("\r")
        self.secrets.append(value)
        return value

    def tree(self, value: Any, path: str = "") -> Any:
        # Expansion happens after YAML parsing, so a secret containing ':' or '#' needs no quoting.
        if isinstance(value, str):
            return self.expand(value, path)
        if isinstance(value, dict):
            return {k: self.tree(v, _join(path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.tree(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value


class _KeyProblem(Exception):
    def __init__(self, path: str, problem: str):
        super().__init__(problem)
        self.path, self.problem = path, problem


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _line_index(node: yaml.Node, path: str = "", index: dict[str, int] | None = None) -> dict[str, int]:
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
        parent = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", probe)
        if parent == probe:  # a key with '.' or '[' in it: no parent to find by text
            break
        probe = parent
    line = lines.get(probe)
    prefix = f"{file}:{line}" if line else file
    return f"{prefix}: {path}" if path else prefix


def problem_at(file: str, lines: dict[str, int], path: str, problem: str) -> ConfigError:
    """One "file:line: key.path: problem" error (for checks made after validation)."""
    return ConfigError(f"{_where(file, lines, path)}: {problem}")


def _loc_path(loc: tuple[str | int, ...], data: Any) -> str:
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
        elif part == "[key]":
            continue  # pydantic's marker for "the key itself is wrong": the path names it already
        else:
            path = _join(path, part)
            node = None
    return path


def read_yaml(file: str) -> tuple[Any, dict[str, int]]:
    """The parsed document and its key path -> line index, or a ConfigError."""
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
    except RecursionError:  # a document nested thousands of levels deep
        raise ConfigError(f"{file}: invalid YAML: nested too deeply") from None
    return raw, (_line_index(node) if node is not None else {})


def validation_error(file: str, lines: dict[str, int], data: Any, error: ValidationError,
                     hide: Sequence[str] = ()) -> ConfigError:
    """pydantic's errors as one "file:line: key.path: problem" line each; the `hide`
    values (secrets read from files) are replaced by *** should a message quote them."""
    problems = []
    for err in error.errors(include_url=False, include_input=False):
        path = _loc_path(err["loc"], data)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{_where(file, lines, path)}: {message}")
    text = "\n".join(problems)
    for secret in hide:
        if secret:
            text = text.replace(secret, "***")
    return ConfigError(text)


@dataclass(frozen=True)
class UnsetVariable:
    """A required ${NAME} that was not set, and the key path that uses it."""

    name: str
    path: str


def load_config(file: str | Path, env: Mapping[str, str] | None = None) -> Config:
    return _load(str(file), _Expander(os.environ if env is None else env))


def load_config_offline(file: str | Path, env: Mapping[str, str] | None = None) -> tuple[Config, list[UnsetVariable]]:
    """The config validated without its environment's required variables (check-config on a
    machine that has no DATABASE_URL): every unset one is returned, not raised."""
    expander = _Expander(os.environ if env is None else env, stand_in_unset=True)
    return _load(str(file), expander), expander.unset


def _load(file: str, expander: _Expander) -> Config:
    raw, lines = read_yaml(file)
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping at the top (databases:, checks:, ...)")
    try:
        data = expander.tree(raw)
    except _KeyProblem as e:
        raise ConfigError(f"{_where(file, lines, e.path)}: {e.problem}") from None
    try:
        stand_ins = {f"${{{variable.name}}}" for variable in expander.unset}
        return Config.model_validate(data, context={"stand_ins": stand_ins})
    except ValidationError as e:
        raise validation_error(file, lines, data, e, expander.secrets) from None
