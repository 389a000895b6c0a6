"""Keeps the workspace partitions in step with the specs folder, and checks for drift daily."""

import hashlib

import dagster as dg

from hdh_assets.workspaces.assets import PROJECTS
from hdh_assets.workspaces.config import specs_dir
from hdh_assets.workspaces.specs import spec_files
from jobs.workspaces import deliver_workspaces_job, provision_workspaces_job


def spec_changes(instance: dg.DagsterInstance) -> tuple[dict[str, str], list[str], list[str]]:
    """(content digest per spec file, partitions to add, partitions to delete)."""
    folder = specs_dir()
    files = spec_files(folder) if folder.exists() else []
    digests = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in files}
    known = set(instance.get_dynamic_partitions(PROJECTS.name))
    return digests, sorted(set(digests) - known), sorted(known - set(digests))


@dg.sensor(
    name="workspace_specs_sensor",
    jobs=[provision_workspaces_job, deliver_workspaces_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One partition per spec file of the workspaces folder; a new or changed spec "
    "starts provision_workspaces for its project (run key: project and content digest, so an "
    "unchanged spec never runs twice), a removed one starts deliver_workspaces, which "
    "decommissions it.",
)
def workspace_specs_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    digests, added, removed = spec_changes(context.instance)
    runs = [
        dg.RunRequest(
            job_name=provision_workspaces_job.name,
            partition_key=project,
            run_key=f"{project}:{digest}",
            tags={"hdh/workspace": project},
        )
        for project, digest in sorted(digests.items())
    ]
    if removed:
        runs.append(
            dg.RunRequest(
                job_name=deliver_workspaces_job.name,
                run_key=f"decommission:{','.join(removed)}",
            )
        )
    partition_requests = []
    if added:
        partition_requests.append(PROJECTS.build_add_request(added))
    if removed:
        partition_requests.append(PROJECTS.build_delete_request(removed))
    return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=partition_requests)


workspace_drift_schedule = dg.ScheduleDefinition(
    name="workspace_drift_schedule",
    job=deliver_workspaces_job,
    cron_schedule="0 6 * * *",
    run_config={"ops": {"workspaces__workspace_deployments": {"config": {"repair_drift": True}}}},
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily: deliver every project again, re-applying even unchanged objects, which "
    "repairs what was changed by hand in the GitOps repository or the cluster and retires "
    "expired projects.",
)
