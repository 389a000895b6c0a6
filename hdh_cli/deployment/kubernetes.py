"""The objects the Dagster chart does not create: namespace, Spark, identities, policies, storage.

Plain dicts, grouped by the file they are written to under ``manifests/``. Spark runs one of two
ways (``DeploymentSettings.spark_mode``):

- ``client``: the Spark driver lives in the run pod (``HDH_SPARK_MASTER=k8s://...``) and asks
  the API server for executor pods; a headless Service names the driver's fixed ports;
- ``connect``: a Spark Connect server (a Deployment of the same image) is the only driver and
  run pods are its clients (``HDH_SPARK_REMOTE=sc://...``).

Executors are pods of the same image in both, fenced by the pod template in ``hdh-spark-conf``.
"""

from __future__ import annotations

from typing import Any

from hdh_assets.workspaces.kube_objects import (
    egress_to_cidr,
    match_labels,
    network_policy,
    object_yaml,
    tcp_ports,
)
from hdh_cli.deployment import pods
from hdh_cli.deployment.settings import DeploymentSettings

CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
RBAC = "rbac.authorization.k8s.io/v1"


def _meta(settings: DeploymentSettings, name: str, component: str | None = None) -> dict:
    labels = pods.labels(component) if component else pods.labels("platform")
    return {"name": name, "namespace": settings.namespace, "labels": labels}


# --- namespace and storage -------------------------------------------------------------------


def namespace(settings: DeploymentSettings) -> dict[str, Any]:
    """The platform's namespace, where Pod Security admission refuses any pod not restricted."""
    labels = pods.labels("platform")
    for mode in ("enforce", "audit", "warn"):
        labels[f"pod-security.kubernetes.io/{mode}"] = "restricted"
        labels[f"pod-security.kubernetes.io/{mode}-version"] = "latest"
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": settings.namespace, "labels": labels},
    }


def home_claim(settings: DeploymentSettings) -> dict[str, Any]:
    """HDH_HOME shared by the code server, run pods and executors (ReadWriteMany). The lake
    itself is an object store URL (``lake_url``) in production, not this claim."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(settings, pods.HOME_CLAIM),
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": settings.home_storage_class,
            "resources": {"requests": {"storage": settings.home_size}},
        },
    }


# --- identities ------------------------------------------------------------------------------


def service_accounts(settings: DeploymentSettings) -> list[dict[str, Any]]:
    """The Spark Connect server's account (it creates executors) and the executors' (no token).
    The chart creates ``hdh-dagster`` for its own pods and the run pods."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(settings, pods.SPARK_SERVICE_ACCOUNT, pods.SPARK_CONNECT),
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(settings, pods.EXECUTOR_SERVICE_ACCOUNT, pods.SPARK_EXECUTOR),
            "automountServiceAccountToken": False,
        },
    ]


def spark_role(settings: DeploymentSettings) -> list[dict[str, Any]]:
    """What a Spark driver needs of the API: its executor pods and their config maps."""
    name = "hdh-spark-driver"
    rules = [
        {
            "apiGroups": [""],
            "resources": ["pods"],
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "watch"],
        },
        {
            "apiGroups": [""],
            "resources": ["configmaps", "services"],
            "verbs": ["create", "delete", "deletecollection", "get", "list"],
        },
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list"]},
    ]
    drivers = [pods.DAGSTER_SERVICE_ACCOUNT, pods.SPARK_SERVICE_ACCOUNT]
    return [
        {"apiVersion": RBAC, "kind": "Role", "metadata": _meta(settings, name), "rules": rules},
        {
            "apiVersion": RBAC,
            "kind": "RoleBinding",
            "metadata": _meta(settings, name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [
                {"kind": "ServiceAccount", "name": account, "namespace": settings.namespace}
                for account in drivers
            ],
        },
    ]


# --- Spark -----------------------------------------------------------------------------------


def executor_pod_template(settings: DeploymentSettings) -> dict[str, Any]:
    """The pod Spark starts each executor from (``spark.kubernetes.executor.podTemplateFile``):
    restricted like every other pod, HDH_HOME mounted where the driver sees it."""
    container = {
        "name": "spark-executor",
        "securityContext": pods.container_security_context(read_only_root=True),
        "volumeMounts": [
            {"name": pods.HOME_CLAIM, "mountPath": pods.HOME_MOUNT},
            pods.tmp_mount(),
        ],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": pods.labels(pods.SPARK_EXECUTOR)},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": pods.pod_security_context(),
            "containers": [container],
            "volumes": [
                {"name": pods.HOME_CLAIM, "persistentVolumeClaim": {"claimName": pods.HOME_CLAIM}},
                pods.tmp_volume(),
            ],
        },
    }


