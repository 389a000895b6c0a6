"""Keeps package requests, their vetting and the project indexes in step.

``package_requests_sensor``: a new request becomes a partition and is vetted; a referent's
decision re-vets the requests it touches; a project whose approved set changed gets its index
rebuilt. ``vulnerability_database_sensor``: when the configured OSV database changes, every
request is vetted again (an approved package newly vulnerable is flagged to its projects).
"""

from __future__ import annotations

import json

import dagster as dg

from hdh_assets.packages.assets import REQUESTS
from hdh_assets.workspaces.assets import PROJECTS
from jobs.packages import (
    publish_package_index_job,
    revet_package_requests_job,
    vet_package_requests_job,
)
from package_manager import service
from package_manager.decisions import DecisionError
from resources.home import HdhHome


def _home() -> HdhHome:
    return HdhHome.from_env()


@dg.sensor(
    name="package_requests_sensor",
    jobs=[vet_package_requests_job, revet_package_requests_job, publish_package_index_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One partition per package request (specs folder package-requests/ files and "
    "requests filed with hdh packages request); a new request is resolved and vetted, a new "
    "referent decision re-vets the requests whose closures hold that file, and a project "
    "whose approved set differs from what its index serves gets its index rebuilt. A refused "
    "request file is reported here with its path and reason and left where it is.",
)
def package_requests_sensor(context: dg.SensorEvaluationContext):
    home = _home()
    loaded = service.all_requests(home)
    for error in loaded.errors:
        context.log.warning(f"package request refused: {error}")
    cursor = json.loads(context.cursor) if context.cursor else {"decisions": 0}
    known = set(context.instance.get_dynamic_partitions(REQUESTS.name))
    new = sorted(set(loaded.requests) - known)
    if new:
        context.instance.add_dynamic_partitions(REQUESTS.name, new)
    runs = [
        dg.RunRequest(
            run_key=f"vet-{request_id}",
            partition_key=request_id,
            job_name=vet_package_requests_job.name,
        )
        for request_id in new
    ]
    try:
        decisions = service.package_store(home).decisions.entries()
    except DecisionError as unreadable:  # reported every tick until the log is repaired
        context.log.error(f"package decisions not read: {unreadable}")
        decisions = None
    new_decisions = decisions[cursor["decisions"] :] if decisions is not None else []
    touched = service.requests_touched_by(home, new_decisions)
    runs += [
        dg.RunRequest(
            run_key=f"decision-{cursor['decisions'] + len(new_decisions)}-{request_id}",
            partition_key=request_id,
            job_name=revet_package_requests_job.name,
        )
        for request_id in sorted(touched - set(new))
    ]
    projects = set(context.instance.get_dynamic_partitions(PROJECTS.name))
    for project, digest in service.stale_indexes(home, loaded.requests.values()).items():
        if project in projects:
            runs.append(
                dg.RunRequest(
                    run_key=f"index-{project}-{digest}",
                    partition_key=project,
                    job_name=publish_package_index_job.name,
                )
            )
    if decisions is not None:
        cursor["decisions"] = len(decisions)
    if not runs:
        return dg.SensorResult(
            skip_reason="no new request, decision or approved set", cursor=json.dumps(cursor)
        )
    return dg.SensorResult(run_requests=runs, cursor=json.dumps(cursor))


@dg.sensor(
    name="vulnerability_database_sensor",
    jobs=[revet_package_requests_job],
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches what vetting depends on besides the packages: the vulnerability "
    "database (HDH_OSV_EXPORT's advisories, or HDH_OSV_URL's answers about the vetted "
    "packages) and the package policy file. When either changes, every request vetted against "
    "the old ones is vetted again with every check re-run; an approved package that is not any "
    "more is flagged to the projects using it and leaves their indexes.",
)
def vulnerability_database_sensor(context: dg.SensorEvaluationContext):
    home = _home()
    fingerprint = service.vetting_inputs_fingerprint(home)
    if context.cursor == fingerprint:
        return dg.SkipReason(f"vulnerability database and policy unchanged ({fingerprint[:12]})")
    behind = service.vetted_against_other(home, fingerprint)
    runs = [
        dg.RunRequest(
            run_key=f"revet-{fingerprint}-{request_id}-{vetted_at}",
            partition_key=request_id,
            job_name=revet_package_requests_job.name,
            tags={service.REVET_TAG: "true"},
        )
        for request_id, vetted_at in sorted(behind.items())
    ]
    return dg.SensorResult(run_requests=runs, cursor=fingerprint)
