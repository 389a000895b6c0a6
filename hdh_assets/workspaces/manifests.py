"""A project spec as the Kubernetes objects of its workspace: pure, deterministic, no cluster.

Per project, namespace ``hdh-ws-<id>`` holds: restricted pod security, a quota and limits from
``compute``, default-deny network policies with a few explicit openings (DNS, the sign-in
gateway, the package proxy, the data store), a service account without API token, one Role and
RoleBinding per member role, a work volume, the data grants read-only, and per application
(JupyterLab, RStudio) a Deployment and Service reachable only through its own oauth2-proxy.

Every object carries ``app.kubernetes.io/managed-by: hdh-platform`` and
``hdh.platform/project: <id>`` (delivery prunes by them) and the spec digest annotation. The same
spec and settings always render the same objects, in the same order, to the same YAML.

Data grants: a statically provisioned PersistentVolume (CSI, by default the NFS CSI driver) per
project points at ``<share_root>/<id>/grants`` on the grants server (which exports
``HDH_HOME/workspaces``, where the workspace_data_grants asset writes), read-only at every level (CSI
``readOnly``, ``ReadOnlyMany`` claim bound by name, ``readOnly`` claim and mount). Restricted pod
security forbids inline NFS volumes, and a claim bound to its own volume keeps one project from
ever naming another project's extracts. The extracts sit there as ``<product>/<version>/``
beside their ``manifest.json``.

Secrets are referenced, never rendered: per application ``<app>-oauth2-proxy`` (keys
``client-secret`` and ``cookie-secret``) and ``jupyterlab-token`` (key ``token``), see
:func:`secret_requirements`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from hdh_assets.workspaces.image import ImageDefinition, image_definition
from hdh_assets.workspaces.specs import (
    ProjectSpec,
    digest_of,
    format_bytes,
    format_cpu,
    parse_quantity,
)
from hdh_assets.workspaces.validation import DEFAULT_KUBERNETES_VERSION

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "hdh-platform"
PROJECT_LABEL = "hdh.platform/project"
SPEC_DIGEST_ANNOTATION = "hdh.platform/spec-digest"
CONFIG_DIGEST_ANNOTATION = "hdh.platform/config-digest"
IMAGE_ANNOTATION = "hdh.platform/image"
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
APPLICATION = "application"
AUTH_PROXY = "auth-proxy"

SERVICE_ACCOUNT = "workspace"
WORK_CLAIM = "work"
GRANTS_CLAIM = "grants"
WORK_MOUNT = "/work"
GRANTS_MOUNT = "/data/grants"
PROJECT_INFO_MOUNT = "/etc/hdh"
PROXY_PORT = 4180
PROXY_CONFIG_MOUNT = "/etc/oauth2-proxy"
PROXY_SECRET_MOUNT = "/etc/oauth2-proxy/secret"
JUPYTER_TOKEN_SECRET = "jupyterlab-token"
APP_UID = 1000  # the workspace image's user (hdh_assets.workspaces.image)
PROXY_UID = 65532  # distroless "nonroot" of the oauth2-proxy image

# Applied in this order: what others refer to first, workloads then their entry points last.
KIND_ORDER = (
    "Namespace",
    "ResourceQuota",
    "LimitRange",
    "NetworkPolicy",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Service",
    "Deployment",
    "Ingress",
)
_KIND_RANK = {kind: rank for rank, kind in enumerate(KIND_ORDER)}
# libyaml's emitter when present: ten times faster than PyYAML's own on megabytes of manifests.
_SAFE_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# What each role may do in its namespace, cumulatively; nobody reads Secrets or edits policy.
_VIEW_RULES = (
    {
        "apiGroups": [""],
        "resources": [
            "configmaps",
            "events",
            "limitranges",
            "persistentvolumeclaims",
            "pods",
            "resourcequotas",
            "services",
        ],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "replicasets"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["ingresses", "networkpolicies"],
        "verbs": ["get", "list", "watch"],
    },
)
ROLE_RULES: dict[str, tuple[dict[str, Any], ...]] = {
    "viewer": _VIEW_RULES,
    # Analysts read their sessions' logs and restart a stuck session by deleting its pod.
    "analyst": (
        *_VIEW_RULES,
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]},
    ),
    # Owners also pause and resume the workspace (scale to 0 and back) to free the quota.
    "owner": (
        *_VIEW_RULES,
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]},
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "verbs": ["get", "patch", "update"],
        },
    ),
}


JUPYTER_PORT = 8888
RSTUDIO_PORT = 8787
APP_PORTS: dict[str, int] = {"jupyterlab": JUPYTER_PORT, "rstudio": RSTUDIO_PORT}


@dataclass(frozen=True)
class GrantsVolume:
    """Where a project's read-only extracts are served from (a CSI driver, NFS by default)."""

    driver: str = "nfs.csi.k8s.io"
    server: str = "grants.hdh.internal"
    share_root: str = "/exports/hdh/workspaces"  # HDH_HOME/workspaces on the grants server
    capacity: str = "100Gi"
    mount_options: tuple[str, ...] = ("nfsvers=4.1",)


