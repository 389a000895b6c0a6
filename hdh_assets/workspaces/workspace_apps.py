"""What runs in a workspace: its volumes (the work claim, the read-only grants, the Hub's
database), its config, and JupyterHub: the Hub and its proxy in one pod, the only thing the
Ingress reaches, which signs members in at the platform's provider and starts each member's
server (JupyterLab, and RStudio inside it when asked) with KubeSpawner.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from hdh_assets.workspaces.jupyterhub import (
    HUB_SECRET_KEYS,
    PROXY_TOKEN_ENV,
    cluster_config,
    hub_command,
)
from hdh_assets.workspaces.kube_objects import (
    match_labels,
    platform_labels,
    restricted_container_security,
    restricted_pod_security,
)
from hdh_assets.workspaces.specs import ProjectSpec, digest_of
from hdh_assets.workspaces.workspace_layout import (
    COMPONENT_LABEL,
    CONFIG_DIGEST_ANNOTATION,
    GRANTS_CLAIM,
    GRANTS_MOUNT,
    HUB_API_PORT,
    HUB_CONFIG_MOUNT,
    HUB_DB_CLAIM,
    HUB_DB_MOUNT,
    HUB_NAME,
    HUB_UID,
    IMAGE_ANNOTATION,
    NAME_LABEL,
    PROXY_API_PORT,
    PROXY_PORT,
    PROXY_UID,
    R_PROFILE,
    WORK_CLAIM,
    RenderSettings,
    hub_host,
    hub_labels,
    kube_object,
    object_meta,
    workspace_image,
)

# --- storage ---------------------------------------------------------------------------------


def grants_volume_name(spec: ProjectSpec) -> str:
    return f"{spec.namespace}-grants"


def storage(spec: ProjectSpec, settings: RenderSettings) -> list[dict[str, Any]]:
    """The work claim, the Hub's database claim, and the read-only grants volume bound to this
    project's claim only."""
    grants = settings.grants
    share = f"{grants.share_root.rstrip('/')}/{spec.id}/grants"
    volume = {
        "capacity": {"storage": grants.capacity},
        "accessModes": ["ReadOnlyMany"],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": "",
        "mountOptions": list(grants.mount_options),
        "claimRef": {"namespace": spec.namespace, "name": GRANTS_CLAIM},
        "csi": {
            "driver": grants.driver,
            "volumeHandle": f"{grants.server}#{share}",
            "readOnly": True,
            "volumeAttributes": {"server": grants.server, "share": share},
        },
    }
    work_claim = {
        "accessModes": [settings.work_access_mode],
        "storageClassName": settings.storage_class,
        "resources": {"requests": {"storage": spec.compute.storage}},
    }
    grants_claim = {
        "accessModes": ["ReadOnlyMany"],
        "storageClassName": "",
        "volumeName": grants_volume_name(spec),
        "resources": {"requests": {"storage": grants.capacity}},
    }
    hub_db_claim = {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": settings.storage_class,
        "resources": {"requests": {"storage": settings.hub_db_storage}},
    }
    return [
        kube_object(
            "v1", "PersistentVolumeClaim", object_meta(spec, HUB_DB_CLAIM), spec=hub_db_claim
        ),
        kube_object(
            "v1",
            "PersistentVolume",
            object_meta(spec, grants_volume_name(spec), namespaced=False),
            spec=volume,
        ),
        kube_object("v1", "PersistentVolumeClaim", object_meta(spec, WORK_CLAIM), spec=work_claim),
        kube_object(
            "v1", "PersistentVolumeClaim", object_meta(spec, GRANTS_CLAIM), spec=grants_claim
        ),
    ]


