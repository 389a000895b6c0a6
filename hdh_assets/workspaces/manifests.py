"""A project spec as the Kubernetes objects of its workspace: pure, deterministic, no cluster.

Per project, namespace ``hdh-ws-<id>`` holds: restricted pod security, a quota and limits from
``compute``, default-deny network policies with a few explicit openings (DNS, the sign-in
gateway, the package proxy, the data store), a service account without API token, one Role and
RoleBinding per member role, a work volume, the data grants read-only, and JupyterHub: the
only way in, signing members in at the platform's OpenID Connect provider (GenericOAuthenticator,
the project's member group only) and starting each member's server (JupyterLab, and RStudio
inside it through jupyter-rsession-proxy) with KubeSpawner.

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

Secrets are referenced, never rendered: ``jupyterhub`` (keys ``client-secret``,
``cookie-secret`` and ``proxy-auth-token``), see :func:`secret_requirements`.

The objects are built in :mod:`~hdh_assets.workspaces.namespace_policy` (the namespace's
fence) and :mod:`~hdh_assets.workspaces.workspace_apps` (what runs in it, the Hub's
configuration from :mod:`~hdh_assets.workspaces.jupyterhub`), on the names of
:mod:`~hdh_assets.workspaces.workspace_layout`; ordering, YAML and digests are those of
:mod:`~hdh_assets.workspaces.kube_objects`, shared with delivery. Every public name stays
importable from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hdh_assets.workspaces.jupyterhub import (
    HubSignIn,
    cluster_config,
    hub_sign_in,
    jupyterhub_config,
    sign_in_config,
)
from hdh_assets.workspaces.kube_objects import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PROJECT_LABEL,
    in_apply_order,
    manifest_digest,
    to_yaml,
)
from hdh_assets.workspaces.namespace_policy import (
    ROLE_RULES,
    Sizes,
    limit_range,
    namespace,
    network_policies,
    resource_quota,
    roles,
    service_account,
    sizes,
)
from hdh_assets.workspaces.specs import ProjectSpec
from hdh_assets.workspaces.workspace_apps import (
    config_maps,
    grants_volume_name,
    hub,
    hub_config_map,
    hub_identity,
    ingress,
    storage,
)
from hdh_assets.workspaces.workspace_layout import (
    APP_UID,
    APPLICATION,
    COMPONENT_LABEL,
    CONFIG_DIGEST_ANNOTATION,
    GRANTS_CLAIM,
    GRANTS_MOUNT,
    HUB,
    HUB_API_PORT,
    HUB_DB_CLAIM,
    HUB_NAME,
    IMAGE_ANNOTATION,
    JUPYTER_PORT,
    NAME_LABEL,
    PROJECT_INFO_MOUNT,
    PROXY_PORT,
    SERVER_NAME,
    SERVICE_ACCOUNT,
    SPEC_DIGEST_ANNOTATION,
    WORK_CLAIM,
    WORK_MOUNT,
    GrantsVolume,
    RenderSettings,
    app_urls,
    hub_host,
    member_group,
    secret_requirements,
    workspace_image,
)

__all__ = [
    "APPLICATION",
    "APP_UID",
    "COMPONENT_LABEL",
    "CONFIG_DIGEST_ANNOTATION",
    "GRANTS_CLAIM",
    "GRANTS_MOUNT",
    "HUB",
    "HUB_API_PORT",
    "HUB_DB_CLAIM",
    "HUB_NAME",
    "IMAGE_ANNOTATION",
    "JUPYTER_PORT",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "NAME_LABEL",
    "PROJECT_INFO_MOUNT",
    "PROJECT_LABEL",
    "PROXY_PORT",
    "ROLE_RULES",
    "SERVER_NAME",
    "SERVICE_ACCOUNT",
    "SPEC_DIGEST_ANNOTATION",
    "WORK_CLAIM",
    "WORK_MOUNT",
    "GrantsVolume",
    "HubSignIn",
    "RenderSettings",
    "Sizes",
    "app_urls",
    "cluster_config",
    "config_maps",
    "grants_volume_name",
    "hub",
    "hub_config_map",
    "hub_host",
    "hub_identity",
    "hub_sign_in",
    "ingress",
    "jupyterhub_config",
    "limit_range",
    "manifest_digest",
    "member_group",
    "namespace",
    "network_policies",
    "render_project",
    "render_projects",
    "resource_quota",
    "roles",
    "secret_requirements",
    "service_account",
    "sign_in_config",
    "sizes",
    "storage",
    "to_yaml",
    "workspace_image",
]


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
        *hub_identity(spec),
        *config_maps(spec, settings),
        *storage(spec, settings),
        *hub(spec, settings),
        ingress(spec, settings),
    ]
    return in_apply_order(objects)


def render_projects(
    specs: Mapping[str, ProjectSpec], settings: RenderSettings | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Project id -> objects: the desired state a delivery target takes."""
    return {pid: render_project(specs[pid], settings) for pid in sorted(specs)}
