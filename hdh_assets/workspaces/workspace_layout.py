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


def app_labels(spec: ProjectSpec, app: str) -> dict[str, str]:
    """An application's pod labels: what its Service, policies and affinity select."""
    return {PROJECT_LABEL: spec.id, NAME_LABEL: app, COMPONENT_LABEL: APPLICATION}


def proxy_name(app: str) -> str:
    """The name of an application's proxy: its Deployment, Service, ConfigMap and Secret."""
    return f"{app}-oauth2-proxy"


def proxy_labels(spec: ProjectSpec, app: str) -> dict[str, str]:
    """The pod labels of an application's oauth2-proxy."""
    return {PROJECT_LABEL: spec.id, NAME_LABEL: proxy_name(app), COMPONENT_LABEL: AUTH_PROXY}


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
        proxy_name(app): ("client-secret", "cookie-secret") for app in spec.applications.enabled()
    }
    if spec.applications.jupyterlab:
        needed[JUPYTER_TOKEN_SECRET] = ("token",)
    return dict(sorted(needed.items()))


def workspace_image(spec: ProjectSpec) -> ImageDefinition:
    """The JupyterLab image holding exactly the project's approved packages."""
    return image_definition(spec.packages.python, spec.packages.r)
