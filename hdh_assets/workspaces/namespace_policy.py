"""The fence of a workspace's namespace: restricted pod security, quota and limits sized from
``compute``, default-deny network policies with their few openings, a service account without
API token for the members' servers, and one Role and RoleBinding per member role. Nothing here
runs anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hdh_assets.workspaces.kube_objects import (
    egress_to_cidr,
    match_labels,
    network_policy,
    tcp_ports,
)
from hdh_assets.workspaces.specs import ProjectSpec, format_bytes, format_cpu, parse_quantity
from hdh_assets.workspaces.workspace_layout import (
    HUB_API_PORT,
    JUPYTER_PORT,
    PROXY_PORT,
    SERVICE_ACCOUNT,
    RenderSettings,
    hub_labels,
    kube_object,
    object_meta,
    server_labels,
)

HUB_CONTAINERS = 2  # the Hub and configurable-http-proxy, each at hub_cpu / hub_memory

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
    """The quota arithmetic: every member's server at ``compute`` at once, plus the Hub's pod."""

    cpu: str
    memory: str
    storage: str
    max_cpu: str
    max_memory: str
    max_claim: str
    servers: int


def sizes(spec: ProjectSpec, settings: RenderSettings) -> Sizes:
    servers = len({m.user for m in spec.members})
    cpu, hub_cpu = parse_quantity(spec.compute.cpu), parse_quantity(settings.hub_cpu)
    memory, hub_memory = parse_quantity(spec.compute.memory), parse_quantity(settings.hub_memory)
    work, grants = parse_quantity(spec.compute.storage), parse_quantity(settings.grants.capacity)
    hub_db = parse_quantity(settings.hub_db_storage)
    return Sizes(
        cpu=format_cpu(servers * cpu + HUB_CONTAINERS * hub_cpu),
        memory=format_bytes(servers * memory + HUB_CONTAINERS * hub_memory),
        storage=format_bytes(work + grants + hub_db),
        max_cpu=format_cpu(max(cpu, hub_cpu)),
        max_memory=format_bytes(max(memory, hub_memory)),
        max_claim=format_bytes(max(work, grants, hub_db)),
        servers=servers,
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
        "persistentvolumeclaims": "3",  # work, grants, the Hub's database
        "pods": str(size.servers + 1),  # a server per member and the Hub (Recreate: one)
        "services": "1",
        "services.loadbalancers": "0",
        "services.nodeports": "0",
    }
    return kube_object(
        "v1", "ResourceQuota", object_meta(spec, "workspace-quota"), spec={"hard": hard}
    )


def limit_range(spec: ProjectSpec, settings: RenderSettings) -> dict[str, Any]:
    size = sizes(spec, settings)
    small = {"cpu": settings.hub_cpu, "memory": settings.hub_memory}
    limits = [
        {
            "type": "Container",
            "default": dict(small),
            "defaultRequest": dict(small),
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
    """A policy of the project's over the pods with these labels (no labels: every pod)."""
    selector = match_labels(pod_selector) if pod_selector else {}
    return network_policy(object_meta(spec, name), selector, ingress=ingress, egress=egress)


def _in_namespace(namespace_name: str, pods: Mapping[str, str]) -> dict[str, Any]:
    return {
        "namespaceSelector": match_labels({"kubernetes.io/metadata.name": namespace_name}),
        "podSelector": match_labels(pods),
    }


def network_policies(spec: ProjectSpec, settings: RenderSettings) -> list[dict[str, Any]]:
    """Deny everything, then open exactly what each kind of pod needs: the gateway reaches the
    Hub's proxy only; the Hub reaches the provider, the API server and the servers; a server
    reaches the Hub's API, the project's package indexes, the data store (and GitLab), nothing
    else."""
    servers = server_labels(spec)
    hub = hub_labels(spec)
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
            "allow-gateway-to-hub",
            hub,
            ingress=[
                {
                    "from": [
                        _in_namespace(settings.gateway_namespace, settings.gateway_pod_labels)
                    ],
                    "ports": tcp_ports(PROXY_PORT),
                }
            ],
        ),
        _policy(
            spec,
            "allow-hub-api-from-servers",
            hub,
            ingress=[
                {
                    "from": [
                        {"podSelector": match_labels(servers)},
                        {"podSelector": match_labels(hub)},
                    ],
                    "ports": tcp_ports(HUB_API_PORT),
                }
            ],
        ),
        _policy(
            spec,
            "allow-hub-egress",
            hub,
            egress=[
                {
                    "to": [_in_namespace(settings.oidc_namespace, settings.oidc_pod_labels)],
                    "ports": tcp_ports(settings.oidc_port),
                },
                egress_to_cidr(settings.kube_api_cidr, *settings.kube_api_ports),
                {"to": [{"podSelector": match_labels(servers)}], "ports": tcp_ports(JUPYTER_PORT)},
                {"to": [{"podSelector": match_labels(hub)}], "ports": tcp_ports(HUB_API_PORT)},
            ],
        ),
        _policy(
            spec,
            "allow-servers-from-hub",
            servers,
            ingress=[
                {"from": [{"podSelector": match_labels(hub)}], "ports": tcp_ports(JUPYTER_PORT)}
            ],
        ),
        _policy(
            spec,
            "allow-servers-to-hub-api",
            servers,
            egress=[{"to": [{"podSelector": match_labels(hub)}], "ports": tcp_ports(HUB_API_PORT)}],
        ),
        _policy(
            spec,
            "allow-servers-to-package-proxy",
            servers,
            egress=[egress_to_cidr(settings.package_proxy_cidr, *settings.package_proxy_ports)],
        ),
        _policy(
            spec,
            "allow-servers-to-data-store",
            servers,
            egress=[egress_to_cidr(settings.data_store_cidr, settings.data_store_port)],
        ),
    ]
    if spec.applications.gitlab and settings.gitlab_cidr:
        rule = egress_to_cidr(settings.gitlab_cidr, 443)
        policies.append(_policy(spec, "allow-servers-to-gitlab", servers, egress=[rule]))
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
