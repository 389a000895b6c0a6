"""The rules every pod of the deployment keeps, and a way to validate loose pod fragments (Helm
values, run-launcher configuration) as the Kubernetes objects they end up in."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from hdh_assets.workspaces.validation import validate_objects

KUBERNETES_VERSIONS = ("1.37", "1.33")


def security_errors(where: str, pod_spec: Mapping[str, Any], *, resources: bool = True) -> list:
    """Everything that would make this pod privileged or unbounded, one line each."""
    errors = []
    pod_sc = pod_spec.get("securityContext") or {}
    if pod_sc.get("runAsNonRoot") is not True:
        errors.append(f"{where}: pod securityContext.runAsNonRoot is not true")
    if pod_sc.get("runAsUser") == 0:
        errors.append(f"{where}: pod runs as root")
    if (pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        errors.append(f"{where}: pod seccompProfile is not RuntimeDefault")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(key):
            errors.append(f"{where}: {key}")
    for volume in pod_spec.get("volumes") or []:
        if "hostPath" in volume:
            errors.append(f"{where}: hostPath volume {volume['name']}")
    containers = [*(pod_spec.get("initContainers") or []), *pod_spec["containers"]]
    for container in containers:
        errors += container_errors(f"{where}/{container['name']}", container, resources=resources)
    return errors


def container_errors(where: str, container: Mapping[str, Any], *, resources: bool = True) -> list:
    sc = container.get("securityContext") or {}
    errors = []
    if sc.get("privileged"):
        errors.append(f"{where}: privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        errors.append(f"{where}: allowPrivilegeEscalation is not false")
    capabilities = sc.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []) or capabilities.get("add"):
        errors.append(f"{where}: capabilities not dropped")
    if sc.get("runAsNonRoot") is not True or sc.get("runAsUser") == 0:
        errors.append(f"{where}: container may run as root")
    if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        errors.append(f"{where}: container seccompProfile is not RuntimeDefault")
    if resources:
        limits = (container.get("resources") or {}).get("limits") or {}
        requests = (container.get("resources") or {}).get("requests") or {}
        if not {"cpu", "memory"} <= set(limits) or not {"cpu", "memory"} <= set(requests):
            errors.append(f"{where}: cpu and memory requests and limits are required")
    return errors


def pod_templates(obj: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(where, pod spec) of every pod an object makes."""
    name = f"{obj['kind']} {obj['metadata'].get('name')}"
    if obj["kind"] == "Pod":
        yield name, obj["spec"]
    elif obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        yield name, obj["spec"]["template"]["spec"]
    elif obj["kind"] == "CronJob":
        yield name, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def pod_from_fragments(
    name: str,
    *,
    labels: Mapping[str, str],
    pod_security_context: Mapping[str, Any],
    container: Mapping[str, Any],
    pod_spec: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Pod made of the loose fields a Helm value or a run-launcher config holds."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "hdh-platform", "labels": dict(labels)},
        "spec": {
            **(pod_spec or {}),
            "securityContext": dict(pod_security_context),
            "containers": [{"name": "main", "image": "registry.hdh.example/x:1", **container}],
        },
    }


def strict_errors(objects: list[Mapping[str, Any]]) -> list[str]:
    """Strict schema, name and label errors in every Kubernetes version the tests target."""
    return [error for v in KUBERNETES_VERSIONS for error in validate_objects(objects, v)]