@dataclass(frozen=True)
class RenderSettings:
    """Everything about the platform a workspace depends on, with the demo's defaults."""

    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
    registry: str = "registry.hdh.example"
    public_domain: str = "workspaces.hdh.example"
    ingress_class: str = "hdh-gateway"
    # The single sign-on gateway (ingress controller) and the OIDC identity provider.
    gateway_namespace: str = "hdh-sso"
    gateway_pod_labels: Mapping[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/name": "hdh-gateway"}
    )
    oidc_issuer_url: str = "https://sso.hdh.example/realms/hdh"
    oidc_namespace: str = "hdh-sso"
    oidc_pod_labels: Mapping[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/name": "keycloak"}
    )
    oidc_port: int = 8443
    member_group_template: str = "hdh-ws-{project}-members"
    oauth2_proxy_image: str = "quay.io/oauth2-proxy/oauth2-proxy:v7.9.0"
    # RStudio Server runs as the workspace user with its own authentication off: only its
    # oauth2-proxy can reach it. The image must provide rserver (the Jupyter image does not).
    rstudio_image: str = "docker.io/rocker/rstudio:4.4.2"
    rstudio_command: tuple[str, ...] = (
        "/usr/lib/rstudio-server/bin/rserver",
        "--server-daemonize=0",
        "--www-address=0.0.0.0",
        f"--www-port={RSTUDIO_PORT}",
        "--auth-none=1",
        "--server-user=rstudio",
        "--server-data-dir=/tmp/rstudio-server",
    )
    # The package proxy (approved PyPI and CRAN packages only).
    pip_index_url: str = "http://packages.hdh.internal:8081/repository/pypi/simple"
    cran_mirror_url: str = "http://packages.hdh.internal:8081/repository/cran"
    package_proxy_cidr: str = "10.20.0.10/32"
    package_proxy_port: int = 8081
    # The data store the workspaces query (object storage of the lake's extracts).
    data_store_cidr: str = "10.30.0.0/24"
    data_store_port: int = 9000
    gitlab_cidr: str | None = None  # egress to the project's GitLab when a spec names one
    storage_class: str = "hdh-workspace"
    work_access_mode: str = "ReadWriteOnce"
    grants: GrantsVolume = field(default_factory=GrantsVolume)
    proxy_cpu: str = "100m"
    proxy_memory: str = "128Mi"


# --- small builders --------------------------------------------------------------------------


def _labels(spec: ProjectSpec, **extra: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, PROJECT_LABEL: spec.id, **extra}


def _meta(
    spec: ProjectSpec,
    name: str,
    *,
    namespaced: bool = True,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": {**_labels(spec), **(labels or {})},
        "annotations": {SPEC_DIGEST_ANNOTATION: spec.digest},
    }
    if namespaced:
        meta["namespace"] = spec.namespace
    return meta


