"""The workspace's JupyterHub: one sign-in (the platform's OpenID Connect provider) for every
member's own server, where JupyterLab and, when asked, RStudio run.

:func:`jupyterhub_config` writes the ``jupyterhub_config.py`` the Hub reads. Its sign-in half
(:func:`sign_in_config`) is the same text whether the Hub runs in the cluster (KubeSpawner
section from :func:`kube_spawner_config`) or on this machine for the sign-in test (a local
spawner), so the test proves the configuration that ships. The provider's endpoints are read
from its discovery document when the Hub starts, so any compliant provider fits; the client
secret, the proxy token and the cookie secret are environment variables set from the
``jupyterhub`` Secret, never written in the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hdh_assets.workspaces.kube_objects import (
    restricted_container_security,
    restricted_pod_security,
)
from hdh_assets.workspaces.specs import ProjectSpec, parse_quantity
from hdh_assets.workspaces.workspace_layout import (
    APP_UID,
    GRANTS_CLAIM,
    GRANTS_MOUNT,
    HUB_API_PORT,
    HUB_NAME,
    JUPYTER_PORT,
    PROJECT_INFO_MOUNT,
    R_PROFILE,
    SERVICE_ACCOUNT,
    WORK_CLAIM,
    WORK_MOUNT,
    RenderSettings,
    hub_host,
    hub_labels,
    member_group,
    server_labels,
    workspace_image,
)

# Environment variables the Hub reads its secrets from (keys of the ``jupyterhub`` Secret).
CLIENT_SECRET_ENV = "OAUTH_CLIENT_SECRET"  # GenericOAuthenticator's own default variable
PROXY_TOKEN_ENV = "CONFIGPROXY_AUTH_TOKEN"  # read by the Hub and configurable-http-proxy
COOKIE_SECRET_ENV = "JPY_COOKIE_SECRET"  # the Hub's cookie signing key, hex
HUB_SECRET_KEYS: Mapping[str, str] = {
    CLIENT_SECRET_ENV: "client-secret",
    PROXY_TOKEN_ENV: "proxy-auth-token",
    COOKIE_SECRET_ENV: "cookie-secret",
}
USERNAME_CLAIM = "preferred_username"
REFUSED_MESSAGE = "This workspace is open to the members of its research project only."


@dataclass(frozen=True)
class HubSignIn:
    """What the Hub's authenticator needs to know: the provider, the client and who may enter."""

    issuer: str
    client_id: str
    callback_url: str
    allowed_group: str
    groups_claim: str = "groups"
    scopes: tuple[str, ...] = ("openid", "profile", "email", "groups")
    default_url: str = "/lab"


def hub_sign_in(spec: ProjectSpec, settings: RenderSettings) -> HubSignIn:
    """The project's sign-in: its Hub's callback, its member group, the platform's client."""
    return HubSignIn(
        issuer=settings.oidc_issuer_url,
        client_id=settings.jupyterhub_client_id,
        callback_url=f"https://{hub_host(spec, settings)}/hub/oauth_callback",
        allowed_group=member_group(spec, settings),
        groups_claim=settings.oidc_groups_claim,
        scopes=tuple(settings.oidc_scopes),
        default_url=default_url(spec),
    )


def default_url(spec: ProjectSpec) -> str:
    """Where a member lands in her server: JupyterLab, or RStudio when it is the only app."""
    return "/lab" if spec.applications.jupyterlab else "/rstudio/"


