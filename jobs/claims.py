"""Claims jobs: the monthly events, one run for any range of months (single-run backfill)."""

import dagster as dg

from hdh_assets.claims.assets import EVENTS_KEY, MONTHS

claims_monthly_job = dg.define_asset_job(
    name="claims_monthly",
    selection=dg.AssetSelection.assets(EVENTS_KEY),
    partitions_def=MONTHS,
    description="Pseudonymised claims events for a month, or a range of months in one run.",
)