def _obj(api_version: str, kind: str, metadata: dict[str, Any], **body: Any) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **body}


def _app_labels(spec: ProjectSpec, app: str) -> dict[str, str]:
    return {PROJECT_LABEL: spec.id, NAME_LABEL: app, COMPONENT_LABEL: APPLICATION}


def _proxy_name(app: str) -> str:
    return f"{app}-oauth2-proxy"


def _proxy_labels(spec: ProjectSpec, app: str) -> dict[str, str]:
    return {PROJECT_LABEL: spec.id, NAME_LABEL: _proxy_name(app), COMPONENT_LABEL: AUTH_PROXY}


def app_host(spec: ProjectSpec, app: str, settings: RenderSettings) -> str:
    return f"{app}-{spec.id}.{settings.public_domain}"


def app_urls(spec: ProjectSpec, settings: RenderSettings) -> dict[str, str]:
    """Where members open each application (for the portal's links)."""
    return {app: f"https://{app_host(spec, app, settings)}/" for app in spec.applications.enabled()}


def member_group(spec: ProjectSpec, settings: RenderSettings) -> str:
    """The identity provider's group of the project's members (oauth2-proxy lets only it in)."""
    return settings.member_group_template.format(project=spec.id)


def oidc_client_id(spec: ProjectSpec, app: str) -> str:
    return f"hdh-ws-{spec.id}-{app}"


def secret_requirements(spec: ProjectSpec) -> dict[str, tuple[str, ...]]:
    """Secrets (name -> keys) the namespace needs; created by the secret store, not rendered."""
    needed = {
        _proxy_name(app): ("client-secret", "cookie-secret") for app in spec.applications.enabled()
    }
    if spec.applications.jupyterlab:
        needed[JUPYTER_TOKEN_SECRET] = ("token",)
    return dict(sorted(needed.items()))


def workspace_image(spec: ProjectSpec) -> ImageDefinition:
    """The JupyterLab image holding exactly the project's approved packages."""
    return image_definition(spec.packages.python, spec.packages.r)


# --- sizes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """The quota arithmetic: applications at ``compute`` plus one small proxy each."""

    cpu: str
    memory: str
    storage: str
    max_cpu: str
    max_memory: str
    max_claim: str
    apps: int


def sizes(spec: ProjectSpec, settings: RenderSettings) -> Sizes:
    apps = len(spec.applications.enabled())
    cpu, proxy_cpu = parse_quantity(spec.compute.cpu), parse_quantity(settings.proxy_cpu)
    memory, proxy_memory = (
        parse_quantity(spec.compute.memory),
        parse_quantity(settings.proxy_memory),
    )
    work, grants = parse_quantity(spec.compute.storage), parse_quantity(settings.grants.capacity)
    return Sizes(
        cpu=format_cpu(apps * (cpu + proxy_cpu)),
        memory=format_bytes(apps * (memory + proxy_memory)),
        storage=format_bytes(work + grants),
        max_cpu=format_cpu(max(cpu, proxy_cpu)),
        max_memory=format_bytes(max(memory, proxy_memory)),
        max_claim=format_bytes(max(work, grants)),
        apps=apps,
    )


def _resources(cpu: str, memory: str) -> dict[str, Any]:
    """Requests equal limits: the quota then adds up exactly and sessions are never squeezed."""
    amounts = {"cpu": cpu, "memory": memory}
    return {"requests": dict(amounts), "limits": dict(amounts)}


# --- namespace, quota, policy ----------------------------------------------------------------


def namespace(spec: ProjectSpec) -> dict[str, Any]:
    meta = _meta(spec, spec.namespace, namespaced=False)
    for mode in ("enforce", "audit", "warn"):
        meta["labels"][f"pod-security.kubernetes.io/{mode}"] = "restricted"
        meta["labels"][f"pod-security.kubernetes.io/{mode}-version"] = "latest"
    return _obj("v1", "Namespace", meta)