def spark_defaults(settings: DeploymentSettings) -> dict[str, str]:
    """``spark-defaults.conf`` of every driver (run pods, Connect server): the executors' image,
    size and account, and fixed ports that the Services and policies can name."""
    return {
        "spark.kubernetes.namespace": settings.namespace,
        "spark.kubernetes.container.image": settings.image,
        "spark.kubernetes.container.image.pullPolicy": settings.image_pull_policy,
        "spark.kubernetes.authenticate.executor.serviceAccountName": pods.EXECUTOR_SERVICE_ACCOUNT,
        "spark.kubernetes.executor.podTemplateFile": (
            f"{pods.SPARK_CONF_MOUNT}/{pods.EXECUTOR_TEMPLATE}"
        ),
        "spark.kubernetes.executor.podTemplateContainerName": "spark-executor",
        "spark.kubernetes.executor.deleteOnTermination": "true",
        "spark.executor.instances": str(settings.spark_executor_instances),
        "spark.executor.memory": settings.spark_executor_memory,
        "spark.executor.cores": str(settings.spark_executor_cores),
        "spark.driver.port": str(pods.SPARK_DRIVER_PORT),
        "spark.driver.blockManager.port": str(pods.SPARK_BLOCK_MANAGER_PORT),
        "spark.blockManager.port": str(pods.SPARK_BLOCK_MANAGER_PORT),
        "spark.driver.bindAddress": "0.0.0.0",
        "spark.local.dir": "/tmp",
    }


def spark_conf_map(settings: DeploymentSettings) -> dict[str, Any]:
    conf = "".join(f"{key} {value}\n" for key, value in spark_defaults(settings).items())
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(settings, pods.SPARK_CONF_MAP),
        "data": {
            "spark-defaults.conf": conf,
            pods.EXECUTOR_TEMPLATE: object_yaml(executor_pod_template(settings)),
        },
    }


def _spark_ports() -> list[dict[str, Any]]:
    return [
        {"name": "driver", "port": pods.SPARK_DRIVER_PORT, "targetPort": pods.SPARK_DRIVER_PORT},
        {
            "name": "blockmanager",
            "port": pods.SPARK_BLOCK_MANAGER_PORT,
            "targetPort": pods.SPARK_BLOCK_MANAGER_PORT,
        },
    ]


