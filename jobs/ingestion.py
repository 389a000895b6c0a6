"""One job per landing source, run by its sensor for each complete batch."""

from collections.abc import Iterable

import dagster as dg

from hdh_assets.landing.partitions import BATCH_PARTITIONS
from jobs.run_kinds import landing_run_kind, run_kind_tags


def landing_job(source: str, assets: Iterable[dg.AssetsDefinition]):
    """Every asset partitioned by this source's batches: what one landed batch feeds."""
    partitions = BATCH_PARTITIONS[source]
    keys = [key for asset in assets if asset.partitions_def == partitions for key in asset.keys]
    return dg.define_asset_job(
        name=f"ingest_{source}_batch",
        selection=dg.AssetSelection.assets(*keys),
        partitions_def=partitions,
        description=f"Ingest one batch of landing/{source}/.",
        tags=run_kind_tags(landing_run_kind(source)),
    )