def resource_quota(spec: ProjectSpec, settings: RenderSettings) -> dict[str, Any]:
    size = sizes(spec, settings)
    hard = {
        "requests.cpu": size.cpu,
        "limits.cpu": size.cpu,
        "requests.memory": size.memory,
        "limits.memory": size.memory,
        "requests.storage": size.storage,
        "persistentvolumeclaims": "2",
        "pods": str(2 * size.apps),  # Recreate strategy: never two generations at once
        "services": str(2 * size.apps),
        "services.loadbalancers": "0",
        "services.nodeports": "0",
    }
    return _obj("v1", "ResourceQuota", _meta(spec, "workspace-quota"), spec={"hard": hard})


def limit_range(spec: ProjectSpec, settings: RenderSettings) -> dict[str, Any]:
    size = sizes(spec, settings)
    proxy = {"cpu": settings.proxy_cpu, "memory": settings.proxy_memory}
    limits = [
        {
            "type": "Container",
            "default": dict(proxy),
            "defaultRequest": dict(proxy),
            "max": {"cpu": size.max_cpu, "memory": size.max_memory},
        },
        {"type": "PersistentVolumeClaim", "max": {"storage": size.max_claim}},
    ]
    return _obj("v1", "LimitRange", _meta(spec, "workspace-limits"), spec={"limits": limits})


def _policy(
    spec: ProjectSpec,
    name: str,
    pod_selector: Mapping[str, str],
    *,
    ingress: list[dict] | None = None,
    egress: list[dict] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "podSelector": {"matchLabels": dict(pod_selector)} if pod_selector else {},
        "policyTypes": [
            t for t, rules in (("Ingress", ingress), ("Egress", egress)) if rules is not None
        ],
    }
    if ingress is not None:
        body["ingress"] = ingress
    if egress is not None:
        body["egress"] = egress
    return _obj("networking.k8s.io/v1", "NetworkPolicy", _meta(spec, name), spec=body)


def _tcp(*ports: int | str) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def _in_namespace(namespace_name: str, pods: Mapping[str, str]) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace_name}},
        "podSelector": {"matchLabels": dict(pods)},
    }


def network_policies(spec: ProjectSpec, settings: RenderSettings) -> list[dict[str, Any]]:
    """Deny everything, then open exactly what each kind of pod needs."""
    apps_only = {PROJECT_LABEL: spec.id, COMPONENT_LABEL: APPLICATION}
    proxies = {PROJECT_LABEL: spec.id, COMPONENT_LABEL: AUTH_PROXY}
    dns = _in_namespace("kube-system", {"k8s-app": "kube-dns"})
    policies = [
        _policy(spec, "default-deny", {}, ingress=[], egress=[]),
        _policy(
            spec,
            "allow-dns",
            {},
            egress=[
                {
                    "to": [dns],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                }
            ],
        ),
        _policy(
            spec,
            "allow-gateway-to-proxies",
            proxies,
            ingress=[
                {
                    "from": [
                        _in_namespace(settings.gateway_namespace, settings.gateway_pod_labels)
                    ],
                    "ports": _tcp(PROXY_PORT),
                }
            ],
        ),
        _policy(
            spec,
            "allow-proxies-to-identity-provider",
            proxies,
            egress=[
                {
                    "to": [_in_namespace(settings.oidc_namespace, settings.oidc_pod_labels)],
                    "ports": _tcp(settings.oidc_port),
                }
            ],
        ),
        _policy(
            spec,
            "allow-apps-to-package-proxy",
            apps_only,
            egress=[
                {
                    "to": [{"ipBlock": {"cidr": settings.package_proxy_cidr}}],
                    "ports": _tcp(settings.package_proxy_port),
                }
            ],
        ),
        _policy(
            spec,
            "allow-apps-to-data-store",
            apps_only,
            egress=[
                {
                    "to": [{"ipBlock": {"cidr": settings.data_store_cidr}}],
                    "ports": _tcp(settings.data_store_port),
                }
            ],
        ),
    ]
    if spec.applications.gitlab and settings.gitlab_cidr:
        rule = {"to": [{"ipBlock": {"cidr": settings.gitlab_cidr}}], "ports": _tcp(443)}
        policies.append(_policy(spec, "allow-apps-to-gitlab", apps_only, egress=[rule]))
    for app in spec.applications.enabled():
        port = APP_PORTS[app]
        app_pods = {PROJECT_LABEL: spec.id, NAME_LABEL: app}
        proxy_pods = {PROJECT_LABEL: spec.id, NAME_LABEL: _proxy_name(app)}
        policies.append(
            _policy(
                spec,
                f"allow-{app}-from-its-proxy",
                app_pods,
                ingress=[
                    {"from": [{"podSelector": {"matchLabels": proxy_pods}}], "ports": _tcp(port)}
                ],
            )
        )
        policies.append(
            _policy(
                spec,
                f"allow-{app}-proxy-to-{app}",
                proxy_pods,
                egress=[{"to": [{"podSelector": {"matchLabels": app_pods}}], "ports": _tcp(port)}],
            )
        )
    return policies


