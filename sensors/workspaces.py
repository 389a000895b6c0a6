"""Keeps the workspace partitions in step with the specs folder, and checks for drift daily."""

import hashlib
import json

import dagster as dg

from hdh_assets.workspaces.assets import PROJECTS
from hdh_assets.workspaces.config import specs_dir
from hdh_assets.workspaces.specs import APPROVALS_FILE, spec_files
from jobs.workspaces import deliver_workspaces_job, provision_workspaces_job


def spec_digests() -> dict[str, str] | None:
    """Content digest per spec file, the approvals file included (revoking an approval
    re-provisions the projects it covered); None when the folder is missing."""
    folder = specs_dir()
    if not folder.is_dir():
        return None
    approvals = folder.parent / APPROVALS_FILE
    shared = approvals.read_bytes() if approvals.exists() else b""
    return {
        p.stem: hashlib.sha256(shared + b"\0" + p.read_bytes()).hexdigest()[:16]
        for p in spec_files(folder)
    }


@dg.sensor(
    name="workspace_specs_sensor",
    jobs=[provision_workspaces_job, deliver_workspaces_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One partition per spec file of the workspaces folder; a new or changed spec "
    "(or approvals file) starts provision_workspaces for its project, a removed one starts "
    "deliver_workspaces, which decommissions it. The cursor remembers each project's last "
    "digest, so a spec reverted to an earlier version is provisioned again. A missing or "
    "emptied folder changes nothing.",
)
def workspace_specs_sensor(context: dg.SensorEvaluationContext):
    digests = spec_digests()
    known = set(context.instance.get_dynamic_partitions(PROJECTS.name))
    if digests is None or (known and not digests):
        return dg.SkipReason(f"specs folder {specs_dir()} missing or empty: nothing changed")
    cursor = json.loads(context.cursor) if context.cursor else {"seen": {}, "tick": 0}
    tick = cursor["tick"] + 1
    changed = sorted(p for p, d in digests.items() if cursor["seen"].get(p) != d)
    added, removed = sorted(set(digests) - known), sorted(known - set(digests))
    runs = [
        dg.RunRequest(
            job_name=provision_workspaces_job.name,
            partition_key=project,
            run_key=f"{project}:{digests[project]}:{tick}",
            tags={"hdh/workspace": project},
        )
        for project in changed
    ]
    if removed:
        runs.append(
            dg.RunRequest(
                job_name=deliver_workspaces_job.name,
                run_key=f"decommission:{','.join(removed)}:{tick}",
            )
        )
    partition_requests = []
    if added:
        partition_requests.append(PROJECTS.build_add_request(added))
    if removed:
        partition_requests.append(PROJECTS.build_delete_request(removed))
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=partition_requests,
        cursor=json.dumps({"seen": digests, "tick": tick}),
    )


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
