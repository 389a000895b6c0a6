"""Values for Dagster's official Helm chart (``dagster/dagster``) and the ``dagster.yaml`` it makes.

Key names follow the chart of the pinned Dagster release (1.13): ``dagsterWebserver``,
``dagsterDaemon``, ``dagster-user-deployments``, ``runLauncher.config.k8sRunLauncher``,
``postgresql``, ``global.postgresqlSecretName``, ``concurrency``. The chart's own values schema
is not available here, so :func:`instance_config` writes what the chart's instance ConfigMap
makes of these values, and the tests check that against Dagster's own configuration schemas.
"""

from __future__ import annotations

from typing import Any

from hdh_cli.deployment import pods
from hdh_cli.deployment.settings import DeploymentSettings

DAGSTER_HOME = "/opt/dagster/dagster_home"  # the chart mounts dagster.yaml here in every pod
PG_PASSWORD_ENV = "DAGSTER_PG_PASSWORD"  # the chart sets it from the Secret's postgresql-password
# Run monitoring notices a run pod that died or never started; a run is never resumed (its
# steps would run twice), it fails and the sensors decide again.
RUN_MONITORING = {
    "startTimeoutSeconds": 300,
    "cancelTimeoutSeconds": 180,
    "maxResumeRunAttempts": 0,
    "pollIntervalSeconds": 120,
    "freeSlotsAfterRunEndSeconds": 0,
}


def chart_fullname(release: str) -> str:
    """The chart's ``dagster.fullname``: the release name when it contains ``dagster``."""
    return release if "dagster" in release else f"{release}-dagster"


def _image(settings: DeploymentSettings) -> dict[str, str]:
    return {
        "repository": settings.image_repository,
        "tag": settings.image_tag,
        "pullPolicy": settings.image_pull_policy,
    }


def _env_list(env: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in sorted(env.items())]


