"""The migrations config: empty means off, contradictions are errors, paths are not checked."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from exporter.config import ConfigError, load_config
from exporter.config.migrations import MigrationsConfig

SHIPPED_STYLE = """
databases:
  - name: venzory
    dsn: postgresql://exporter@db/venzory
    migrations:
      dir: ${PRISMA_MIGRATIONS_DIR:-}
      schema_prisma: ${PRISMA_SCHEMA:-}
      shadow_dsn: ${SHADOW_DATABASE_URL:-}
      snapshot: ${EXPECTED_SCHEMA_SNAPSHOT:-}
      allow_pending_for: ${ALLOW_PENDING_FOR:-}
"""


def migrations_of(tmp_path, text: str, env: dict[str, str]) -> MigrationsConfig:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path, env=env).databases[0].migrations


def test_unset_variables_switch_every_feature_off(tmp_path):
    config = migrations_of(tmp_path, SHIPPED_STYLE, env={})
    assert config.dir is config.shadow_dsn is config.snapshot is config.allow_pending_for is None
    features = config.features
    assert not (features.history or features.shadow or features.snapshot or features.preflight or features.drift)
    line = config.describe_off()
    assert "\n" not in line and "migrations.dir is empty" in line


def test_set_variables_switch_features_on_and_paths_are_not_checked(tmp_path):
    env = {"PRISMA_MIGRATIONS_DIR": "/not/there/yet", "SHADOW_DATABASE_URL": "postgresql://shadow@db/postgres",
           "PRISMA_SCHEMA": "/not/there/schema.prisma", "ALLOW_PENDING_FOR": "2h"}
    config = migrations_of(tmp_path, SHIPPED_STYLE, env)
    assert str(config.dir) == "/not/there/yet"  # a deploy may still be copying it: the poll reports it
    assert config.allow_pending_for == 7200
    features = config.features
    assert features.history and features.shadow and features.preflight and features.schema_prisma and features.drift
    assert not features.snapshot
    assert config.describe_off() == "migrations: all features on"


def test_snapshot_with_a_folder_gives_drift_and_the_deploy_prediction_without_a_shadow():
    # The deploy prediction reads the folder and the live database only: no shadow server needed.
    config = MigrationsConfig(dir="/app/prisma/migrations", snapshot="/etc/exporter/expected.json")
    assert config.features.snapshot and config.features.drift and config.features.preflight
    assert not config.features.shadow
    assert "deploy prediction" not in config.describe_off()
    assert "deploy prediction" in MigrationsConfig(snapshot="/etc/exporter/expected.json").describe_off()


def test_shadow_dsn_and_snapshot_together_are_an_error(tmp_path):
    env = {"SHADOW_DATABASE_URL": "postgresql://shadow@db/postgres", "EXPECTED_SCHEMA_SNAPSHOT": "/x.json"}
    with pytest.raises(ConfigError, match=r"config.yaml:\d+: databases\[0\].migrations: .*either shadow_dsn"):
        migrations_of(tmp_path, SHIPPED_STYLE, env)


def test_settings_that_do_nothing_alone_are_said():
    line = MigrationsConfig(shadow_dsn="host=shadow", shadow_database="scratch").describe_off()
    assert "shadow_dsn is ignored" in line and "shadow_database is ignored" in line


def test_a_broken_shadow_dsn_is_an_error_that_does_not_echo_it():
    with pytest.raises(ValidationError) as error:
        MigrationsConfig(shadow_dsn="host=shadow password=hunter2 bogus")
    message = error.value.errors(include_input=False)[0]["msg"]
    assert "connection string" in message and "hunter2" not in message


def test_shadow_dsn_is_kept_out_of_repr():
    assert "hunter2" not in repr(MigrationsConfig(shadow_dsn="postgresql://u:hunter2@shadow/postgres"))


def test_drift_acknowledgements_need_a_reason_and_empty_optional_keys_mean_any():
    config = MigrationsConfig(drift={"acknowledge": [
        {"object": "LocationInventory.createdAt", "kind": "", "reason": "runbook: known drift"}]})
    (ack,) = config.drift.acknowledge
    assert ack.kind is None and ack.source is None and config.drift.max_item_series == 200
    with pytest.raises(ValidationError, match="reason"):
        MigrationsConfig(drift={"acknowledge": [{"object": "LocationInventory.createdAt"}]})
    with pytest.raises(ValidationError, match="extra"):
        MigrationsConfig(drift={"acknowledge": [{"object": "x", "reason": "y", "because": "z"}]})
