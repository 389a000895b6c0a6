"""The fence of a workspace's namespace: restricted pod security, quota and limits sized from
``compute``, default-deny network policies with their few openings, a service account without
API token, and one Role and RoleBinding per member role. Nothing here runs anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hdh_assets.workspaces.kube_objects import PROJECT_LABEL, match_labels
from hdh_assets.workspaces.specs import ProjectSpec, format_bytes, format_cpu, parse_quantity
from hdh_assets.workspaces.workspace_layout import (
    APP_PORTS,
    APPLICATION,
    AUTH_PROXY,
    COMPONENT_LABEL,
    NAME_LABEL,
    PROXY_PORT,
    SERVICE_ACCOUNT,
    RenderSettings,
    kube_object,
    object_meta,
    proxy_name,
)

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


# --- namespace, quota, policy ----------------------------------------------------------------


def namespace(spec: ProjectSpec) -> dict[str, Any]:
    meta = object_meta(spec, spec.namespace, namespaced=False)
    for mode in ("enforce", "audit", "warn"):
        meta["labels"][f"pod-security.kubernetes.io/{mode}"] = "restricted"
        meta["labels"][f"pod-security.kubernetes.io/{mode}-version"] = "latest"
    return kube_object("v1", "Namespace", meta)


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
    return kube_object(
        "v1", "ResourceQuota", object_meta(spec, "workspace-quota"), spec={"hard": hard}
    )


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
    return kube_object(
        "v1", "LimitRange", object_meta(spec, "workspace-limits"), spec={"limits": limits}
    )


def _policy(
    spec: ProjectSpec,
    name: str,
    pod_selector: Mapping[str, str],
    *,
    ingress: list[dict] | None = None,
    egress: list[dict] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "podSelector": match_labels(pod_selector) if pod_selector else {},
        "policyTypes": [
            t for t, rules in (("Ingress", ingress), ("Egress", egress)) if rules is not None
        ],
    }
    if ingress is not None:
        body["ingress"] = ingress
    if egress is not None:
        body["egress"] = egress
    return kube_object("networking.k8s.io/v1", "NetworkPolicy", object_meta(spec, name), spec=body)


def _tcp(*ports: int | str) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def _in_namespace(namespace_name: str, pods: Mapping[str, str]) -> dict[str, Any]:
    return {
        "namespaceSelector": match_labels({"kubernetes.io/metadata.name": namespace_name}),
        "podSelector": match_labels(pods),
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
        proxy_pods = {PROJECT_LABEL: spec.id, NAME_LABEL: proxy_name(app)}
        policies.append(
            _policy(
                spec,
                f"allow-{app}-from-its-proxy",
                app_pods,
                ingress=[
                    {"from": [{"podSelector": match_labels(proxy_pods)}], "ports": _tcp(port)}
                ],
            )
        )
        policies.append(
            _policy(
                spec,
                f"allow-{app}-proxy-to-{app}",
                proxy_pods,
                egress=[{"to": [{"podSelector": match_labels(app_pods)}], "ports": _tcp(port)}],
            )
        )
    return policies


# --- identities ------------------------------------------------------------------------------


def service_account(spec: ProjectSpec) -> dict[str, Any]:
    return kube_object(
        "v1",
        "ServiceAccount",
        object_meta(spec, SERVICE_ACCOUNT),
        automountServiceAccountToken=False,
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
        objects.append(
            kube_object(
                "rbac.authorization.k8s.io/v1", "Role", object_meta(spec, name), rules=rules
            )
        )
        subjects = [
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}
            for user in users
        ]
        ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        objects.append(
            kube_object(
                "rbac.authorization.k8s.io/v1",
                "RoleBinding",
                object_meta(spec, name),
                roleRef=ref,
                subjects=subjects,
            )
        )
    return objects
