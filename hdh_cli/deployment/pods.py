"""What every pod of the deployment shares: names, labels, ports, security contexts, volumes, env.

The Helm values, the run pods' configuration and the manifests take their pod fragments from
here, so a pod started by the chart, by the run launcher or by Spark is fenced the same way and
the network policies select exactly the labels stamped here.
"""

from __future__ import annotations

from typing import Any

from hdh_assets.workspaces.kube_objects import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    restricted_container_security,
    restricted_pod_security,
)
from hdh_cli.deployment.settings import DeploymentSettings

COMPONENT_LABEL = "hdh.platform/component"
WEBSERVER = "webserver"
DAEMON = "daemon"
CODE_LOCATION = "code-location"
RUN = "run"  # run pods (K8sRunLauncher) and step pods (k8s_job_executor inherit its labels)
SPARK_CONNECT = "spark-connect"
SPARK_EXECUTOR = "spark-executor"

CODE_LOCATION_NAME = "hdh-platform"  # the user-code deployment and its Service
CODE_LOCATION_MODULE = "hdh_assets.definitions"
WEBSERVER_PORT = 3000  # above 1024: a non-root process binds it without a capability
CODE_SERVER_PORT = 3030
SPARK_DRIVER_PORT = 7078
SPARK_BLOCK_MANAGER_PORT = 7079
SPARK_CONNECT_PORT = 15002
DNS_PORT = 53
KUBE_API_PORTS = (443, 6443)

APP_UID = 10001  # the image's user (see the Dockerfile)
HOME_MOUNT = "/var/lib/hdh"  # HDH_HOME in every pod that runs platform code
HOME_CLAIM = "hdh-home"
TMP_VOLUME = "tmp"
SPARK_CONF_MOUNT = "/opt/hdh/spark-conf"
SPARK_CONF_MAP = "hdh-spark-conf"
EXECUTOR_TEMPLATE = "executor-pod-template.yaml"
SPARK_DRIVER_SERVICE = "hdh-spark-driver"
SPARK_CONNECT_SERVICE = "hdh-spark-connect"
DAGSTER_SERVICE_ACCOUNT = "hdh-dagster"  # webserver, daemon, code server, run pods
SPARK_SERVICE_ACCOUNT = "hdh-spark"  # the Spark Connect server (creates executors)
EXECUTOR_SERVICE_ACCOUNT = "hdh-spark-executor"  # executors: no API token
KUBERNETES_MASTER = "k8s://https://kubernetes.default.svc"
SPARK_HOME = "/usr/local/lib/python3.11/site-packages/pyspark"  # pip's pyspark in the image


def labels(component: str) -> dict[str, str]:
    """The labels of one component's pods: the policies select ``COMPONENT_LABEL``."""
    return {MANAGED_BY_LABEL: MANAGED_BY, COMPONENT_LABEL: component}


def pod_security_context() -> dict[str, Any]:
    """Restricted pod security: the image's non-root user, its group owning mounted volumes."""
    return restricted_pod_security(APP_UID)


def container_security_context(read_only_root: bool = True) -> dict[str, Any]:
    """No privilege, no escalation, no capability; the root filesystem read-only where the
    process writes only to its volumes (``/tmp`` and ``HDH_HOME``)."""
    return restricted_container_security(
        APP_UID, read_only_root=read_only_root, explicit_unprivileged=True
    )


def resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> dict[str, Any]:
    return {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }


def tmp_volume() -> dict[str, Any]:
    return {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "4Gi"}}


def tmp_mount() -> dict[str, Any]:
    return {"name": TMP_VOLUME, "mountPath": "/tmp"}


def platform_volumes() -> list[dict[str, Any]]:
    """The shared HDH_HOME claim, Spark's configuration and a writable /tmp."""
    return [
        {"name": HOME_CLAIM, "persistentVolumeClaim": {"claimName": HOME_CLAIM}},
        {"name": SPARK_CONF_MAP, "configMap": {"name": SPARK_CONF_MAP}},
        tmp_volume(),
    ]


def platform_mounts() -> list[dict[str, Any]]:
    return [
        {"name": HOME_CLAIM, "mountPath": HOME_MOUNT},
        {"name": SPARK_CONF_MAP, "mountPath": SPARK_CONF_MOUNT, "readOnly": True},
        tmp_mount(),
    ]


def spark_connect_url(settings: DeploymentSettings) -> str:
    host = f"{SPARK_CONNECT_SERVICE}.{settings.namespace}.svc.cluster.local"
    return f"sc://{host}:{SPARK_CONNECT_PORT}"


def platform_env(settings: DeploymentSettings) -> dict[str, str]:
    """The environment of every pod that runs platform code (code server and run pods);
    secrets come from ``settings.platform_secret``, never from here."""
    env = {
        "HDH_HOME": HOME_MOUNT,
        "HDH_REQUIRE_KEY": "1",
        "HDH_LAKE_URL": settings.lake_url,
        "AWS_ENDPOINT_URL": settings.object_store_endpoint,
        "HDH_STEP_EXECUTOR": settings.step_executor,
        "SPARK_CONF_DIR": SPARK_CONF_MOUNT,
    }
    if settings.spark_mode == "client":
        # The Spark resource's explicit settings win over spark-defaults.conf: the same values.
        env |= {
            "HDH_SPARK_MASTER": KUBERNETES_MASTER,
            "HDH_SPARK_EXECUTOR_MEMORY": settings.spark_executor_memory,
            "HDH_SPARK_EXECUTOR_CORES": str(settings.spark_executor_cores),
            "HDH_SPARK_DRIVER_BIND_ADDRESS": "0.0.0.0",
            "HDH_SPARK_DRIVER_PORT": str(SPARK_DRIVER_PORT),
            "HDH_SPARK_BLOCK_MANAGER_PORT": str(SPARK_BLOCK_MANAGER_PORT),
        }
    else:
        env["HDH_SPARK_REMOTE"] = spark_connect_url(settings)
    return env


def pod_ip_env() -> list[dict[str, Any]]:
    """A driver in a run pod announces its own pod IP to its executors (``spark.driver.host``
    through ``HDH_SPARK_DRIVER_HOST``, and Spark's ``SPARK_LOCAL_HOSTNAME``), so runs that use
    Spark at the same time never answer for each other."""
    return [
        {"name": name, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
        for name in ("HDH_SPARK_DRIVER_HOST", "SPARK_LOCAL_HOSTNAME")
    ]
