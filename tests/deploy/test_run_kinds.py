"""Run kinds: their tags are dagster-k8s configuration, every job carries one, and the run pod
dagster-k8s builds from the rendered instance and a kind's tags is a valid, restricted Job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.storage.dagster_run import DagsterRun
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)
from dagster_k8s.models import k8s_model_from_dict
from kubernetes.client import ApiClient, V1Container

from hdh_assets.definitions import build_definitions
from hdh_cli.deployment import pods
from hdh_cli.deployment.render import INSTANCE
from hdh_cli.deployment.settings import DeploymentSettings
from jobs.run_kinds import (
    K8S_CONFIG_TAG,
    RUN_KIND_TAG,
    RUN_KINDS,
    landing_run_kind,
    run_kind_tags,
    step_executor,
    step_executor_config,
)
from tests.deploy.conftest import COMMITTED
from tests.deploy.pod_rules import pod_templates, security_errors, strict_errors

# A kubeconfig that names a cluster nobody calls: the launcher only reads it at construction.
_KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
    "current-context": "x",
}


@pytest.mark.parametrize("kind", sorted(RUN_KINDS))
def test_each_kind_is_valid_dagster_k8s_config(kind: str):
    tags = run_kind_tags(kind)
    assert all(isinstance(value, str) for value in tags.values())
    parsed = get_user_defined_k8s_config(tags)
    assert isinstance(parsed, UserDefinedDagsterK8sConfig)
    assert parsed.container_config["resources"] == RUN_KINDS[kind].resources()
    assert parsed.pod_template_spec_metadata["labels"] == {"hdh.platform/run-kind": kind}
    assert tags[RUN_KIND_TAG] == kind


def test_a_malformed_k8s_config_tag_is_refused():
    config = json.loads(run_kind_tags("spark")[K8S_CONFIG_TAG])
    misnamed = {"containers_config": config["container_config"]}
    with pytest.raises(dg.DagsterInvalidConfigError):
        get_user_defined_k8s_config({K8S_CONFIG_TAG: json.dumps(misnamed)})
    # A misspelt container field passes the tag's schema, but not the container's model.
    container = dict(config["container_config"], name="dagster")
    assert k8s_model_from_dict(V1Container, container).resources.limits["memory"] == "8Gi"
    container["resource"] = container.pop("resources")
    with pytest.raises(Exception, match="resource"):
        k8s_model_from_dict(V1Container, container)


def test_every_job_of_the_code_location_carries_a_run_kind(hdh_home):
    defs = build_definitions(hdh_home)
    jobs = [job for job in defs.resolve_all_job_defs() if not job.name.startswith("__")]
    assert len(jobs) >= 8
    kinds = {}
    for job in jobs:
        assert job.tags.get(RUN_KIND_TAG) in RUN_KINDS, job.name
        assert get_user_defined_k8s_config(job.tags).container_config["resources"], job.name
        kinds[job.name] = job.tags[RUN_KIND_TAG]
    assert kinds["ingest_claims_batch"] == "spark"
    assert kinds["ingest_dicom_batch"] == kinds["ingest_json_batch"] == "ingestion"
    assert kinds["provision_workspaces"] == "workspaces"
    assert kinds["vet_package_requests"] == "packages"
    assert landing_run_kind("claims") == "spark"


def test_the_rights_sensors_runs_carry_the_rights_kind():
    from hdh_assets.gdpr.steps import _run_request

    request = _run_request("req-1", 1, "prepare", tags={"extra": "kept"})
    assert request.tags[RUN_KIND_TAG] == "rights" and request.tags["extra"] == "kept"
    config = get_user_defined_k8s_config(request.tags)
    assert config.container_config["resources"] == RUN_KINDS["rights"].resources()


def test_the_code_location_takes_its_executor_from_the_setting(hdh_home, monkeypatch):
    def executor():
        return build_definitions(hdh_home).resolve_implicit_global_asset_job_def().executor_def

    assert executor() is dg.in_process_executor
    monkeypatch.setenv("HDH_STEP_EXECUTOR", "k8s")
    assert executor().name == "k8s_step_executor"


def test_the_local_executor_stays_in_process_unless_asked():
    assert step_executor({}) is dg.in_process_executor
    assert step_executor({"HDH_STEP_EXECUTOR": "in_process"}) is dg.in_process_executor
    isolated = step_executor({"HDH_STEP_EXECUTOR": "k8s"})
    assert isolated.name == "k8s_step_executor"
    schema = k8s_job_executor.config_schema.config_type
    assert validate_config(schema, step_executor_config()).success
    assert not validate_config(schema, {**step_executor_config(), "max_concurent": 4}).success
    with pytest.raises(ValueError, match="HDH_STEP_EXECUTOR"):
        step_executor({"HDH_STEP_EXECUTOR": "celery"})


def _launcher(tmp_path: Path, config: dict[str, Any]) -> K8sRunLauncher:
    """dagster-k8s's own launcher, from the rendered configuration (kube access aside)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(_KUBECONFIG))
    result = validate_config(K8sRunLauncher.config_type(), config)
    assert result.success, result.errors
    value = {**result.value, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    return K8sRunLauncher(**value)


def _run_job(launcher: K8sRunLauncher, tags: dict[str, str], image: str) -> dict[str, Any]:
    """The Job the launcher would create for a run with these tags, as the API receives it."""
    run = DagsterRun(job_name="some_job", run_id="0f0e0d0c-0000-4000-8000-000000000001", tags=tags)
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
    job_config = DagsterK8sJobConfig(
        job_image=image,
        dagster_home=launcher.dagster_home,
        instance_config_map=launcher.instance_config_map,
        postgres_password_secret=launcher.postgres_password_secret,
    )
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_run", "{}"],
        job_name="dagster-run-0f0e0d0c",
        pod_name="dagster-run-0f0e0d0c",
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": "some_job"},
    )
    body = ApiClient().sanitize_for_serialization(job)
    body["metadata"]["namespace"] = context.namespace
    return body


@pytest.mark.parametrize("kind", [None, *sorted(RUN_KINDS)])
def test_run_pods_are_valid_restricted_and_sized_by_their_kind(tmp_path: Path, kind: str | None):
    settings = DeploymentSettings()
    instance = yaml.safe_load((COMMITTED / INSTANCE).read_text())
    launcher = _launcher(tmp_path, instance["run_launcher"]["config"])
    job = _run_job(launcher, run_kind_tags(kind) if kind else {}, settings.image)
    assert strict_errors([job]) == []
    [(where, spec)] = list(pod_templates(job))
    assert security_errors(where, spec) == []
    container = spec["containers"][0]
    expected = (
        RUN_KINDS[kind].resources()
        if kind
        else {
            "requests": {"cpu": settings.run_cpu, "memory": settings.run_memory},
            "limits": {"cpu": settings.run_cpu, "memory": settings.run_memory},
        }
    )
    assert container["resources"] == expected
    assert container["image"] == settings.image
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels[pods.COMPONENT_LABEL] == pods.RUN  # what the network policies select
    env = {e["name"]: e for e in container["env"]}
    assert env["HDH_HOME"]["value"] == pods.HOME_MOUNT
    assert env["HDH_SPARK_DRIVER_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == (
        settings.postgres_secret
    )
    assert {"secretRef": {"name": settings.platform_secret}} in container["envFrom"]
    mounts = {m["name"] for m in container["volumeMounts"]}
    assert {pods.HOME_CLAIM, pods.SPARK_CONF_MAP, pods.TMP_VOLUME} <= mounts
    assert spec["serviceAccountName"] == pods.DAGSTER_SERVICE_ACCOUNT
