"""Processing one GDPR rights request, as a job the rights sensor launches.

The op calls the same processing as ``hdh rights process --wait``: it launches the runs that
re-materialise the person's partitions on the instance (each tagged ``hdh/rights_request``),
then the proof checks, and completes or fails the request with its report.
"""

import dagster as dg

from resources.platform import HomeResource

REQUEST_TAG = "hdh/rights_request"


class RightsRequestConfig(dg.Config):
    request_id: str


@dg.op(description="Exclude, remove stored copies, re-materialise, prove, complete.")
def process_rights_request(
    context: dg.OpExecutionContext, config: RightsRequestConfig, hdh_home: HomeResource
) -> dict:
    from hdh_cli.rights import process_request
    from resources.rights_registry import RightsRegistry

    home = hdh_home.home
    outcome = process_request(
        home, context.instance, RightsRegistry.from_env(home), config.request_id
    )
    context.log.info(f"rights request {config.request_id}: {outcome.status}")
    if outcome.status not in ("completed",):
        raise dg.Failure(
            description=f"rights request {config.request_id} is {outcome.status}",
            metadata={"report": dg.MetadataValue.json(outcome.report)},
        )
    return {"request": config.request_id, "status": outcome.status}


@dg.job(
    name="gdpr_process_request",
    description="Process one verified objection or erasure request (launched by rights_sensor).",
    tags={"hdh/kind": "gdpr"},
)
def gdpr_process_request_job():
    process_rights_request()