# --- identities ------------------------------------------------------------------------------


def service_account(spec: ProjectSpec) -> dict[str, Any]:
    return _obj(
        "v1", "ServiceAccount", _meta(spec, SERVICE_ACCOUNT), automountServiceAccountToken=False
    )


def _role_name(role: str) -> str:
    return f"workspace-{role}"


def roles(spec: ProjectSpec) -> list[dict[str, Any]]:
    """One Role and one RoleBinding per role that has members; users bound as ``kind: User``."""
    objects = []
    for role in ("owner", "analyst", "viewer"):
        users = sorted(m.user for m in spec.members if m.role == role)
        if not users:
            continue
        name = _role_name(role)
        rules = [dict(rule) for rule in ROLE_RULES[role]]
        objects.append(_obj("rbac.authorization.k8s.io/v1", "Role", _meta(spec, name), rules=rules))
        subjects = [
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}
            for user in users
        ]
        ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        objects.append(
            _obj(
                "rbac.authorization.k8s.io/v1",
                "RoleBinding",
                _meta(spec, name),
                roleRef=ref,
                subjects=subjects,
            )
        )
    return objects


# --- storage ---------------------------------------------------------------------------------


def grants_volume_name(spec: ProjectSpec) -> str:
    return f"{spec.namespace}-grants"


def storage(spec: ProjectSpec, settings: RenderSettings) -> list[dict[str, Any]]:
    """The work claim, and the read-only grants volume bound to this project's claim only."""
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
    return [
        _obj(
            "v1",
            "PersistentVolume",
            _meta(spec, grants_volume_name(spec), namespaced=False),
            spec=volume,
        ),
        _obj("v1", "PersistentVolumeClaim", _meta(spec, WORK_CLAIM), spec=work_claim),
        _obj("v1", "PersistentVolumeClaim", _meta(spec, GRANTS_CLAIM), spec=grants_claim),
    ]


def config_maps(spec: ProjectSpec, settings: RenderSettings) -> list[dict[str, Any]]:
    """The image's build files (the manifest says what runs) and the list of granted data."""
    image = workspace_image(spec)
    image_meta = _meta(spec, "workspace-image")
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
        _obj("v1", "ConfigMap", image_meta, data=dict(sorted(image.files().items()))),
        _obj(
            "v1",
            "ConfigMap",
            _meta(spec, "workspace-project"),
            data={"project.json": json.dumps(project, indent=2, sort_keys=True) + "\n"},
        ),
    ]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


# --- pods ------------------------------------------------------------------------------------


def _container_security(uid: int) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_spec(
    uid: int, containers: list[dict], volumes: list[dict], **extra: Any
) -> dict[str, Any]:
    return {
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": containers,
        "volumes": volumes,
        **extra,
    }


