"""The rights sensor: verified requests become Dagster runs, step by step.

Each tick takes every pending request one step further (``hdh_assets.gdpr.steps``): the
exclusion snapshot and the request's plan, the planned re-materialisations wave by wave, the
proof checks, then the outcome that completes or fails the request. Run keys name the request,
its attempt and the step, so a restarted daemon never launches a step twice.
"""

import dagster as dg

from hdh_assets.gdpr.service import pending
from hdh_assets.gdpr.steps import advance
from resources.platform import HomeResource
from resources.rights_registry import RightsRegistryResource

MAX_REQUESTS_PER_TICK = 25  # a backlog drains over ticks; each tick stays far below its timeout


@dg.sensor(
    name="rights_sensor",
    asset_selection=dg.AssetSelection.all(),
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Takes each verified objection, erasure, rectification or access request "
    "through its runs: exclusion and plan, the planned re-materialisations (wave by wave), "
    "the proof checks, then the outcome. Every run is tagged hdh/rights_request.",
)
def rights_sensor(
    context: dg.SensorEvaluationContext,
    hdh_home: HomeResource,
    rights_registry: RightsRegistryResource,
):
    home = hdh_home.home
    registry = rights_registry.registry(home)
    graph = context.repository_def.asset_graph
    run_requests = []
    for request_id in pending(registry, home)[:MAX_REQUESTS_PER_TICK]:
        try:
            steps = advance(context.instance, graph, registry, request_id)
        except Exception as error:  # one request's trouble must not stop the others
            context.log.error(f"rights request {request_id}: {type(error).__name__}: {error}")
            continue
        run_requests += [step.run_request for step in steps]
    if not run_requests:
        return dg.SkipReason("nothing to launch now (no request waiting, or its runs in flight)")
    return dg.SensorResult(run_requests=run_requests)
