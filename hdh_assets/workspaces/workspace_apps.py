"""What runs in a workspace: its volumes (the work claim, the read-only grants), its config,
and per application a Deployment and Service reachable only through its own oauth2-proxy, whose
routes the Ingress gives the sign-on gateway.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from hdh_assets.workspaces.kube_objects import FAST_SAFE_DUMPER, match_labels, platform_labels
from hdh_assets.workspaces.specs import ProjectSpec, digest_of
from hdh_assets.workspaces.workspace_layout import (
    APP_PORTS,
    APP_UID,
    COMPONENT_LABEL,
    CONFIG_DIGEST_ANNOTATION,
    GRANTS_CLAIM,
    GRANTS_MOUNT,
    IMAGE_ANNOTATION,
    JUPYTER_TOKEN_SECRET,
    NAME_LABEL,
    PROJECT_INFO_MOUNT,
    PROXY_CONFIG_MOUNT,
    PROXY_PORT,
    PROXY_SECRET_MOUNT,
    PROXY_UID,
    SERVICE_ACCOUNT,
    WORK_CLAIM,
    WORK_MOUNT,
    RenderSettings,
    app_host,
    app_labels,
    kube_object,
    member_group,
    object_meta,
    oidc_client_id,
    proxy_labels,
    proxy_name,
    workspace_image,
)

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
    """The image's build files (the manifest says what runs) and the list of granted data."""
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
            data={"project.json": json.dumps(project, indent=2, sort_keys=True) + "\n"},
        ),
    ]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


# --- pods ------------------------------------------------------------------------------------


def _resources(cpu: str, memory: str) -> dict[str, Any]:
    """Requests equal limits: the quota then adds up exactly and sessions are never squeezed."""
    amounts = {"cpu": cpu, "memory": memory}
    return {"requests": dict(amounts), "limits": dict(amounts)}


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
    template_meta: dict[str, Any] = {"labels": {**platform_labels(spec.id), **pod_labels}}
    if annotations:
        template_meta["annotations"] = dict(annotations)
    body = {
        "replicas": 1,
        "revisionHistoryLimit": 3,
        "strategy": {"type": "Recreate"},
        "selector": match_labels(pod_labels),
        "template": {"metadata": template_meta, "spec": pod_spec},
    }
    meta = object_meta(
        spec,
        name,
        labels={NAME_LABEL: pod_labels[NAME_LABEL], COMPONENT_LABEL: pod_labels[COMPONENT_LABEL]},
    )
    return kube_object("apps/v1", "Deployment", meta, spec=body)


def _service(
    spec: ProjectSpec, name: str, selector: Mapping[str, str], port: int, target: int
) -> dict[str, Any]:
    body = {
        "type": "ClusterIP",
        "selector": dict(selector),
        "ports": [{"name": "http", "protocol": "TCP", "port": port, "targetPort": target}],
    }
    meta = object_meta(
        spec,
        name,
        labels={NAME_LABEL: selector[NAME_LABEL], COMPONENT_LABEL: selector[COMPONENT_LABEL]},
    )
    return kube_object("v1", "Service", meta, spec=body)


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
    labels = app_labels(spec, app)
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
                        "labelSelector": match_labels(app_labels(spec, "jupyterlab")),
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
    name = proxy_name(app)
    config_text = yaml.dump(
        proxy_config(spec, app, settings), Dumper=FAST_SAFE_DUMPER, sort_keys=True
    )
    config = kube_object(
        "v1", "ConfigMap", object_meta(spec, name), data={"oauth2-proxy.yaml": config_text}
    )
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
    labels = proxy_labels(spec, app)
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
        backend = {"service": {"name": proxy_name(app), "port": {"name": "http"}}}
        path = {"path": "/", "pathType": "Prefix", "backend": backend}
        rules.append({"host": host, "http": {"paths": [path]}})
    body = {"ingressClassName": settings.ingress_class, "tls": [{"hosts": hosts}], "rules": rules}
    return kube_object("networking.k8s.io/v1", "Ingress", object_meta(spec, "workspace"), spec=body)