def _deployment(
    spec: ProjectSpec,
    name: str,
    pod_labels: Mapping[str, str],
    pod_spec: dict[str, Any],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    template_meta: dict[str, Any] = {"labels": {**_labels(spec), **pod_labels}}
    if annotations:
        template_meta["annotations"] = dict(annotations)
    body = {
        "replicas": 1,
        "revisionHistoryLimit": 3,
        "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": dict(pod_labels)},
        "template": {"metadata": template_meta, "spec": pod_spec},
    }
    meta = _meta(
        spec,
        name,
        labels={NAME_LABEL: pod_labels[NAME_LABEL], COMPONENT_LABEL: pod_labels[COMPONENT_LABEL]},
    )
    return _obj("apps/v1", "Deployment", meta, spec=body)


def _service(
    spec: ProjectSpec, name: str, selector: Mapping[str, str], port: int, target: int
) -> dict[str, Any]:
    body = {
        "type": "ClusterIP",
        "selector": dict(selector),
        "ports": [{"name": "http", "protocol": "TCP", "port": port, "targetPort": target}],
    }
    meta = _meta(
        spec,
        name,
        labels={NAME_LABEL: selector[NAME_LABEL], COMPONENT_LABEL: selector[COMPONENT_LABEL]},
    )
    return _obj("v1", "Service", meta, spec=body)


def _app_env(spec: ProjectSpec, settings: RenderSettings) -> list[dict[str, Any]]:
    env = [
        {"name": "HDH_PROJECT", "value": spec.id},
        {"name": "HDH_GRANTS_DIR", "value": GRANTS_MOUNT},
        {"name": "HDH_PROJECT_INFO", "value": f"{PROJECT_INFO_MOUNT}/project.json"},
        {"name": "PIP_INDEX_URL", "value": settings.pip_index_url},
        {"name": "HDH_CRAN_MIRROR", "value": settings.cran_mirror_url},
    ]
    if spec.applications.gitlab:
        env.append({"name": "HDH_GITLAB_URL", "value": spec.applications.gitlab})
    return env


def _app_volumes() -> tuple[list[dict], list[dict]]:
    volumes = [
        {"name": "work", "persistentVolumeClaim": {"claimName": WORK_CLAIM}},
        {"name": "grants", "persistentVolumeClaim": {"claimName": GRANTS_CLAIM, "readOnly": True}},
        {"name": "project", "configMap": {"name": "workspace-project"}},
    ]
    mounts = [
        {"name": "work", "mountPath": WORK_MOUNT},
        {"name": "grants", "mountPath": GRANTS_MOUNT, "readOnly": True},
        {"name": "project", "mountPath": PROJECT_INFO_MOUNT, "readOnly": True},
    ]
    return volumes, mounts


