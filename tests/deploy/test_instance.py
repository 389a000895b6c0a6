"""dagster.yaml is an instance configuration Dagster accepts, its run launcher's configuration is
one dagster-k8s accepts, and it keeps the production profile's concurrency."""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._config import validate_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes.config_class import ConfigurableClassData
from dagster_k8s import K8sRunLauncher

from hdh_cli.deployment import helm
from hdh_cli.deployment.render import INSTANCE
from hdh_cli.deployment.settings import DeploymentSettings
from tests.deploy.conftest import COMMITTED, ROOT

CONFIGURED_CLASSES = (
    "run_storage",
    "event_log_storage",
    "schedule_storage",
    "run_coordinator",
    "compute_logs",
    "scheduler",
    "run_launcher",
)


@pytest.fixture
def instance_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The committed dagster.yaml in a DAGSTER_HOME of its own, its env variables set."""
    monkeypatch.setenv(helm.PG_PASSWORD_ENV, "not-a-real-password")
    (tmp_path / "dagster.yaml").write_text((COMMITTED / INSTANCE).read_text())
    return tmp_path


def _class_of(spec: dict[str, Any]) -> type:
    # ConfigurableClassData resolves the public ``dagster.core`` names as the instance does.
    data = ConfigurableClassData(spec["module"], spec["class"], "{}")
    return getattr(importlib.import_module(data.module_name), data.class_name)


def test_dagster_loads_the_instance_configuration(instance_dir: Path):
    config, custom_class = dagster_instance_config(str(instance_dir))
    assert custom_class is None
    assert set(config) >= set(CONFIGURED_CLASSES)
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["run_launcher"]["module"] == "dagster_k8s"
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        assert config[key]["module"].startswith("dagster_postgres")
        assert config[key]["config"]["postgres_db"]["password"] == {"env": helm.PG_PASSWORD_ENV}


def test_every_configured_class_accepts_its_configuration(instance_dir: Path):
    config, _ = dagster_instance_config(str(instance_dir))
    for key in CONFIGURED_CLASSES:
        spec = config[key]
        result = validate_config(_class_of(spec).config_type(), spec.get("config") or {})
        assert result.success, (key, [e.message for e in result.errors or []])


def test_the_run_launcher_configuration_is_what_dagster_k8s_expects():
    config = helm.instance_config(DeploymentSettings())["run_launcher"]["config"]
    result = validate_config(K8sRunLauncher.config_type(), config)
    assert result.success, [e.message for e in result.errors or []]
    assert result.value["job_namespace"] == DeploymentSettings().namespace
    assert result.value["instance_config_map"] == "dagster-instance"
    for broken in (
        {**config, "job_namespace": 3},
        {**config, "resource": config["resources"]},  # a misspelt key
        {**config, "env_secrets": "hdh-platform-secrets"},  # a list is expected
    ):
        refused = validate_config(K8sRunLauncher.config_type(), broken)
        assert not refused.success


def test_an_invalid_instance_configuration_is_refused(instance_dir: Path):
    raw = yaml.safe_load((instance_dir / "dagster.yaml").read_text())
    broken = copy.deepcopy(raw)
    broken["run_monitoring"]["start_timeout"] = 300  # the key is start_timeout_seconds
    (instance_dir / "dagster.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(DagsterInvalidConfigError, match="start_timeout"):
        dagster_instance_config(str(instance_dir))


def test_it_keeps_the_production_profile_concurrency():
    """Same pools, run limit, queue, sensor threads and quiet UI as deploy/dagster/postgres.yaml."""
    production = yaml.safe_load((ROOT / "deploy" / "dagster" / "postgres.yaml").read_text())
    kubernetes = yaml.safe_load((COMMITTED / INSTANCE).read_text())
    for key in ("concurrency", "run_coordinator", "sensors", "telemetry", "nux"):
        assert kubernetes[key] == production[key], key


def test_the_instance_configuration_is_the_values_seen_by_the_chart():
    """What the chart's templates write for the values: the same names and numbers."""
    settings = DeploymentSettings(max_concurrent_runs=7, postgres_host="db.example")
    values, instance = helm.helm_values(settings), helm.instance_config(settings)
    assert instance["concurrency"]["runs"]["max_concurrent_runs"] == 7
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] == 7
    assert values["postgresql"]["enabled"] is False
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"] == settings.postgres_secret
    assert instance["run_storage"]["config"]["postgres_db"]["hostname"] == "db.example"
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert (
        instance["run_launcher"]["config"]["labels"]
        == (launcher["config"]["k8sRunLauncher"]["labels"])
    )
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["codeServerArgs"] == ["-m", "hdh_assets.definitions"]
    assert values["dagsterDaemon"]["enabled"] is True
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    json.dumps(values)  # plain data, nothing Helm could not read
