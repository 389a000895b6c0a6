"""The settings of the Kubernetes deployment: one frozen dataclass, read from ``HDH_DEPLOY_*``.

Everything the rendered Helm values, instance configuration, Dockerfile and manifests depend on
is here, so the committed ``deploy/kubernetes/`` folder is a pure function of these settings
(a test renders the defaults again and compares). Network defaults are the workspaces' own
(``RenderSettings``): one platform, one idea of where the API server and the data store are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from hdh_assets.workspaces.workspace_layout import RenderSettings

SPARK_MODES = ("client", "connect")
STEP_EXECUTORS = ("in_process", "k8s")
_WORKSPACE_DEFAULTS = RenderSettings()


class SettingsError(ValueError):
    """A deployment setting that cannot be rendered; names the variable."""


@dataclass(frozen=True)
class DeploymentSettings:
    """What an operator chooses; every field has an environment variable (``ENV_NAMES``)."""

    namespace: str = "hdh-platform"
    release: str = "dagster"  # the Helm release: the chart names its objects after it
    image_repository: str = "registry.hdh.example/hdh-platform"
    image_tag: str = "0.1.0"  # the project's version; a unique tag per build in production
    image_pull_policy: str = "IfNotPresent"
    postgres_host: str = "postgresql.hdh-data.svc.cluster.local"
    postgres_port: int = 5432
    postgres_db: str = "dagster"
    postgres_user: str = "dagster"
    # A Secret with key ``postgresql-password`` (the chart's convention), created by operators.
    postgres_secret: str = "hdh-dagster-postgresql"
    postgres_cidr: str = "10.40.0.0/24"
    # A Secret with the platform's own secrets as environment variables (HDH_PSEUDONYM_KEY,
    # HDH_RIGHTS_DB_URL, HDH_RIGHTS_KEY, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
    platform_secret: str = "hdh-platform-secrets"
    lake_url: str = "s3://hdh-lake/lake"
    object_store_endpoint: str = "http://objects.hdh.internal:9000"
    object_store_cidr: str = _WORKSPACE_DEFAULTS.data_store_cidr
    object_store_port: int = _WORKSPACE_DEFAULTS.data_store_port
    # HDH_HOME (landing zone, store, quarantine, demo secrets): a ReadWriteMany claim that the
    # code server, the daemon, every run pod and Spark's executors mount.
    home_size: str = "200Gi"
    home_storage_class: str = "hdh-shared"
    kube_api_cidr: str = _WORKSPACE_DEFAULTS.kube_api_cidr
    gateway_namespace: str = _WORKSPACE_DEFAULTS.gateway_namespace
    spark_mode: str = "client"
    spark_executor_instances: int = 2
    spark_executor_memory: str = "4g"
    spark_executor_cores: int = 2
    step_executor: str = "in_process"
    max_concurrent_runs: int = 4
    # Runs whose job names no run kind (the implicit asset job of the automation and rights
    # sensors): they may run a Spark product, so they fit the default 2g Spark driver.
    run_cpu: str = "2"
    run_memory: str = "4Gi"

    def __post_init__(self) -> None:
        if self.spark_mode not in SPARK_MODES:
            raise SettingsError(f"HDH_DEPLOY_SPARK_MODE={self.spark_mode!r}: one of {SPARK_MODES}")
        if self.step_executor not in STEP_EXECUTORS:
            raise SettingsError(
                f"HDH_DEPLOY_STEP_EXECUTOR={self.step_executor!r}: one of {STEP_EXECUTORS}"
            )

    @property
    def image(self) -> str:
        return f"{self.image_repository}:{self.image_tag}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeploymentSettings:
        """The defaults, overridden by every ``HDH_DEPLOY_<FIELD>`` that is set and not empty."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = environ.get(env_name(field.name), "").strip()
            if not raw:
                continue
            if field.type == "int":
                try:
                    values[field.name] = int(raw)
                except ValueError:
                    raise SettingsError(f"{env_name(field.name)}={raw!r}: not an integer") from None
            else:
                values[field.name] = raw
        return cls(**values)


def env_name(field_name: str) -> str:
    """``spark_mode`` -> ``HDH_DEPLOY_SPARK_MODE``."""
    return f"HDH_DEPLOY_{field_name.upper()}"


def settings_table() -> list[tuple[str, str]]:
    """(variable, default) of every setting, in declaration order: what the docs list."""
    defaults = DeploymentSettings()
    return [(env_name(f.name), str(getattr(defaults, f.name))) for f in fields(DeploymentSettings)]
