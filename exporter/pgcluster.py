"""A throwaway local PostgreSQL cluster, started from the installed server binaries.

Used by `venzory-db-exporter demo` and by the test suite: one implementation, so the demo
a newcomer runs is the database the tests prove things against. Never used on a
monitored database.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg


class NoPostgresBinaries(RuntimeError):
    pass


def find_bindir() -> Path:
    """Where `initdb` and `pg_ctl` live: $PG_BINDIR, PATH, or Debian's /usr/lib/postgresql/N/bin."""
    if os.environ.get("PG_BINDIR"):  # an explicit choice is the only candidate
        candidates = [Path(os.environ["PG_BINDIR"])]
    else:
        on_path = shutil.which("initdb")
        candidates = [Path(on_path).parent] if on_path else []
        candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    raise NoPostgresBinaries(
        "no PostgreSQL server binaries found (looked for initdb and pg_ctl in $PG_BINDIR, PATH "
        "and /usr/lib/postgresql/*/bin); install them (Debian: apt-get install postgresql) "
        "or point the exporter at an existing database with DATABASE_URL"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Cluster:
    datadir: Path
    port: int
    bindir: Path
    user: str = "postgres"

    def dsn(self, dbname: str = "postgres", **extra: str) -> str:
        params = {"host": "127.0.0.1", "port": str(self.port), "user": self.user, "dbname": dbname}
        params.update(extra)
        return " ".join(f"{k}={v}" for k, v in params.items())

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Drop-and-create a database; returns its DSN."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run_as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args], check=check)

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("stop", "-m", mode, "-w", check=False)

    def start(self) -> None:
        self.pg_ctl("start", "-w", "-t", "60", "-l", str(self.datadir / "server.log"))

    def save_template(self, path: Path) -> None:
        """Keep a copy of the stopped cluster at `path` for start_cluster(template=...).
        Only a speed-up: when the copy cannot be written, nothing is kept."""
        self.stop()
        partial = path.with_name(f"{path.name}.{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", str(self.datadir), str(partial)], check=True, capture_output=True)
            partial.rename(path)  # atomic: two starts at once never see half a copy
        except (OSError, subprocess.CalledProcessError):
            shutil.rmtree(partial, ignore_errors=True)
        finally:
            self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def _owner_prefix() -> list[str]:
    # initdb and postgres refuse to run as root: run them as the `postgres` user.
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


def _run_as_owner(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_owner_prefix() + cmd, check=check, capture_output=True, text=True)


def start_cluster(port: int | None = None, settings: dict[str, str] | None = None,
                  template: Path | None = None) -> Cluster:
    """A new cluster in a temporary folder, started on 127.0.0.1: initdb, or a copy of
    `template` (a data directory saved by Cluster.save_template) when given."""
    bindir = find_bindir()
    root = Path(tempfile.mkdtemp(prefix="venzory-pg-"))
    datadir = root / "data"
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    if template is not None:
        subprocess.run(["cp", "-a", str(template), str(datadir)], check=True)  # keeps owner and modes
    else:
        _run_as_owner([str(bindir / "initdb"), "-D", str(datadir), "-U", user, "-A", "trust",
                       "-E", "UTF8", "--no-sync"])
    port = port or free_port()
    conf = {
        "port": str(port),
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": f"'{root}'",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
        "shared_preload_libraries": "'pg_stat_statements'",
    }
    conf.update(settings or {})
    with open(datadir / "postgresql.conf", "a") as f:
        f.writelines(f"{k} = {v}\n" for k, v in conf.items())
    cluster = Cluster(datadir, port, bindir, user)
    cluster.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(cluster.dsn(), connect_timeout=2).close()
            return cluster
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
