"""One sensor per landing source: register each complete batch as a partition and ingest it.

The sensor's cursor maps each batch it has seen ready to a cheap signature of its folder
(``batch_signature``: two stats). A batch whose signature is the one in the cursor is skipped
without walking its files or asking the instance; only new or changed batches are examined in
full. Batches are published by renaming a new folder into place, so a batch landed again has a
new signature. Without a cursor (the first tick, or after a reset) every ready batch is examined
and the ``_ingested_since`` check keeps batches already ingested (by ``hdh demo`` or
``hdh ingest``) from being ingested again."""

from __future__ import annotations

import json
import os

import dagster as dg

from hdh_assets.landing.batches import (
    DEFAULT_QUIET_SECONDS,
    Batch,
    batch_folders,
    batch_signature,
    batch_state,
    latest_change,
)
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


def read_cursor(cursor: str | None) -> dict[str, str]:
    """Batch name -> signature of the batches seen ready; anything unreadable counts as empty."""
    if not cursor:
        return {}
    try:
        seen = json.loads(cursor)
    except ValueError:
        return {}
    if not isinstance(seen, dict):
        return {}
    return {str(name): str(signature) for name, signature in seen.items()}


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
        f"was ingested after its last change. A batch landed again is ingested again. The cursor "
        f"holds a signature of each batch seen; unchanged batches are not walked again.",
    )
    def _sensor(context: dg.SensorEvaluationContext, hdh_home: HomeResource) -> dg.SensorResult:
        seen = read_cursor(context.cursor)
        quiet = quiet_seconds()
        cursor: dict[str, str] = {}  # what this tick saw ready; vanished batches drop out
        examined: list[tuple[Batch, str]] = []
        waiting: list[Batch] = []
        for folder in batch_folders(hdh_home.home.landing_for(source)):
            try:
                # Taken before the walk: a change during the walk shows next tick.
                signature = batch_signature(folder)
                if seen.get(folder.name) == signature:
                    cursor[folder.name] = signature
                    continue
                batch = batch_state(source, folder, quiet)
            except FileNotFoundError:  # replaced or removed while we looked: next tick
                continue
            if batch.ready:
                examined.append((batch, signature))
            else:
                waiting.append(batch)  # not recorded: looked at again next tick

        run_requests = []
        for batch, signature in examined:
            try:
                changed = batch.changed if batch.changed is not None else latest_change(batch.path)
            except FileNotFoundError:
                continue
            cursor[batch.name] = signature
            # ready, and changed since it was last ingested (by this sensor, the demo or the CLI)
            if _ingested_since(context.instance, inventory, batch.name, changed):
                continue
            inode = signature.split(":", 1)[0]
            run_requests.append(
                # The run key changes when the batch changes (the folder's inode tells apart two
                # landings within the same second), so a re-landed batch runs again.
                dg.RunRequest(
                    partition_key=batch.name,
                    run_key=f"{source}:{batch.name}:{int(changed)}:{inode}",
                    tags={"hdh/landing_source": source, "hdh/batch_ready": batch.reason},
                )
            )
        new = []
        if run_requests:
            known = set(context.instance.get_dynamic_partitions(partitions.name))
            new = [r.partition_key for r in run_requests if r.partition_key not in known]
        if waiting:
            context.log.info(f"{len(waiting)} batch(es) of {source} not complete yet")
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=[partitions.build_add_request(new)] if new else [],
            cursor=json.dumps(cursor, sort_keys=True, separators=(",", ":")),
        )

    return _sensor
