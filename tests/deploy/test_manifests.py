"""The manifests are valid Kubernetes objects, no pod is privileged, and the values' pod fragments
are what a real Pod accepts."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from hdh_assets.workspaces.validation import (
    ManifestValidationError,
    raise_for_invalid,
    validate_objects,
)
from hdh_cli.deployment import helm, pods
from hdh_cli.deployment.kubernetes import executor_pod_template, spark_defaults
from hdh_cli.deployment.settings import DeploymentSettings
from tests.deploy.conftest import manifest_objects
from tests.deploy.pod_rules import (
    pod_from_fragments,
    pod_templates,
    security_errors,
    strict_errors,
)


def test_every_manifest_object_validates_strictly_in_1_37_and_1_33(files):
    objects = manifest_objects(files)
    kinds = {obj["kind"] for obj in objects}
    assert kinds >= {
        "Namespace",
        "NetworkPolicy",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "PersistentVolumeClaim",
        "ConfigMap",
        "Service",
    }
    for version in ("1.37", "1.33"):
        assert validate_objects(objects, version) == [], version


def test_a_broken_object_is_refused(files):
    """The validator really runs: an unknown field, a wrong type and a bad name are refused."""
    service = next(o for o in manifest_objects(files) if o["kind"] == "Service")
    unknown = copy.deepcopy(service)
    unknown["spec"]["clusterIp"] = "None"  # the field is clusterIP
    wrong_type = copy.deepcopy(service)
    wrong_type["spec"]["ports"][0]["port"] = "seventy"
    bad_name = copy.deepcopy(service)
    bad_name["metadata"]["name"] = "Spark_Driver"
    for broken, field in ((unknown, "clusterIp"), (wrong_type, "port"), (bad_name, "name")):
        errors = validate_objects([broken], "1.37")
        assert errors and field in "\n".join(errors), errors
        with pytest.raises(ManifestValidationError):
            raise_for_invalid([broken])


def test_the_namespace_enforces_restricted_pod_security(files):
    namespace = next(o for o in manifest_objects(files) if o["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def _executor_template(files: dict[str, str]) -> dict[str, Any]:
    conf = next(
        o
        for o in manifest_objects(files)
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == pods.SPARK_CONF_MAP
    )
    template = yaml.safe_load(conf["data"][pods.EXECUTOR_TEMPLATE])
    # Spark names the executor pods; the template has none of its own.
    return {**template, "metadata": {**template["metadata"], "name": "executor"}}


def test_no_pod_in_the_manifests_is_privileged(files, settings: DeploymentSettings):
    objects = [*manifest_objects(files)]
    templates = [t for obj in objects for t in pod_templates(obj)]
    if settings.spark_mode == "connect":
        assert [where for where, _ in templates] == ["Deployment hdh-spark-connect"]
    errors = [e for where, spec in templates for e in security_errors(where, spec)]
    executor = _executor_template(files)
    assert strict_errors([executor]) == []
    # Executors are sized by Spark (spark.executor.memory/cores), not by the template.
    errors += security_errors("executor template", executor["spec"], resources=False)
    assert executor["spec"]["automountServiceAccountToken"] is False
    assert errors == []


def test_a_privileged_pod_is_caught_by_the_rules():
    template = executor_pod_template(DeploymentSettings())
    spec = copy.deepcopy(template["spec"])
    spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    spec["containers"][0]["securityContext"]["capabilities"] = {"add": ["NET_ADMIN"]}
    spec["securityContext"]["runAsNonRoot"] = False
    spec["hostNetwork"] = True
    errors = security_errors("bad", spec, resources=False)
    assert len(errors) == 4, errors


def test_spark_executors_are_sized_from_the_settings():
    settings = DeploymentSettings(spark_executor_memory="12g", spark_executor_cores=3)
    conf = spark_defaults(settings)
    assert conf["spark.executor.memory"] == "12g"
    assert conf["spark.executor.cores"] == "3"
    assert conf["spark.kubernetes.container.image"] == settings.image
    assert conf["spark.driver.port"] == str(pods.SPARK_DRIVER_PORT)
    assert conf["spark.blockManager.port"] == str(pods.SPARK_BLOCK_MANAGER_PORT)


def _walk(value: Any, path: str = "") -> list[tuple[str, str, Any]]:
    """(path, key, value) of every mapping entry, however deep."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((path, key, item))
            found += _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _walk(item, f"{path}[{index}]")
    return found


def _chart_components(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The values sections the chart makes one pod (template) of each."""
    components = {
        "dagsterWebserver": values["dagsterWebserver"],
        "dagsterDaemon": values["dagsterDaemon"],
    }
    for deployment in values["dagster-user-deployments"]["deployments"]:
        components[f"dagster-user-deployments/{deployment['name']}"] = deployment
    return components


def test_every_security_context_in_the_values_is_restricted(settings: DeploymentSettings):
    values = helm.helm_values(settings)
    contexts = [
        (f"{path}.{key}", item)
        for path, key, item in _walk(values)
        if key in ("securityContext", "podSecurityContext")
    ]
    assert len(contexts) >= 8  # webserver, daemon, code server: pod and container; run pods
    errors = []
    for where, context in contexts:
        if context.get("runAsNonRoot") is not True or context.get("runAsUser") == 0:
            errors.append(f"{where}: may run as root")
        if context.get("seccompProfile") != {"type": "RuntimeDefault"}:
            errors.append(f"{where}: seccompProfile")
        if where.endswith(".securityContext") and "podSpecConfig" not in where:
            if context.get("allowPrivilegeEscalation") is not False or context.get("privileged"):
                errors.append(f"{where}: privilege")
            if context.get("capabilities") != {"drop": ["ALL"]}:
                errors.append(f"{where}: capabilities")
    assert errors == []


def test_the_values_pod_fragments_are_valid_pods(settings: DeploymentSettings):
    values = helm.helm_values(settings)
    built = []
    for name, section in _chart_components(values).items():
        env = section.get("env") or []
        pod = pod_from_fragments(
            name.split("/")[-1].lower(),
            labels=section["labels"],
            pod_security_context=section["podSecurityContext"],
            container={
                "securityContext": section["securityContext"],
                "resources": section["resources"],
                "volumeMounts": section.get("volumeMounts", []),
                "env": env,
                "envFrom": [{"secretRef": s} for s in section.get("envSecrets", [])],
                **(
                    {"readinessProbe": section["readinessProbe"]}
                    if "readinessProbe" in section
                    else {}
                ),
            },
            pod_spec={"volumes": section.get("volumes", [])},
        )
        built.append(pod)
        assert security_errors(name, pod["spec"]) == []
    assert strict_errors(built) == []
    probe = values["dagsterWebserver"]["readinessProbe"]["httpGet"]["port"]
    assert probe == values["dagsterWebserver"]["service"]["port"] == pods.WEBSERVER_PORT
    broken = copy.deepcopy(built[0])
    broken["spec"]["containers"][0]["resources"]["limits"]["memory"] = {"Gi": 2}
    assert strict_errors([broken])


def test_the_values_reference_the_image_the_dockerfile_builds(files, settings):
    values = helm.helm_values(settings)
    images = [
        section["image"]
        for section in _chart_components(values).values()
        if isinstance(section.get("image"), dict)
    ]
    assert len(images) == 3
    for image in images:
        assert f"{image['repository']}:{image['tag']}" == settings.image
    dockerfile = files["Dockerfile"]
    assert f'org.opencontainers.image.ref.name="{settings.image}"' in dockerfile
    assert f"-t {settings.image} ." in dockerfile
    assert spark_defaults(settings)["spark.kubernetes.container.image"] == settings.image