def config_maps(spec: ProjectSpec, settings: RenderSettings) -> list[dict[str, Any]]:
    """The image's build files (the manifest says what runs), the list of granted data and the
    Hub's ``jupyterhub_config.py``."""
    image = workspace_image(spec)
    image_meta = object_meta(spec, "workspace-image")
    image_meta["annotations"][IMAGE_ANNOTATION] = image.reference(settings.registry)
    grants = [
        {
            "product": g.product,
            "version": g.version,
            "path": f"{GRANTS_MOUNT}/{g.product}/{g.version}",
        }
        for g in sorted(spec.grants, key=lambda g: (g.product, _version_key(g.version)))
    ]
    project = {
        "id": spec.id,
        "title": spec.title,
        "authorisation": spec.authorisation,
        "expires": spec.expires.isoformat(),
        "grants": grants,
    }
    return [
        kube_object("v1", "ConfigMap", image_meta, data=dict(sorted(image.files().items()))),
        kube_object(
            "v1",
            "ConfigMap",
            object_meta(spec, "workspace-project"),
            data={
                "project.json": json.dumps(project, indent=2, sort_keys=True) + "\n",
                R_PROFILE: r_profile(settings.project_cran_repository(spec.id)),
            },
        ),
        hub_config_map(spec, settings),
    ]


def r_profile(repository: str) -> str:
    """R's repository option: the project's CRAN-like repository and nothing else."""
    return (
        "# The project's own R repository: its approved packages only (install.packages).\n"
        f'options(repos = c(HDH = "{repository}"))\n'
    )


def hub_config_map(spec: ProjectSpec, settings: RenderSettings) -> dict[str, Any]:
    """The Hub's configuration file: sign-in and spawner, no secret."""
    return kube_object(
        "v1",
        "ConfigMap",
        object_meta(spec, HUB_NAME),
        data={"jupyterhub_config.py": cluster_config(spec, settings)},
    )


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


# --- the Hub --------------------------------------------------------------------------------


def _resources(cpu: str, memory: str) -> dict[str, Any]:
    """Requests equal limits: the quota then adds up exactly and sessions are never squeezed."""
    amounts = {"cpu": cpu, "memory": memory}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def hub_identity(spec: ProjectSpec) -> list[dict[str, Any]]:
    """The Hub's own account and the least KubeSpawner needs: members' server pods in this
    namespace (never Secrets, never another namespace)."""
    rules = [
        {
            "apiGroups": [""],
            "resources": ["pods"],
            "verbs": ["get", "list", "watch", "create", "delete"],
        },
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list"]},
    ]
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": HUB_NAME}
    subjects = [{"kind": "ServiceAccount", "name": HUB_NAME, "namespace": spec.namespace}]
    return [
        kube_object("v1", "ServiceAccount", object_meta(spec, HUB_NAME)),
        kube_object(
            "rbac.authorization.k8s.io/v1", "Role", object_meta(spec, HUB_NAME), rules=rules
        ),
        kube_object(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            object_meta(spec, HUB_NAME),
            roleRef=ref,
            subjects=subjects,
        ),
    ]


def _hub_container(settings: RenderSettings) -> dict[str, Any]:
    env = [_secret_env(name, HUB_NAME, key) for name, key in sorted(HUB_SECRET_KEYS.items())]
    return {
        "name": "hub",
        "image": settings.jupyterhub_image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(hub_command()),
        "workingDir": HUB_DB_MOUNT,
        "env": env,
        "ports": [{"name": "hub-api", "containerPort": HUB_API_PORT, "protocol": "TCP"}],
        "resources": _resources(settings.hub_cpu, settings.hub_memory),
        "securityContext": restricted_container_security(HUB_UID, gid=HUB_UID),
        "volumeMounts": [
            {"name": "config", "mountPath": HUB_CONFIG_MOUNT, "readOnly": True},
            {"name": "db", "mountPath": HUB_DB_MOUNT},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/hub/health", "port": "hub-api"},
            "periodSeconds": 10,
        },
    }