def _fenced(component: str, cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> dict:
    """The pod fields the chart takes per component: labels, security, resources, /tmp."""
    return {
        "labels": pods.labels(component),
        "podSecurityContext": pods.pod_security_context(),
        "securityContext": pods.container_security_context(read_only_root=True),
        "resources": pods.resources(cpu, memory, cpu_limit, memory_limit),
    }


def user_deployment(settings: DeploymentSettings) -> dict[str, Any]:
    """The code location as a gRPC code server (``dagster code-server start -m ...``)."""
    return {
        "name": pods.CODE_LOCATION_NAME,
        "image": _image(settings),
        "codeServerArgs": ["-m", pods.CODE_LOCATION_MODULE],
        "port": pods.CODE_SERVER_PORT,
        # Run pods are configured by the run launcher below, not by copying this container.
        "includeConfigInLaunchedRuns": {"enabled": False},
        "env": _env_list(pods.platform_env(settings)),
        "envSecrets": [{"name": settings.platform_secret}],
        **_fenced(pods.CODE_LOCATION, "500m", "2Gi", "2", "4Gi"),
        "volumes": pods.platform_volumes(),
        "volumeMounts": pods.platform_mounts(),
        "replicaCount": 1,
    }


def run_launcher(settings: DeploymentSettings) -> dict[str, Any]:
    """``K8sRunLauncher``: every run (sensor, schedule, automation, UI, rights) is a Job."""
    env = pods.platform_env(settings)
    pod_spec: dict[str, Any] = {
        "securityContext": pods.pod_security_context(),
        "serviceAccountName": pods.DAGSTER_SERVICE_ACCOUNT,
    }
    return {
        "jobNamespace": settings.namespace,
        "loadInclusterConfig": True,
        "imagePullPolicy": settings.image_pull_policy,
        "envConfigMaps": [],
        "envSecrets": [{"name": settings.platform_secret}],
        "envVars": [f"{k}={v}" for k, v in sorted(env.items())],
        "volumes": pods.platform_volumes(),
        "volumeMounts": pods.platform_mounts(),
        "labels": pods.labels(pods.RUN),
        "resources": pods.resources(
            settings.run_cpu, settings.run_memory, settings.run_cpu, settings.run_memory
        ),
        "securityContext": pods.container_security_context(read_only_root=True),
        "failPodOnRunFailure": True,
        "runK8sConfig": {
            "podSpecConfig": pod_spec,
            "containerConfig": {"env": pods.pod_ip_env()},
            "jobSpecConfig": {"backoffLimit": 0, "ttlSecondsAfterFinished": 86400},
        },
    }


def helm_values(settings: DeploymentSettings) -> dict[str, Any]:
    """The values file: ``helm upgrade --install <release> dagster/dagster -f values.yaml``."""
    image = _image(settings)
    return {
        "global": {
            "postgresqlSecretName": settings.postgres_secret,
            "dagsterHome": DAGSTER_HOME,
            "serviceAccountName": pods.DAGSTER_SERVICE_ACCOUNT,
        },
        "serviceAccount": {"create": True, "name": pods.DAGSTER_SERVICE_ACCOUNT},
        "telemetry": {"enabled": False},
        "dagsterWebserver": {
            "replicaCount": 1,
            "image": image,
            "service": {"type": "ClusterIP", "port": pods.WEBSERVER_PORT},
            # The chart's default probe asks port 80; the webserver listens on the service port.
            "readinessProbe": {
                "httpGet": {"path": "/server_info", "port": pods.WEBSERVER_PORT},
                "periodSeconds": 20,
                "timeoutSeconds": 10,
                "failureThreshold": 3,
            },
            **_fenced(pods.WEBSERVER, "250m", "1Gi", "1", "2Gi"),
            "volumes": [pods.tmp_volume()],
            "volumeMounts": [pods.tmp_mount()],
        },
        "dagster-user-deployments": {
            "enabled": True,
            "enableSubchart": True,
            "deployments": [user_deployment(settings)],
        },
        "postgresql": {
            "enabled": False,  # an external PostgreSQL: the chart's own is for trials
            "postgresqlHost": settings.postgres_host,
            "postgresqlUsername": settings.postgres_user,
            "postgresqlDatabase": settings.postgres_db,
            "postgresqlParams": {},
            "service": {"port": settings.postgres_port},
        },
        "generatePostgresqlPasswordSecret": False,
        "computeLogManager": {"type": "NoOpComputeLogManager"},
        "scheduler": {"type": "DagsterDaemonScheduler"},
        "runLauncher": {
            "type": "K8sRunLauncher",
            "config": {"k8sRunLauncher": run_launcher(settings)},
        },
        "dagsterDaemon": {
            "enabled": True,
            "image": image,
            "runCoordinator": {
                "enabled": True,
                "type": "QueuedRunCoordinator",
                "config": {"queuedRunCoordinator": {}},
            },
            **_fenced(pods.DAEMON, "250m", "1Gi", "1", "2Gi"),
            "volumes": [pods.tmp_volume()],
            "volumeMounts": [pods.tmp_mount()],
            "runMonitoring": {"enabled": True, **RUN_MONITORING},
            "sensors": {"useThreads": True, "numWorkers": 4},
            "schedules": {"useThreads": False},
        },
        # As deploy/dagster/postgres.yaml: pools serialise json_ingestion and
        # workspace_delivery; at most max_concurrent_runs run pods at once.
        "concurrency": {
            "enabled": True,
            "pools": {"defaultLimit": 1},
            "runs": {"maxConcurrentRuns": settings.max_concurrent_runs},
        },
        "additionalInstanceConfig": {"nux": {"enabled": False}},
    }


def _postgres_config(values: dict[str, Any]) -> dict[str, Any]:
    pg = values["postgresql"]
    return {
        "postgres_db": {
            "username": pg["postgresqlUsername"],
            "password": {"env": PG_PASSWORD_ENV},
            "hostname": pg["postgresqlHost"],
            "db_name": pg["postgresqlDatabase"],
            "port": pg["service"]["port"],
            "params": pg["postgresqlParams"],
        }
    }


def _run_launcher_config(values: dict[str, Any], settings: DeploymentSettings) -> dict[str, Any]:
    """What the chart's ``dagsterYaml.runLauncher.k8s`` template writes for our values."""
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s = k8s["runK8sConfig"]
    return {
        "module": "dagster_k8s",
        "class": "K8sRunLauncher",
        "config": {
            "load_incluster_config": k8s["loadInclusterConfig"],
            "job_namespace": k8s["jobNamespace"],
            "image_pull_policy": k8s["imagePullPolicy"],
            "service_account_name": values["global"]["serviceAccountName"],
            "dagster_home": values["global"]["dagsterHome"],
            "instance_config_map": f"{chart_fullname(settings.release)}-instance",
            "postgres_password_secret": values["global"]["postgresqlSecretName"],
            "env_secrets": [s["name"] for s in k8s["envSecrets"]],
            "env_vars": k8s["envVars"],
            "volume_mounts": k8s["volumeMounts"],
            "volumes": k8s["volumes"],
            "labels": k8s["labels"],
            "resources": k8s["resources"],
            "fail_pod_on_run_failure": k8s["failPodOnRunFailure"],
            "security_context": k8s["securityContext"],
            "run_k8s_config": {
                "container_config": run_k8s["containerConfig"],
                "pod_spec_config": run_k8s["podSpecConfig"],
                "job_spec_config": run_k8s["jobSpecConfig"],
            },
        },
    }


def instance_config(settings: DeploymentSettings) -> dict[str, Any]:
    """The ``dagster.yaml`` the chart renders into its instance ConfigMap for these values."""
    values = helm_values(settings)
    storage = _postgres_config(values)
    daemon = values["dagsterDaemon"]
    monitoring = daemon["runMonitoring"]
    concurrency = values["concurrency"]
    return {
        "scheduler": {"module": "dagster.core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": storage,
        },
        "run_launcher": _run_launcher_config(values, settings),
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": storage,
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": storage,
        },
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
        },
        "compute_logs": {
            "module": "dagster.core.storage.noop_compute_log_manager",
            "class": "NoOpComputeLogManager",
        },
        "run_monitoring": {
            "enabled": True,
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "cancel_timeout_seconds": monitoring["cancelTimeoutSeconds"],
            "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        },
        "sensors": {
            "use_threads": daemon["sensors"]["useThreads"],
            "num_workers": daemon["sensors"]["numWorkers"],
        },
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
        "concurrency": {
            "pools": {"default_limit": concurrency["pools"]["defaultLimit"]},
            "runs": {"max_concurrent_runs": concurrency["runs"]["maxConcurrentRuns"]},
        },
        **values["additionalInstanceConfig"],
    }