def _py(value: Any) -> str:
    """A Python literal of a JSON-like value (sorted, so the file is deterministic)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(_py(v) for v in sorted(value)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_py(k)}: {_py(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid Python string literal
    return repr(value)


def sign_in_config(sign_in: HubSignIn) -> str:
    """The authenticator half of ``jupyterhub_config.py``: GenericOAuthenticator on the
    provider's discovered endpoints, letting in exactly the project's member group."""
    discovery = sign_in.issuer.rstrip("/") + "/.well-known/openid-configuration"
    return (
        "# Sign-in: the platform's OpenID Connect provider, endpoints from its discovery.\n"
        f"ISSUER = {_py(sign_in.issuer)}\n"
        f"with urllib.request.urlopen({_py(discovery)}, timeout=30) as answer:\n"
        "    provider = json.load(answer)\n"
        "if provider.get('issuer') != ISSUER:\n"
        "    raise SystemExit(f\"discovery names issuer {provider.get('issuer')!r}, not {ISSUER!r}\")\n"
        "c.JupyterHub.authenticator_class = 'generic-oauth'\n"
        "c.GenericOAuthenticator.login_service = 'HDH single sign-on'\n"
        f"c.GenericOAuthenticator.client_id = {_py(sign_in.client_id)}\n"
        "# The secret comes from the environment (the Secret), never from this file.\n"
        f"c.GenericOAuthenticator.client_secret = os.environ[{_py(CLIENT_SECRET_ENV)}]\n"
        f"c.GenericOAuthenticator.oauth_callback_url = {_py(sign_in.callback_url)}\n"
        "c.GenericOAuthenticator.authorize_url = provider['authorization_endpoint']\n"
        "c.GenericOAuthenticator.token_url = provider['token_endpoint']\n"
        "c.GenericOAuthenticator.userdata_url = provider['userinfo_endpoint']\n"
        f"c.GenericOAuthenticator.scope = {_py(list(sign_in.scopes))}\n"
        f"c.GenericOAuthenticator.username_claim = {_py(USERNAME_CLAIM)}\n"
        "# The groups claim of the userinfo answer (claim_groups_key before OAuthenticator 17).\n"
        "# OAuthenticator 17 reads allowed_groups only with manage_groups on: the Hub's groups\n"
        "# then mirror the provider's at each sign-in; nothing in the Hub grants rights by them.\n"
        "c.GenericOAuthenticator.manage_groups = True\n"
        "c.GenericOAuthenticator.auth_state_groups_key = "
        f"{_py('oauth_user.' + sign_in.groups_claim)}\n"
        f"c.GenericOAuthenticator.allowed_groups = {_py({sign_in.allowed_group})}\n"
        "c.GenericOAuthenticator.admin_groups = set()\n"
        f"c.GenericOAuthenticator.custom_403_message = {_py(REFUSED_MESSAGE)}\n"
        "c.Authenticator.allow_all = False\n"
        "c.Authenticator.auto_login = True\n"
        f"c.Spawner.default_url = {_py(sign_in.default_url)}\n"
    )


def jupyterhub_config(
    project: str, sign_in: HubSignIn, spawner: str, settings: Mapping[str, Any] | None = None
) -> str:
    """A complete ``jupyterhub_config.py``: header, sign-in, then the spawner's section and any
    further ``JupyterHub`` settings (name -> value)."""
    lines = [
        f'"""JupyterHub of workspace {project}: rendered by hdh_assets.workspaces.jupyterhub,',
        'do not edit (the platform renders it again from the spec)."""',
        "",
        "import json",
        "import os",
        "import urllib.request",
        "",
        "c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file",
        "",
        sign_in_config(sign_in),
    ]
    for name, value in sorted((settings or {}).items()):
        lines.append(f"c.{name} = {_py(value)}")
    lines += ["", spawner]
    return "\n".join(lines).rstrip("\n") + "\n"


# --- the cluster's spawner -------------------------------------------------------------------


def _cpu(value: str) -> float:
    return float(parse_quantity(value))


def _bytes(value: str) -> int:
    return int(parse_quantity(value).to_integral_value())


def _server_volumes() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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


