"""Keeps the workspace partitions in step with the specs folder, and checks for drift daily."""

import json

import dagster as dg

from hdh_assets.workspaces.assets import (
    MANIFESTS_KEY,
    PROJECTS,
    SPEC_FILE_DIGEST,
    SPECS_KEY,
    spec_file_digests,
)
from hdh_assets.workspaces.config import specs_dir
from jobs.workspaces import deliver_workspaces_job, provision_workspaces_job


def spec_digests() -> dict[str, str] | None:
    """Content digest per spec file, the approvals file included (revoking an approval
    re-provisions the projects it covered); None when the folder is missing. The digest
    workspace_specs records in its materialisations."""
    return spec_file_digests()


def provisioned_digest(instance: dg.DagsterInstance, project: str) -> str | None:
    """The spec file digest the project was last provisioned from, as the instance records it:
    that of its latest workspace_specs materialisation, provided its manifests were materialised
    after it (a run that stopped half-way provisioned nothing). None when unknown."""
    specs = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SPECS_KEY, asset_partitions=[project]), limit=1
    ).records
    if not specs:
        return None
    manifests = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=MANIFESTS_KEY,
            asset_partitions=[project],
            after_storage_id=specs[0].storage_id,
        ),
        limit=1,
    ).records
    if not manifests:
        return None
    value = specs[0].asset_materialization.metadata.get(SPEC_FILE_DIGEST)
    return getattr(value, "value", value)


@dg.sensor(
    name="workspace_specs_sensor",
    jobs=[provision_workspaces_job, deliver_workspaces_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One partition per spec file of the workspaces folder; a new or changed spec "
    "(or approvals file) starts provision_workspaces for its project, a removed one starts "
    "deliver_workspaces, which decommissions it. A spec counts as changed when its digest "
    "differs from the one last seen: the cursor remembers each project's last digest (so a "
    "spec reverted to an earlier version is provisioned again), and for a project the cursor "
    "does not know (first tick, e.g. after hdh demo or hdh workspaces apply) the instance "
    "does: the digest recorded by its last provisioning. A missing or emptied folder changes "
    "nothing.",
)
def workspace_specs_sensor(context: dg.SensorEvaluationContext):
    digests = spec_digests()
    known = set(context.instance.get_dynamic_partitions(PROJECTS.name))
    if digests is None or (known and not digests):
        return dg.SkipReason(f"specs folder {specs_dir()} missing or empty: nothing changed")
    cursor = json.loads(context.cursor) if context.cursor else {"seen": {}, "tick": 0}
    tick = cursor["tick"] + 1
    seen = cursor["seen"]

    def last_digest(project: str) -> str | None:
        if project in seen:
            return seen[project]
        # the instance is the truth the cursor caches; a project whose partition is gone was
        # decommissioned since its last provisioning, so its spec comes back as a new one
        return provisioned_digest(context.instance, project) if project in known else None

    changed = sorted(p for p, d in digests.items() if last_digest(p) != d)
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
