"""The rights sensor: verified objections and erasures become processing runs, once each.

Idempotent: the run key is the request id, so Dagster never launches a request twice; a
request left in ``processing`` by a killed run (or a daemon restart) gets one new run per
attempt once no run of it is queued or in progress.
"""

import dagster as dg

from jobs.rights import REQUEST_TAG, gdpr_process_request_job
from resources.platform import HomeResource

MAX_RUNS_PER_TICK = 25  # a backlog drains over ticks; each tick stays far below its timeout
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _runs_of(instance: dg.DagsterInstance, request_id: str, statuses=None) -> list:
    return list(
        instance.get_runs(
            filters=dg.RunsFilter(
                job_name=gdpr_process_request_job.name,
                tags={REQUEST_TAG: request_id},
                statuses=statuses,
            )
        )
    )


def rights_run_requests(instance: dg.DagsterInstance, registry, home=None) -> list[dg.RunRequest]:
    from hdh_assets.gdpr.rights import Status
    from hdh_cli.rights import pending

    requests = []
    for request_id in pending(registry, home):
        if len(requests) >= MAX_RUNS_PER_TICK:
            break
        if _runs_of(instance, request_id, ACTIVE):
            continue  # being processed now
        status = registry.get(request_id).status
        attempt = len(_runs_of(instance, request_id)) if status is not Status.VERIFIED else 0
        requests.append(
            dg.RunRequest(
                run_key=f"{request_id}:{attempt}",
                run_config={
                    "ops": {"process_rights_request": {"config": {"request_id": request_id}}}
                },
                tags={REQUEST_TAG: request_id},
            )
        )
    return requests


@dg.sensor(
    name="rights_sensor",
    job=gdpr_process_request_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches one processing run per verified objection or erasure request, and "
    "resumes requests whose processing run was killed.",
)
def rights_sensor(context: dg.SensorEvaluationContext, hdh_home: HomeResource):
    from resources.rights_registry import RightsRegistry

    registry = RightsRegistry.from_env(hdh_home.home)
    run_requests = rights_run_requests(context.instance, registry, hdh_home.home)
    if not run_requests:
        return dg.SkipReason("no verified objection or erasure waiting")
    return dg.SensorResult(run_requests=run_requests)