def _app_container(
    app: str, image: str, spec: ProjectSpec, settings: RenderSettings
) -> dict[str, Any]:
    port = APP_PORTS[app]
    _, mounts = _app_volumes()
    env = _app_env(spec, settings)
    container: dict[str, Any] = {
        "name": app,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "workingDir": WORK_MOUNT,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": env,
        "resources": _resources(spec.compute.cpu, spec.compute.memory),
        "securityContext": _container_security(APP_UID),
        "volumeMounts": mounts,
        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 10},
    }
    if app == "jupyterlab":
        # Jupyter keeps its token on; the proxy sends it (see the image's Dockerfile).
        env.insert(0, _secret_env("JUPYTER_TOKEN", JUPYTER_TOKEN_SECRET, "token"))
    else:
        container["command"] = list(settings.rstudio_command)
    return container


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def application(spec: ProjectSpec, app: str, settings: RenderSettings) -> list[dict[str, Any]]:
    """The application's Deployment and its Service (reachable only from its proxy)."""
    image = (
        workspace_image(spec).reference(settings.registry)
        if app == "jupyterlab"
        else settings.rstudio_image
    )
    labels = _app_labels(spec, app)
    volumes, _ = _app_volumes()
    extra: dict[str, Any] = {}
    if (
        app == "rstudio"
        and spec.applications.jupyterlab
        and settings.work_access_mode == "ReadWriteOnce"
    ):
        # Both applications mount the work claim: a ReadWriteOnce volume needs the same node.
        extra["affinity"] = {
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": _app_labels(spec, "jupyterlab")},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        }
    pod = _pod_spec(APP_UID, [_app_container(app, image, spec, settings)], volumes, **extra)
    port = APP_PORTS[app]
    return [
        _deployment(spec, app, labels, pod, {IMAGE_ANNOTATION: image}),
        _service(spec, app, labels, port, port),
    ]


# --- sign-in proxies -------------------------------------------------------------------------


def proxy_config(spec: ProjectSpec, app: str, settings: RenderSettings) -> dict[str, Any]:
    """oauth2-proxy's alpha configuration (v7.x format): provider, upstream, injected headers."""
    upstream = f"http://{app}.{spec.namespace}.svc.cluster.local:{APP_PORTS[app]}/"
    headers: list[dict[str, Any]] = [
        {"name": "X-Forwarded-User", "values": [{"claim": "user"}]},
        {"name": "X-Forwarded-Email", "values": [{"claim": "email"}]},
    ]
    if app == "jupyterlab":
        headers.append({"name": "Authorization", "values": [{"fromEnv": "UPSTREAM_AUTHORIZATION"}]})
    return {
        "server": {"BindAddress": f"0.0.0.0:{PROXY_PORT}"},
        "upstreamConfig": {
            "upstreams": [{"id": app, "path": "/", "uri": upstream, "proxyWebSockets": True}]
        },
        "injectRequestHeaders": headers,
        "providers": [
            {
                "id": "hdh-sso",
                "provider": "oidc",
                "name": "HDH single sign-on",
                "clientID": oidc_client_id(spec, app),
                "clientSecretFile": f"{PROXY_SECRET_MOUNT}/client-secret",
                "allowedGroups": [member_group(spec, settings)],
                "code_challenge_method": "S256",
                "oidcConfig": {
                    "issuerURL": settings.oidc_issuer_url,
                    "emailClaim": "email",
                    "groupsClaim": "groups",
                    "audienceClaims": ["aud"],
                },
            }
        ],
    }


def auth_proxy(spec: ProjectSpec, app: str, settings: RenderSettings) -> list[dict[str, Any]]:
    """The oauth2-proxy in front of one application: config, Deployment, Service."""
    name = _proxy_name(app)
    config_text = yaml.dump(proxy_config(spec, app, settings), Dumper=_SAFE_DUMPER, sort_keys=True)
    config = _obj("v1", "ConfigMap", _meta(spec, name), data={"oauth2-proxy.yaml": config_text})
    env = [_secret_env("OAUTH2_PROXY_COOKIE_SECRET", name, "cookie-secret")]
    if app == "jupyterlab":
        env += [
            _secret_env("JUPYTER_TOKEN", JUPYTER_TOKEN_SECRET, "token"),
            {"name": "UPSTREAM_AUTHORIZATION", "value": "token $(JUPYTER_TOKEN)"},
        ]
    container = {
        "name": "oauth2-proxy",
        "image": settings.oauth2_proxy_image,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            f"--alpha-config={PROXY_CONFIG_MOUNT}/oauth2-proxy.yaml",
            "--email-domain=*",
            "--reverse-proxy=true",
            "--cookie-secure=true",
            f"--cookie-name=_hdh_{spec.id.replace('-', '_')}_{app}",
            "--skip-provider-button=true",
            f"--redirect-url=https://{app_host(spec, app, settings)}/oauth2/callback",
        ],
        "env": env,
        "ports": [{"name": "http", "containerPort": PROXY_PORT, "protocol": "TCP"}],
        "resources": _resources(settings.proxy_cpu, settings.proxy_memory),
        "securityContext": {**_container_security(PROXY_UID), "readOnlyRootFilesystem": True},
        "volumeMounts": [
            {"name": "config", "mountPath": PROXY_CONFIG_MOUNT, "readOnly": True},
            {"name": "secret", "mountPath": PROXY_SECRET_MOUNT, "readOnly": True},
        ],
        "readinessProbe": {"httpGet": {"path": "/ping", "port": "http"}, "periodSeconds": 10},
    }
    volumes = [
        {"name": "config", "configMap": {"name": name}},
        {
            "name": "secret",
            "secret": {
                "secretName": name,
                "items": [{"key": "client-secret", "path": "client-secret"}],
            },
        },
    ]
    labels = _proxy_labels(spec, app)
    pod = _pod_spec(PROXY_UID, [container], volumes)
    rollout = {CONFIG_DIGEST_ANNOTATION: digest_of(config["data"])}
    return [
        config,
        _deployment(spec, name, labels, pod, rollout),
        _service(spec, name, labels, 80, PROXY_PORT),
    ]


