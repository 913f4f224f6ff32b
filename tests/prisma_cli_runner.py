"""Run the real Prisma CLI (`migrate deploy` / `status` / `resolve`) on a database.

The CLI is the npm project tests/prisma_cli (prisma 7.10); its native schema engine cannot be
downloaded here, so tests/prisma_cli/schema-engine.mjs stands in for it (the same engine
compiled to WebAssembly). `.ci/run` npm-installs the project.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict

CLI_DIR = Path(__file__).resolve().parent / "prisma_cli"
PRISMA = CLI_DIR / "node_modules" / ".bin" / "prisma"
ENGINE = CLI_DIR / "schema-engine.mjs"
SCHEMA = 'datasource db {\n  provider = "postgresql"\n}\n'
CONFIG = ("export default { schema: 'schema.prisma', migrations: { path: %s }, "
          "datasource: { url: process.env.DATABASE_URL } };\n")


def available() -> str | None:
    """None when the CLI can run, else why not."""
    if not PRISMA.exists():
        return f"{PRISMA} missing: run `npm ci` in {CLI_DIR} (.ci/run does)"
    return None


def database_url(dsn: str) -> str:
    """A libpq DSN (key=value or URL) as the postgresql:// URL Prisma wants."""
    p = conninfo_to_dict(dsn)
    auth = quote(p.get("user", "postgres"), safe="")
    if p.get("password"):
        auth += ":" + quote(p["password"], safe="")
    host = p.get("host", "127.0.0.1")
    if host.startswith("/"):
        return f"postgresql://{auth}@localhost:{p.get('port', 5432)}/{quote(p['dbname'])}?host={quote(host, safe='')}"
    return f"postgresql://{auth}@{host}:{p.get('port', 5432)}/{quote(p['dbname'])}"


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    output: str  # stdout and stderr


class PrismaCli:
    """One Prisma project (a config and an empty schema) around a migrations folder."""

    def __init__(self, migrations: Path):
        self._dir = tempfile.TemporaryDirectory(prefix="venzory-prisma-")
        root = Path(self._dir.name)
        (root / "schema.prisma").write_text(SCHEMA)
        (root / "prisma.config.mjs").write_text(CONFIG % repr(str(Path(migrations).resolve())))
        self.root = root

    def close(self) -> None:
        self._dir.cleanup()

    def run(self, dsn: str, *args: str, timeout: float = 120) -> CliResult:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRISMA_")}
        env.update(
            DATABASE_URL=database_url(dsn), PRISMA_SCHEMA_ENGINE_BINARY=str(ENGINE),
            PRISMA_ENGINES_CHECKSUM_IGNORE_MISSING="1", PRISMA_HIDE_UPDATE_MESSAGE="1", CHECKPOINT_DISABLE="1",
            NO_COLOR="1",
        )
        done = subprocess.run(
            [str(PRISMA), *args, "--config", "prisma.config.mjs"], cwd=self.root, env=env,
            capture_output=True, text=True, timeout=timeout,
        )
        return CliResult(done.returncode, done.stdout + done.stderr)

    def deploy(self, dsn: str) -> CliResult:
        return self.run(dsn, "migrate", "deploy")

    def status(self, dsn: str) -> CliResult:
        return self.run(dsn, "migrate", "status")

    def resolve(self, dsn: str, *, applied: str | None = None, rolled_back: str | None = None) -> CliResult:
        flag, name = ("--applied", applied) if applied else ("--rolled-back", rolled_back)
        return self.run(dsn, "migrate", "resolve", flag, name)
