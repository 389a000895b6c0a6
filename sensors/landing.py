"""One sensor per landing source: register each complete batch as a partition and ingest it."""

from __future__ import annotations

import os

import dagster as dg

from hdh_assets.landing.batches import DEFAULT_QUIET_SECONDS, latest_change, list_batches
from hdh_assets.landing.partitions import BATCH_PARTITIONS, LANDING_GROUPS
from resources.platform import HomeResource


def quiet_seconds() -> float:
    return float(os.environ.get("HDH_LANDING_QUIET_SECONDS", DEFAULT_QUIET_SECONDS))


def _ingested_since(
    instance: dg.DagsterInstance, key: dg.AssetKey, batch: str, changed: float
) -> bool:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[batch]), limit=1
    ).records
    return bool(records) and records[0].timestamp >= changed


def landing_sensor(source: str, job) -> dg.SensorDefinition:
    partitions = BATCH_PARTITIONS[source]
    inventory = dg.AssetKey([LANDING_GROUPS[source], "landed_files"])

    @dg.sensor(
        name=f"{source}_landing_sensor",
        job=job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Registers each complete batch of landing/{source}/ (it holds _READY, or "
        f"nothing changed for HDH_LANDING_QUIET_SECONDS) as a partition and ingests it, unless it "
        f"was ingested after its last change. A batch landed again is ingested again.",
    )
    def _sensor(context: dg.SensorEvaluationContext, hdh_home: HomeResource) -> dg.SensorResult:
        batches = list_batches(hdh_home.home.landing_for(source), quiet_seconds())
        # ready, and changed since it was last ingested (by this sensor, the demo or the CLI)
        ready = [
            b
            for b in batches
            if b.ready
            and not _ingested_since(context.instance, inventory, b.name, latest_change(b.path))
        ]
        known = set(context.instance.get_dynamic_partitions(partitions.name))
        new = [b.name for b in ready if b.name not in known]
        waiting = [b for b in batches if not b.ready]
        if waiting:
            context.log.info(f"{len(waiting)} batch(es) of {source} not complete yet")
        return dg.SensorResult(
            run_requests=[
                # The run key changes when the batch changes, so a re-landed batch runs again.
                dg.RunRequest(
                    partition_key=b.name,
                    run_key=f"{source}:{b.name}:{int(latest_change(b.path))}",
                    tags={"hdh/landing_source": source, "hdh/batch_ready": b.reason},
                )
                for b in ready
            ],
            dynamic_partitions_requests=[partitions.build_add_request(new)] if new else [],
        )

    return _sensor