def server_environment(spec: ProjectSpec, settings: RenderSettings) -> dict[str, str]:
    """What a member's server is told: the project, its data, its package indexes."""
    env = {
        "HDH_PROJECT": spec.id,
        "HDH_GRANTS_DIR": GRANTS_MOUNT,
        "HDH_PROJECT_INFO": f"{PROJECT_INFO_MOUNT}/project.json",
        # pip and R reach the project's own indexes and nothing else (no pip config file).
        "PIP_INDEX_URL": settings.project_pip_index(spec.id),
        "PIP_CONFIG_FILE": "/dev/null",
        "HDH_CRAN_MIRROR": settings.project_cran_repository(spec.id),
        "R_PROFILE_USER": f"{PROJECT_INFO_MOUNT}/{R_PROFILE}",
    }
    if spec.applications.gitlab:
        env["HDH_GITLAB_URL"] = spec.applications.gitlab
    return env


def kube_spawner_config(spec: ProjectSpec, settings: RenderSettings) -> str:
    """KubeSpawner: each member's server in the namespace, restricted, sized from ``compute``,
    with the work and read-only grants claims, no API token, labelled for the policies."""
    volumes, mounts = _server_volumes()
    values: dict[str, Any] = {
        "namespace": spec.namespace,
        "image": workspace_image(spec).reference(settings.registry),
        "image_pull_policy": "IfNotPresent",
        "cmd": ["jupyterhub-singleuser"],
        "port": JUPYTER_PORT,
        "uid": APP_UID,
        "gid": APP_UID,
        "fs_gid": APP_UID,
        "service_account": SERVICE_ACCOUNT,
        "automount_service_account_token": False,
        "container_security_context": restricted_container_security(APP_UID, gid=APP_UID),
        "pod_security_context": restricted_pod_security(),  # uid, gid, fs_gid: above
        "cpu_limit": _cpu(spec.compute.cpu),
        "cpu_guarantee": _cpu(spec.compute.cpu),
        "mem_limit": _bytes(spec.compute.memory),
        "mem_guarantee": _bytes(spec.compute.memory),
        "volumes": volumes,
        "volume_mounts": mounts,
        "working_dir": WORK_MOUNT,
        "environment": server_environment(spec, settings),
        "extra_labels": server_labels(spec),
        "start_timeout": 600,
        "http_timeout": 120,
    }
    if settings.work_access_mode == "ReadWriteOnce":
        # Every server mounts the work claim: a ReadWriteOnce volume needs the Hub's node.
        values["extra_pod_config"] = {
            "affinity": {
                "podAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "labelSelector": {"matchLabels": hub_labels(spec)},
                            "topologyKey": "kubernetes.io/hostname",
                        }
                    ]
                }
            }
        }
    lines = [
        "# Each member's server: a pod of the workspace image in this namespace.",
        "c.JupyterHub.spawner_class = 'kubespawner.KubeSpawner'",
    ]
    lines += [f"c.KubeSpawner.{name} = {_py(value)}" for name, value in sorted(values.items())]
    return "\n".join(lines) + "\n"


def cluster_config(spec: ProjectSpec, settings: RenderSettings) -> str:
    """The ``jupyterhub_config.py`` of the project's Hub in the cluster."""
    hub_settings = {
        "JupyterHub.bind_url": "http://127.0.0.1:8000",
        "JupyterHub.hub_bind_url": f"http://0.0.0.0:{HUB_API_PORT}",
        "JupyterHub.hub_connect_url": (
            f"http://{HUB_NAME}.{spec.namespace}.svc.cluster.local:{HUB_API_PORT}"
        ),
        "JupyterHub.db_url": "sqlite:////srv/jupyterhub/db/jupyterhub.sqlite",
        "JupyterHub.cleanup_servers": False,
        # configurable-http-proxy runs beside the Hub, in its own container of the same pod.
        "ConfigurableHTTPProxy.should_start": False,
        "ConfigurableHTTPProxy.api_url": "http://127.0.0.1:8001",
    }
    return jupyterhub_config(
        spec.id, hub_sign_in(spec, settings), kube_spawner_config(spec, settings), hub_settings
    )


def hub_command() -> Sequence[str]:
    """The Hub container's command: the rendered file, mounted from its ConfigMap."""
    return ("jupyterhub", "--config=/etc/jupyterhub/jupyterhub_config.py")
