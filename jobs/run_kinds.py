"""Run kinds: what each kind of run needs from Kubernetes, as data, and the run tags that say so.

On Kubernetes every run is a pod of its own (``K8sRunLauncher``), sized by the run tag
``dagster-k8s/config`` its job carries; locally the default run launcher ignores the tag, so the
same job definitions run everywhere. Runs whose job carries no kind (the rights sensor's and the
automation sensor's runs of the implicit asset job) get the instance's default run-pod size,
which the Kubernetes values set (``runLauncher.config.k8sRunLauncher.resources``).

``step_executor`` is the opt-in to ``k8s_job_executor`` (one pod per step) for the code
location: only when ``HDH_STEP_EXECUTOR=k8s`` is set, so that a checkout without a cluster (or
without dagster-k8s configured) loads and runs in process as before.
"""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

K8S_CONFIG_TAG = "dagster-k8s/config"  # dagster_k8s's USER_DEFINED_K8S_CONFIG_KEY
RUN_KIND_TAG = "hdh/kind"
STEP_EXECUTOR_ENV = "HDH_STEP_EXECUTOR"


@dataclass(frozen=True)
class RunKind:
    """The container of one kind of run pod: requests are what it is scheduled with, limits
    what it may not pass (memory limit = OOM kill, so it covers the kind's peak)."""

    name: str
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    env: Mapping[str, str]
    description: str

    def resources(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


RUN_KINDS: Mapping[str, RunKind] = {
    kind.name: kind
    for kind in (
        RunKind(
            "ingestion",
            "1",
            "2",
            "2Gi",
            "4Gi",
            {},
            "a landed DICOM or JSON batch: pseudonymisation and polars tables",
        ),
        # The Spark driver runs in the run pod (client mode) or only its client (Spark Connect):
        # sized for a 4g driver heap plus the JVM's and Python's own memory.
        RunKind(
            "spark",
            "2",
            "4",
            "6Gi",
            "8Gi",
            {"HDH_SPARK_DRIVER_MEMORY": "4g"},
            "Spark products and claims batches: the Spark driver lives in this pod",
        ),
        RunKind(
            "rights",
            "1",
            "2",
            "2Gi",
            "4Gi",
            {},
            "a rights request's exclusion, re-materialisations and proofs",
        ),
        RunKind(
            "workspaces",
            "250m",
            "1",
            "512Mi",
            "1Gi",
            {},
            "rendering, validating and delivering workspace manifests",
        ),
        RunKind(
            "packages",
            "500m",
            "2",
            "1Gi",
            "2Gi",
            {},
            "resolving and vetting package requests, rebuilding indexes",
        ),
    )
}

# Landing sources whose batch runs Spark (claims tables are written by Spark).
SPARK_LANDING_SOURCES = frozenset({"claims"})


def k8s_config(kind: str) -> dict:
    """The ``dagster-k8s/config`` value of a kind: the run container's resources and env."""
    run_kind = RUN_KINDS[kind]
    container: dict = {"resources": run_kind.resources()}
    if run_kind.env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(run_kind.env.items())]
    return {
        "container_config": container,
        "pod_template_spec_metadata": {"labels": {"hdh.platform/run-kind": kind}},
    }


def run_kind_tags(kind: str) -> dict[str, str]:
    """The tags a job of this kind carries (JSON text: run tags are strings)."""
    return {
        RUN_KIND_TAG: kind,
        K8S_CONFIG_TAG: json.dumps(k8s_config(kind), sort_keys=True, separators=(",", ":")),
    }


def landing_run_kind(source: str) -> str:
    return "spark" if source in SPARK_LANDING_SOURCES else "ingestion"


def step_executor(environ: Mapping[str, str] | None = None) -> dg.ExecutorDefinition:
    """``k8s_job_executor`` when ``HDH_STEP_EXECUTOR=k8s`` (each step its own pod, sized like a
    Spark run: isolation for Spark products and for parsing the files research projects
    deliver); otherwise the in-process executor, the local default. dagster-k8s is imported only
    in the first case."""
    environ = os.environ if environ is None else environ
    choice = environ.get(STEP_EXECUTOR_ENV, "").strip().lower() or "in_process"
    if choice == "in_process":
        return dg.in_process_executor
    if choice != "k8s":
        raise ValueError(f"{STEP_EXECUTOR_ENV}={choice!r}: expected 'in_process' or 'k8s'")
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(step_executor_config(), name="k8s_step_executor")


def step_executor_config() -> dict:
    """``k8s_job_executor``'s configuration: at most four step pods of a run at once, each sized
    like a Spark run; everything else (image, env, volumes, security) comes from the run
    launcher, as for run pods."""
    return {
        "max_concurrent": 4,
        "step_k8s_config": {"container_config": {"resources": RUN_KINDS["spark"].resources()}},
    }
