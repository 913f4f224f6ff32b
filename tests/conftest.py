"""Shared fixtures: a real PostgreSQL server for the whole session.

The suite starts its own throwaway cluster from the local server binaries, or uses the
server of TEST_DATABASE_URL (its user must be allowed to CREATE DATABASE). Never mocked.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter.pgcluster import start_cluster
from venzory_fixture import STEP_6, build_database


def pytest_collection_modifyitems(items):
    """Mark `db` every test that needs PostgreSQL through the fixtures below, so that
    `pytest -m "not db"` runs the rest without one (about a minute: promtool, TLS,
    hypothesis). A module that starts a cluster of its own says `pytestmark = pytest.mark.db`."""
    for item in items:
        if "pg_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


@pytest.fixture(autouse=True)
def no_thread_left_behind():
    """A test that leaves a non-daemon thread running fails, naming the thread: the
    interpreter waits for such threads at exit, so one forgotten server kept the whole
    suite - and CI - from ever ending after its summary line."""
    before = set(threading.enumerate())
    yield

    def left() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in before and not t.daemon and t.is_alive()]

    # Threads a test stopped may need a moment to end: a poll still connecting ends within
    # its connect_timeout (5 s by default), more on a loaded machine.
    deadline = time.monotonic() + 15
    while (stuck := left()) and time.monotonic() < deadline:
        time.sleep(0.05)
    if stuck:
        pytest.fail(f"the test left {len(stuck)} non-daemon thread(s) running: "
                    f"{sorted({t.name for t in stuck})[:5]} - stop what it started", pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


def pytest_unconfigure(config):
    """Threads a failing test left behind would still hold the exit: the failure is
    reported, so end here rather than hang until CI's timeout."""
    stuck = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if stuck:
        sys.stderr.write(f"conftest: {len(stuck)} non-daemon thread(s) still running at exit "
                         f"({sorted(set(stuck))[:5]}): exiting without waiting for them\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(config.stash.get(_EXIT_STATUS, 1) or 1)


_EXIT_STATUS = pytest.StashKey[int]()


class PgServer:
    """A PostgreSQL server the tests may create and drop databases on."""

    def __init__(self, admin_dsn: str, cluster=None):
        self.admin_dsn = admin_dsn
        self.cluster = cluster  # set when the suite started the server itself (it can stop it)

    def dsn(self, dbname: str) -> str:
        return make_conninfo(self.admin_dsn, dbname=dbname)

    def create_database(self, name: str) -> str:
        name = re.sub(r"[^a-z0-9_]", "_", name.lower())[:60]
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)


@pytest.fixture(scope="session")
def pg_server():
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield PgServer(make_conninfo(url, dbname=conninfo_to_dict(url).get("dbname", "postgres")))
        return
    cluster = start_cluster()
    try:
        yield PgServer(cluster.dsn(), cluster)
    finally:
        cluster.destroy()


# Shared fixture databases, built once per session. Tests only READ them: a test that
# changes a database builds its own with build_database().
@pytest.fixture(scope="session")
def problems_dsn(pg_server):
    """The runbook's "before hardening" state: steps 1-6 and the seeded problems."""
    return build_database(pg_server, "shared_problems", upto=STEP_6, seed="problems")


@pytest.fixture(scope="session")
def clean_dsn(pg_server):
    """Fully migrated (all 11 steps) with clean data."""
    return build_database(pg_server, "shared_clean", seed="clean")