def ingress(spec: ProjectSpec, settings: RenderSettings) -> dict[str, Any]:
    """Routes from the sign-on gateway to each application's proxy (never to the app itself)."""
    rules, hosts = [], []
    for app in spec.applications.enabled():
        host = app_host(spec, app, settings)
        hosts.append(host)
        backend = {"service": {"name": _proxy_name(app), "port": {"name": "http"}}}
        path = {"path": "/", "pathType": "Prefix", "backend": backend}
        rules.append({"host": host, "http": {"paths": [path]}})
    body = {"ingressClassName": settings.ingress_class, "tls": [{"hosts": hosts}], "rules": rules}
    return _obj("networking.k8s.io/v1", "Ingress", _meta(spec, "workspace"), spec=body)


# --- the whole project -----------------------------------------------------------------------


def object_key(obj: Mapping[str, Any]) -> tuple[int, str, str, str]:
    """Apply order: kinds in :data:`KIND_ORDER`, then namespace and name."""
    meta = obj["metadata"]
    rank = _KIND_RANK.get(obj["kind"], len(_KIND_RANK))
    return (rank, obj["kind"], meta.get("namespace", ""), meta["name"])


def render_project(
    spec: ProjectSpec, settings: RenderSettings | None = None
) -> list[dict[str, Any]]:
    """Every object of the project's workspace, in apply order."""
    settings = settings or RenderSettings()
    objects = [
        namespace(spec),
        resource_quota(spec, settings),
        limit_range(spec, settings),
        *network_policies(spec, settings),
        service_account(spec),
        *roles(spec),
        *config_maps(spec, settings),
        *storage(spec, settings),
        ingress(spec, settings),
    ]
    for app in spec.applications.enabled():
        objects += application(spec, app, settings)
        objects += auth_proxy(spec, app, settings)
    return sorted(objects, key=object_key)


def render_projects(
    specs: Mapping[str, ProjectSpec], settings: RenderSettings | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Project id -> objects: the desired state a delivery target takes."""
    return {pid: render_project(specs[pid], settings) for pid in sorted(specs)}


def manifest_digest(objects: Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 of the canonical JSON of the objects (in apply order): equal output, equal digest."""
    ordered = sorted(objects, key=object_key)
    canonical = json.dumps(ordered, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


class _Dumper(_SAFE_DUMPER):  # type: ignore[misc, valid-type]
    """Multi-line strings (Dockerfile, configs) as literal blocks, readable in a diff."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(objects: Sequence[Mapping[str, Any]]) -> str:
    """Multi-document YAML in apply order with sorted keys: the same objects, the same bytes."""
    ordered = sorted(objects, key=object_key)
    return yaml.dump_all(
        ordered,
        Dumper=_Dumper,
        sort_keys=True,
        explicit_start=True,
        default_flow_style=False,
        allow_unicode=True,
        width=10_000,
    )
