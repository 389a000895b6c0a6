"""What follows a batch, run by the daemon: the automation conditions declared on the assets,
and the months of claims events a claims batch touches."""

import dagster as dg

from hdh_assets.automation import claims_month_requests
from hdh_assets.claims.assets import EVENTS_KEY, MONTHS, landed_claims_files
from resources.platform import HomeResource
from resources.pseudonymisation import PseudonymisationKeyResource

automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates the automation conditions declared on the assets: series, studies, "
    "the linkage, the products and the subject index follow every ingested batch, a changed "
    "month of claims events is followed by the same month of the monthly products.",
)


@dg.sensor(
    name="claims_months_sensor",
    asset_selection=dg.AssetSelection.assets(EVENTS_KEY),
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each claims batch is ingested, re-computes the months of claims events "
    "its events can fall in (raw event dates, widened by the largest date shift), as one "
    "range run. The cursor is the last inventory materialisation seen.",
)
def claims_months_sensor(
    context: dg.SensorEvaluationContext,
    hdh_home: HomeResource,
    pseudonymisation: PseudonymisationKeyResource,
):
    after = int(context.cursor) if context.cursor else None
    if after is None:  # first tick: start from now, the batches before were followed already
        latest = context.instance.fetch_materializations(landed_claims_files.key, limit=1).records
        return dg.SensorResult(cursor=str(latest[0].storage_id) if latest else "0")
    requests, cursor = claims_month_requests(
        context.instance,
        landed_claims_files.key,
        EVENTS_KEY,
        MONTHS,
        hdh_home.home.landing_for("claims"),
        pseudonymisation.max_date_shift_days,
        after,
        context.log.warning,
    )
    return dg.SensorResult(run_requests=requests, cursor=str(cursor))