def driver_service(settings: DeploymentSettings) -> dict[str, Any]:
    """Client mode: a headless Service over the run pods naming the drivers' fixed ports.
    Each driver announces its own pod IP to its executors (``SPARK_LOCAL_HOSTNAME``), so runs
    that use Spark at the same time never answer for each other."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(settings, pods.SPARK_DRIVER_SERVICE, pods.RUN),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": pods.labels(pods.RUN),
            "ports": [{**port, "protocol": "TCP"} for port in _spark_ports()],
        },
    }


def connect_service(settings: DeploymentSettings) -> dict[str, Any]:
    ports = [
        {"name": "grpc", "port": pods.SPARK_CONNECT_PORT, "targetPort": pods.SPARK_CONNECT_PORT},
        *_spark_ports(),
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(settings, pods.SPARK_CONNECT_SERVICE, pods.SPARK_CONNECT),
        "spec": {
            "type": "ClusterIP",
            "selector": pods.labels(pods.SPARK_CONNECT),
            "ports": [{**port, "protocol": "TCP"} for port in ports],
        },
    }


def connect_server_args(settings: DeploymentSettings) -> list[str]:
    """``spark-submit`` of the Connect server: a driver in its pod, executors as pods."""
    host = f"{pods.SPARK_CONNECT_SERVICE}.{settings.namespace}.svc.cluster.local"
    confs = {
        "spark.master": pods.KUBERNETES_MASTER,
        "spark.driver.host": host,
        "spark.connect.grpc.binding.port": str(pods.SPARK_CONNECT_PORT),
        "spark.kubernetes.container.image": settings.image,
        "spark.executor.memory": settings.spark_executor_memory,
        "spark.executor.cores": str(settings.spark_executor_cores),
        "spark.ui.enabled": "false",
    }
    args = ["--class", CONNECT_SERVER_CLASS, "--name", "hdh-spark-connect", "--driver-memory", "4g"]
    for key, value in confs.items():
        args += ["--conf", f"{key}={value}"]
    return args


def connect_deployment(settings: DeploymentSettings) -> dict[str, Any]:
    container = {
        "name": "spark-connect",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [f"{pods.SPARK_HOME}/bin/spark-submit"],
        "args": connect_server_args(settings),
        "env": [
            {"name": "SPARK_CONF_DIR", "value": pods.SPARK_CONF_MOUNT},
            {"name": "HDH_HOME", "value": pods.HOME_MOUNT},
        ],
        "ports": [
            {"name": "grpc", "containerPort": pods.SPARK_CONNECT_PORT, "protocol": "TCP"},
            {"name": "driver", "containerPort": pods.SPARK_DRIVER_PORT, "protocol": "TCP"},
            {
                "name": "blockmanager",
                "containerPort": pods.SPARK_BLOCK_MANAGER_PORT,
                "protocol": "TCP",
            },
        ],
        "readinessProbe": {
            "tcpSocket": {"port": pods.SPARK_CONNECT_PORT},
            "periodSeconds": 10,
        },
        "resources": pods.resources("1", "6Gi", "2", "6Gi"),
        "securityContext": pods.container_security_context(read_only_root=True),
        "volumeMounts": pods.platform_mounts(),
    }
    labels = pods.labels(pods.SPARK_CONNECT)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(settings, pods.SPARK_CONNECT_SERVICE, pods.SPARK_CONNECT),
        "spec": {
            "replicas": 1,  # one driver: the Service's driver ports reach exactly this pod
            "strategy": {"type": "Recreate"},
            "selector": match_labels(labels),
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": pods.SPARK_SERVICE_ACCOUNT,
                    "securityContext": pods.pod_security_context(),
                    "containers": [container],
                    "volumes": pods.platform_volumes(),
                },
            },
        },
    }


def spark_objects(settings: DeploymentSettings) -> list[dict[str, Any]]:
    objects = [spark_conf_map(settings)]
    if settings.spark_mode == "client":
        objects.append(driver_service(settings))
    else:
        objects += [connect_service(settings), connect_deployment(settings)]
    return objects


# --- network policies ------------------------------------------------------------------------


def _components(*components: str) -> dict[str, Any]:
    """A selector of the pods of any of these components."""
    if len(components) == 1:
        return match_labels({pods.COMPONENT_LABEL: components[0]})
    return {
        "matchExpressions": [
            {"key": pods.COMPONENT_LABEL, "operator": "In", "values": sorted(components)}
        ]
    }


def _policy(
    settings: DeploymentSettings,
    name: str,
    selector: dict[str, Any],
    *,
    ingress: list[dict[str, Any]] | None = None,
    egress: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return network_policy(_meta(settings, name), selector, ingress=ingress, egress=egress)


def spark_driver_component(settings: DeploymentSettings) -> str:
    """Which pods are Spark drivers: run pods (client mode) or the Connect server."""
    return pods.RUN if settings.spark_mode == "client" else pods.SPARK_CONNECT


def network_policies(settings: DeploymentSettings) -> list[dict[str, Any]]:
    """Deny everything, then open what each component needs, by component label and port."""
    driver = spark_driver_component(settings)
    dns = {
        "namespaceSelector": match_labels({"kubernetes.io/metadata.name": "kube-system"}),
        "podSelector": match_labels({"k8s-app": "kube-dns"}),
    }
    api_users = [pods.WEBSERVER, pods.DAEMON, pods.RUN]
    if driver == pods.SPARK_CONNECT:
        api_users.append(pods.SPARK_CONNECT)
    lake_users = [pods.CODE_LOCATION, pods.RUN, pods.SPARK_EXECUTOR]
    if driver == pods.SPARK_CONNECT:
        lake_users.append(pods.SPARK_CONNECT)
    driver_ports = tcp_ports(pods.SPARK_DRIVER_PORT, pods.SPARK_BLOCK_MANAGER_PORT)
    block_port = tcp_ports(pods.SPARK_BLOCK_MANAGER_PORT)
    policies = [
        _policy(settings, "default-deny", {}, ingress=[], egress=[]),
        _policy(
            settings,
            "allow-dns",
            {},
            egress=[
                {
                    "to": [dns],
                    "ports": [
                        {"protocol": "UDP", "port": pods.DNS_PORT},
                        {"protocol": "TCP", "port": pods.DNS_PORT},
                    ],
                }
            ],
        ),
        _policy(
            settings,
            "allow-postgresql",
            _components(pods.WEBSERVER, pods.DAEMON, pods.CODE_LOCATION, pods.RUN),
            egress=[egress_to_cidr(settings.postgres_cidr, settings.postgres_port)],
        ),
        _policy(
            settings,
            "allow-code-server-from-webserver-and-daemon",
            _components(pods.CODE_LOCATION),
            ingress=[
                {
                    "from": [{"podSelector": _components(pods.WEBSERVER, pods.DAEMON)}],
                    "ports": tcp_ports(pods.CODE_SERVER_PORT),
                }
            ],
        ),
        _policy(
            settings,
            "allow-webserver-and-daemon-to-code-server",
            _components(pods.WEBSERVER, pods.DAEMON),
            egress=[
                {
                    "to": [{"podSelector": _components(pods.CODE_LOCATION)}],
                    "ports": tcp_ports(pods.CODE_SERVER_PORT),
                }
            ],
        ),
        _policy(
            settings,
            "allow-webserver-from-gateway",
            _components(pods.WEBSERVER),
            ingress=[
                {
                    "from": [
                        {
                            "namespaceSelector": match_labels(
                                {"kubernetes.io/metadata.name": settings.gateway_namespace}
                            )
                        }
                    ],
                    "ports": tcp_ports(pods.WEBSERVER_PORT),
                }
            ],
        ),
        _policy(
            settings,
            "allow-kubernetes-api",
            _components(*api_users),
            egress=[egress_to_cidr(settings.kube_api_cidr, *pods.KUBE_API_PORTS)],
        ),
        _policy(
            settings,
            "allow-object-store",
            _components(*lake_users),
            egress=[egress_to_cidr(settings.object_store_cidr, settings.object_store_port)],
        ),
        _policy(
            settings,
            "allow-spark-driver-from-executors",
            _components(driver),
            ingress=[
                {"from": [{"podSelector": _components(pods.SPARK_EXECUTOR)}], "ports": driver_ports}
            ],
        ),
        _policy(
            settings,
            "allow-spark-driver-to-executors",
            _components(driver),
            egress=[
                {"to": [{"podSelector": _components(pods.SPARK_EXECUTOR)}], "ports": block_port}
            ],
        ),
        _policy(
            settings,
            "allow-spark-executors-from-driver-and-executors",
            _components(pods.SPARK_EXECUTOR),
            ingress=[
                {
                    "from": [
                        {"podSelector": _components(driver)},
                        {"podSelector": _components(pods.SPARK_EXECUTOR)},
                    ],
                    "ports": block_port,
                }
            ],
        ),
        _policy(
            settings,
            "allow-spark-executors-to-driver-and-executors",
            _components(pods.SPARK_EXECUTOR),
            egress=[
                {"to": [{"podSelector": _components(driver)}], "ports": driver_ports},
                {"to": [{"podSelector": _components(pods.SPARK_EXECUTOR)}], "ports": block_port},
            ],
        ),
    ]
    if driver == pods.SPARK_CONNECT:
        policies += [
            _policy(
                settings,
                "allow-spark-connect-from-runs",
                _components(pods.SPARK_CONNECT),
                ingress=[
                    {
                        "from": [{"podSelector": _components(pods.RUN)}],
                        "ports": tcp_ports(pods.SPARK_CONNECT_PORT),
                    }
                ],
            ),
            _policy(
                settings,
                "allow-runs-to-spark-connect",
                _components(pods.RUN),
                egress=[
                    {
                        "to": [{"podSelector": _components(pods.SPARK_CONNECT)}],
                        "ports": tcp_ports(pods.SPARK_CONNECT_PORT),
                    }
                ],
            ),
        ]
    return policies


# --- files -----------------------------------------------------------------------------------


def manifest_files(settings: DeploymentSettings) -> dict[str, list[dict[str, Any]]]:
    """``manifests/<file>`` -> its objects; ``kubectl apply -f manifests/`` applies them all
    (file names sort in apply order: the namespace and its fence before any workload)."""
    return {
        "00-namespace.yaml": [namespace(settings)],
        "10-network-policies.yaml": network_policies(settings),
        "20-rbac.yaml": [*service_accounts(settings), *spark_role(settings)],
        "30-storage.yaml": [home_claim(settings)],
        "40-spark.yaml": spark_objects(settings),
    }


def all_objects(settings: DeploymentSettings) -> list[dict[str, Any]]:
    return [obj for objects in manifest_files(settings).values() for obj in objects]