def _proxy_container(settings: RenderSettings) -> dict[str, Any]:
    return {
        "name": "proxy",
        "image": settings.proxy_image,
        "imagePullPolicy": "IfNotPresent",
        "command": [
            "configurable-http-proxy",
            "--ip=",
            f"--port={PROXY_PORT}",
            "--api-ip=127.0.0.1",
            f"--api-port={PROXY_API_PORT}",
            f"--default-target=http://127.0.0.1:{HUB_API_PORT}",
            f"--error-target=http://127.0.0.1:{HUB_API_PORT}/hub/error",
        ],
        "env": [_secret_env(PROXY_TOKEN_ENV, HUB_NAME, HUB_SECRET_KEYS[PROXY_TOKEN_ENV])],
        "ports": [{"name": "http", "containerPort": PROXY_PORT, "protocol": "TCP"}],
        "resources": _resources(settings.hub_cpu, settings.hub_memory),
        "securityContext": restricted_container_security(
            PROXY_UID, gid=PROXY_UID, read_only_root=True
        ),
        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 10},
    }


def _deployment(
    spec: ProjectSpec,
    name: str,
    pod_labels: Mapping[str, str],
    pod_spec: dict[str, Any],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    template_meta: dict[str, Any] = {"labels": {**platform_labels(spec.id), **pod_labels}}
    if annotations:
        template_meta["annotations"] = dict(annotations)
    body = {
        "replicas": 1,
        "revisionHistoryLimit": 3,
        "strategy": {"type": "Recreate"},  # one Hub owns the database: never two at once
        "selector": match_labels(pod_labels),
        "template": {"metadata": template_meta, "spec": pod_spec},
    }
    meta = object_meta(
        spec,
        name,
        labels={NAME_LABEL: pod_labels[NAME_LABEL], COMPONENT_LABEL: pod_labels[COMPONENT_LABEL]},
    )
    return kube_object("apps/v1", "Deployment", meta, spec=body)


def hub(spec: ProjectSpec, settings: RenderSettings) -> list[dict[str, Any]]:
    """The Hub's Deployment (Hub and proxy containers; the only pod with an API token, for
    KubeSpawner) and its Service: the proxy's port for the Ingress, the API for the servers."""
    labels = hub_labels(spec)
    pod = {
        "serviceAccountName": HUB_NAME,
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "securityContext": restricted_pod_security(HUB_UID),
        "containers": [_hub_container(settings), _proxy_container(settings)],
        "volumes": [
            {"name": "config", "configMap": {"name": HUB_NAME}},
            {"name": "db", "persistentVolumeClaim": {"claimName": HUB_DB_CLAIM}},
        ],
    }
    config = hub_config_map(spec, settings)
    rollout = {
        CONFIG_DIGEST_ANNOTATION: digest_of(config["data"]),
        IMAGE_ANNOTATION: workspace_image(spec).reference(settings.registry),
    }
    service = {
        "type": "ClusterIP",
        "selector": dict(labels),
        "ports": [
            {"name": "http", "protocol": "TCP", "port": 80, "targetPort": PROXY_PORT},
            {
                "name": "hub-api",
                "protocol": "TCP",
                "port": HUB_API_PORT,
                "targetPort": HUB_API_PORT,
            },
        ],
    }
    service_meta = object_meta(
        spec,
        HUB_NAME,
        labels={NAME_LABEL: labels[NAME_LABEL], COMPONENT_LABEL: labels[COMPONENT_LABEL]},
    )
    return [
        _deployment(spec, HUB_NAME, labels, pod, rollout),
        kube_object("v1", "Service", service_meta, spec=service),
    ]


def ingress(spec: ProjectSpec, settings: RenderSettings) -> dict[str, Any]:
    """The route from the sign-on gateway to the Hub's proxy (never to a server directly)."""
    host = hub_host(spec, settings)
    backend = {"service": {"name": HUB_NAME, "port": {"name": "http"}}}
    rules = [
        {
            "host": host,
            "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
        }
    ]
    body = {"ingressClassName": settings.ingress_class, "tls": [{"hosts": [host]}], "rules": rules}
    return kube_object("networking.k8s.io/v1", "Ingress", object_meta(spec, "workspace"), spec=body)
