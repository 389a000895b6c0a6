"""``hdh ingest``: land a folder or archive as a batch, ingest it and what follows it (the
runs the daemon would launch), report what happened."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from hdh_assets.automation import claims_month_requests
from hdh_assets.gdpr.steps import ACTIVE
from hdh_assets.landing.intake import default_batch_name, land
from hdh_assets.landing.partitions import BATCH_PARTITIONS
from hdh_cli.runs import Followed, RunOutcome, daemon_running, execute, follow, wait_for
from resources.home import HdhHome

LANDING_SOURCE_TAG = "hdh/landing_source"


def batch_request(source: str, batch: str, graph, tags: dict[str, str] | None = None):
    """What the source's landing sensor launches for a ready batch: every asset partitioned by
    the source's batches, for this batch."""
    partitions = BATCH_PARTITIONS[source]
    keys = [k for k in graph.get_all_asset_keys() if graph.get(k).partitions_def == partitions]
    return dg.RunRequest(
        asset_selection=sorted(keys, key=lambda k: k.to_user_string()),
        partition_key=batch,
        tags={LANDING_SOURCE_TAG: source, **(tags or {})},
    )


def ingest_batches(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    home: HdhHome,
    batches: list[tuple[str, str]],
    tags: dict[str, str] | None = None,
    on_run: Callable[[RunOutcome], None] = lambda outcome: None,
) -> tuple[list[RunOutcome], Followed]:
    """Ingest registered (source, batch) pairs here, then what the daemon would launch after
    them: the claims months they touch and whatever the automation conditions request."""
    from hdh_assets.claims.assets import EVENTS_KEY, MONTHS, landed_claims_files
    from resources.pseudonymisation import PseudonymisationKeyResource

    graph = defs.resolve_asset_graph()
    before = follow(defs, instance, None, on_run)  # the conditions' state before our runs
    claims_seen = _latest_storage_id(instance, landed_claims_files.key)
    runs = []
    for source, batch in batches:
        runs.append(execute(defs, instance, batch_request(source, batch, graph, tags)))
        on_run(runs[-1])
    months, _ = claims_month_requests(
        instance,
        landed_claims_files.key,
        EVENTS_KEY,
        MONTHS,
        home.landing_for("claims"),
        PseudonymisationKeyResource().max_date_shift_days,
        claims_seen,
    )
    for request in months:
        runs.append(execute(defs, instance, request))
        on_run(runs[-1])
    followed = follow(defs, instance, before.cursor, on_run)
    followed.runs[:0] = before.runs
    return runs, followed


def _latest_storage_id(instance: dg.DagsterInstance, key: dg.AssetKey) -> int:
    records = instance.fetch_materializations(key, limit=1).records
    return records[0].storage_id if records else 0


def _land_and_run(
    home: HdhHome,
    instance: dg.DagsterInstance,
    source: str,
    path: Path,
    batch: str | None,
    tags: dict[str, str] | None = None,
) -> tuple[str, list[RunOutcome], list[dict]]:
    """Land and register the batch, then run it and what follows it: through the daemon when
    one runs (its landing sensor takes the batch), here otherwise. Also returns what each
    evaluation of the automation conditions requested (here only)."""
    batch = batch or default_batch_name(path)
    land(path, home.landing_for(source), batch, (tags or {}).get("hdh/provider"))
    instance.add_dynamic_partitions(BATCH_PARTITIONS[source].name, [batch])
    if daemon_running(instance):
        landed_at = time.time()
        return batch, _wait_for_daemon(instance, source, batch, landed_at), []
    from hdh_assets.definitions import build_definitions

    runs, followed = ingest_batches(
        build_definitions(home), instance, home, [(source, batch)], tags
    )
    return batch, runs + followed.runs, followed.requested


def _wait_for_daemon(
    instance: dg.DagsterInstance, source: str, batch: str, landed_at: float, timeout: float = 1800
) -> list[RunOutcome]:
    """The landing sensor ingests the batch; wait for its run (one created after the batch was
    landed), then for the queue to empty."""
    active = list(ACTIVE)

    def landing_runs(statuses=None):
        filters = dg.RunsFilter(
            tags={LANDING_SOURCE_TAG: source, "dagster/partition": batch},
            statuses=statuses,
            created_after=dt.datetime.fromtimestamp(landed_at, dt.UTC),
        )
        return instance.get_runs(filters=filters)

    wait_for(lambda: landing_runs() and not landing_runs(active), timeout)
    wait_for(lambda: not instance.get_runs(filters=dg.RunsFilter(statuses=active)), timeout)
    return [
        RunOutcome(
            selection=f"ingest_{source}_batch",
            partition=batch,
            run_id=run.run_id,
            success=run.status is dg.DagsterRunStatus.SUCCESS,
            materializations=0,
            checks_failed=[],
        )
        for run in landing_runs()[:1]
    ]


def _latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return {}
    metadata = records[0].asset_materialization.metadata
    return {name: getattr(item, "value", item) for name, item in metadata.items()}


def ingest_dicom(
    home: HdhHome, instance: dg.DagsterInstance, path: Path, batch: str | None
) -> dict:
    from hdh_assets.imaging.assets import INSTANCES

    batch, runs, requested = _land_and_run(home, instance, "dicom", path, batch)
    value = _latest_metadata(instance, INSTANCES, batch)
    counts = (
        "landed",
        "ingested",
        "duplicates",
        "quarantined",
        "excluded_by_request",
        "studies",
        "series",
    )
    return {
        "batch": batch,
        "success": all(r.success for r in runs),
        **{name: value.get(name) for name in counts},
        "quarantined_by_reason": value.get("quarantined_by_reason") or {},
        "runs": [r.to_json() for r in runs],
        "automation": requested,
    }


def ingest_json(
    home: HdhHome,
    instance: dg.DagsterInstance,
    path: Path,
    batch: str | None,
    provider: str | None,
) -> dict:
    from hdh_assets.clinical.assets import QUARANTINE_KEY, clinical_key
    from hdh_assets.clinical.providers import provider_named

    provider_named(provider)  # an unknown provider is refused before anything is landed
    tags = {"hdh/provider": provider} if provider else None
    batch, runs, requested = _land_and_run(home, instance, "json", path, batch, tags)
    value = _latest_metadata(instance, clinical_key("patients"), batch)
    quarantine = _latest_metadata(instance, QUARANTINE_KEY, batch)
    counts = ("records_in", "ingested", "newer_versions", "duplicates", "quarantined")
    return {
        "batch": batch,
        "provider": value.get("provider"),
        "success": all(r.success for r in runs),
        "files": value.get("landed_files"),
        **{name: value.get(name) for name in counts},
        "quarantined_by_reason": quarantine.get("by_reason") or {},
        "rows_by_table": value.get("rows_by_table") or {},
        "runs": [r.to_json() for r in runs],
        "automation": requested,
    }
