"""What every object of a workspace agrees on: the names (labels, annotations, mounts, ports,
claims, secrets, hosts, groups), the platform settings it is rendered with, and the metadata
every object starts from. The builders of :mod:`~hdh_assets.workspaces.namespace_policy` and
:mod:`~hdh_assets.workspaces.workspace_apps` both start here, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hdh_assets.workspaces.image import ImageDefinition, image_definition
from hdh_assets.workspaces.kube_objects import PROJECT_LABEL, platform_labels
from hdh_assets.workspaces.specs import ProjectSpec
from hdh_assets.workspaces.validation import DEFAULT_KUBERNETES_VERSION

SPEC_DIGEST_ANNOTATION = "hdh.platform/spec-digest"
CONFIG_DIGEST_ANNOTATION = "hdh.platform/config-digest"
IMAGE_ANNOTATION = "hdh.platform/image"
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
APPLICATION = "application"  # the members' servers (JupyterLab, RStudio inside)
HUB = "hub"  # JupyterHub and its proxy: the only way in

SERVICE_ACCOUNT = "workspace"
HUB_NAME = "jupyterhub"  # the Hub's Deployment, Service, ConfigMap, Secret, account and Role
HUB_DB_CLAIM = "jupyterhub-db"
SERVER_NAME = "jupyterhub-server"  # the name label of every member's server pod
WORK_CLAIM = "work"
GRANTS_CLAIM = "grants"
WORK_MOUNT = "/work"
GRANTS_MOUNT = "/data/grants"
PROJECT_INFO_MOUNT = "/etc/hdh"
# The R profile in the project ConfigMap: R installs from the project's repository only.
R_PROFILE = "Rprofile"
HUB_CONFIG_MOUNT = "/etc/jupyterhub"
HUB_DB_MOUNT = "/srv/jupyterhub/db"
APP_UID = 1000  # the workspace image's user (hdh_assets.workspaces.image)
HUB_UID = 1000  # the Hub image's user
PROXY_UID = 65534  # configurable-http-proxy's image user (nobody)

JUPYTER_PORT = 8888  # a member's server
HUB_API_PORT = 8081  # the Hub's API: the proxy and the servers talk to it
PROXY_PORT = 8000  # configurable-http-proxy's public port: what the Ingress reaches
PROXY_API_PORT = 8001  # configurable-http-proxy's API, for the Hub only (same pod)


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
    # A project's member group at the provider (auth.settings' HDH_OIDC_PROJECT_GROUP).
    member_group_template: str = "project:{project}:member"
    oidc_groups_claim: str = "groups"
    oidc_scopes: tuple[str, ...] = ("openid", "profile", "email", "groups")
    # One confidential client for every project's Hub (auth.settings' jupyterhub client); each
    # Hub's callback https://jupyterhub-<id>.<public_domain>/hub/oauth_callback is registered.
    jupyterhub_client_id: str = "hdh-jupyterhub"
    # JupyterHub 6.1 with oauthenticator 17.4 and kubespawner, and configurable-http-proxy 5.2.
    jupyterhub_image: str = "registry.hdh.example/hdh/jupyterhub:6.1.1"
    proxy_image: str = "quay.io/jupyterhub/configurable-http-proxy:5.2.0"
    # The Kubernetes API server, which KubeSpawner (in the Hub) asks to start servers.
    kube_api_cidr: str = "10.96.0.1/32"
    kube_api_ports: tuple[int, ...] = (443, 6443)
    # The project's own package indexes (its approved Python and R packages only):
    # ``{project}`` is replaced with the project's id.
    pip_index_url: str = "http://packages.hdh.internal:3141/projects/{project}/+simple/"
    cran_mirror_url: str = "http://packages.hdh.internal:3142/{project}"
    package_proxy_cidr: str = "10.20.0.10/32"
    package_proxy_ports: tuple[int, ...] = (3141, 3142)

    def project_pip_index(self, project: str) -> str:
        return self.pip_index_url.format(project=project)

    def project_cran_repository(self, project: str) -> str:
        return self.cran_mirror_url.format(project=project)

    # The data store the workspaces query (object storage of the lake's extracts).
    data_store_cidr: str = "10.30.0.0/24"
    data_store_port: int = 9000
    gitlab_cidr: str | None = None  # egress to the project's GitLab when a spec names one
    storage_class: str = "hdh-workspace"
    work_access_mode: str = "ReadWriteOnce"
    grants: GrantsVolume = field(default_factory=GrantsVolume)
    # The Hub and its proxy, each (the members' servers are sized by the spec's ``compute``).
    hub_cpu: str = "200m"
    hub_memory: str = "256Mi"
    hub_db_storage: str = "1Gi"


# --- metadata and names ----------------------------------------------------------------------


def object_meta(
    spec: ProjectSpec,
    name: str,
    *,
    namespaced: bool = True,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Metadata of a project's object: the platform's labels (delivery prunes by them) and the
    spec digest, so every object says which spec it was rendered from."""
    meta: dict[str, Any] = {
        "name": name,
        "labels": {**platform_labels(spec.id), **(labels or {})},
        "annotations": {SPEC_DIGEST_ANNOTATION: spec.digest},
    }
    if namespaced:
        meta["namespace"] = spec.namespace
    return meta


def kube_object(
    api_version: str, kind: str, metadata: dict[str, Any], **body: Any
) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **body}


def hub_labels(spec: ProjectSpec) -> dict[str, str]:
    """The Hub pod's labels: what its Service, the policies and the servers' affinity select."""
    return {PROJECT_LABEL: spec.id, NAME_LABEL: HUB_NAME, COMPONENT_LABEL: HUB}


def server_labels(spec: ProjectSpec) -> dict[str, str]:
    """The labels of every member's server pod (KubeSpawner's): what the policies select."""
    return {PROJECT_LABEL: spec.id, NAME_LABEL: SERVER_NAME, COMPONENT_LABEL: APPLICATION}


def hub_host(spec: ProjectSpec, settings: RenderSettings) -> str:
    return f"jupyterhub-{spec.id}.{settings.public_domain}"


def app_urls(spec: ProjectSpec, settings: RenderSettings) -> dict[str, str]:
    """Where members open each application (for the portal's links): their own server, through
    the Hub's sign-in (``user-redirect`` finds the signed-in member's server)."""
    base = f"https://{hub_host(spec, settings)}/user-redirect"
    paths = {"jupyterlab": "/lab", "rstudio": "/rstudio/"}
    return {app: base + paths[app] for app in spec.applications.enabled()}


def member_group(spec: ProjectSpec, settings: RenderSettings) -> str:
    """The identity provider's group of the project's members (the Hub lets only it in)."""
    return settings.member_group_template.replace("{project}", spec.id)


def secret_requirements(spec: ProjectSpec) -> dict[str, tuple[str, ...]]:
    """Secrets (name -> keys) the namespace needs; created by the secret store, not rendered."""
    return {HUB_NAME: ("client-secret", "cookie-secret", "proxy-auth-token")}


def workspace_image(spec: ProjectSpec) -> ImageDefinition:
    """The members' server image: exactly the project's approved packages, RStudio if asked."""
    return image_definition(
        spec.packages.python, spec.packages.r, rstudio=spec.applications.rstudio
    )
