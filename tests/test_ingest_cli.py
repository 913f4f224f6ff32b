"""`ingest`: classify a log file once; constraint names come from the config and, offline,
from the app's schema.prisma or a snapshot."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from venzory_fixture import SCHEMA_PRISMA, SHIPPED_CONFIG

FK_ERROR = {"level": 50, "err": {"type": "PrismaClientKnownRequestError", "code": "P2003", "message": "Foreign key constraint violated",
                                 "meta": {"modelName": "InventoryTransfer",
                                          "field_name": "InventoryTransfer_fromLocationId_fkey (index)"}}}


def ingest(tmp_path, **env) -> subprocess.CompletedProcess:
    log = tmp_path / "app.log"
    log.write_text(json.dumps(FK_ERROR) + "\n" + '{"level":30,"msg":"GET / 200"}\n')
    return subprocess.run([sys.executable, "-m", "exporter", "ingest", "--config", str(SHIPPED_CONFIG), str(log), "--json"],
                          env=dict(os.environ, DATABASE_URL="postgresql://h/db", **env),
                          capture_output=True, text=True, timeout=60)


def constraints_of(result: subprocess.CompletedProcess) -> set[str]:
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["prisma_errors"], summary["ignored"]) == (1, 1)
    return {e["constraint"] for e in summary["errors"]}


def test_names_outside_the_config_are_other(tmp_path):
    assert constraints_of(ingest(tmp_path)) == {"other"}


def test_schema_prisma_makes_its_constraint_names_known(tmp_path):
    assert constraints_of(ingest(tmp_path, PRISMA_SCHEMA=str(SCHEMA_PRISMA))) == {"InventoryTransfer_fromLocationId_fkey"}


def test_an_unreadable_schema_prisma_is_said_and_does_not_stop_ingest(tmp_path):
    result = ingest(tmp_path, PRISMA_SCHEMA=str(tmp_path / "missing.prisma"))
    assert constraints_of(result) == {"other"}
    assert "missing.prisma: not used for constraint names" in result.stderr
