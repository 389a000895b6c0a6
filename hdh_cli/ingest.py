"""``hdh ingest``: land a folder or archive as a batch, ingest it now, report what happened."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dagster as dg

from hdh_assets.landing.batches import PROVIDER_MARKER, landing_batch
from hdh_assets.landing.partitions import BATCH_PARTITIONS
from hdh_cli.runs import RunOutcome, materialize_selection
from resources.home import HdhHome

_BATCH_NAME = re.compile(r"[^A-Za-z0-9._-]+")
# What spans every batch, refreshed once batches are in (the daemon does it with automation),
# in dependency order. READS_THE_LAKE: built from whatever the lake holds, always ready.
READS_THE_LAKE = {"gdpr/subject_index"}
ACROSS_BATCHES = (
    "imaging/dicom_series",
    "imaging/dicom_studies",
    "products/imaging_clinical_linkage",
    "gdpr/subject_index",
)


def across_batches_selection(instance: dg.DagsterInstance) -> str | None:
    """The assets of ACROSS_BATCHES whose inputs exist (or will, earlier in the same run)."""
    from hdh_assets.definitions import build_definitions

    graph = build_definitions().resolve_asset_graph()
    ready: list[str] = []
    for name in ACROSS_BATCHES:
        key = dg.AssetKey.from_user_string(name)
        parents = graph.get(key).parent_keys
        if name in READS_THE_LAKE or all(
            p.to_user_string() in ready or instance.get_latest_materialization_event(p)
            for p in parents
        ):
            ready.append(name)
    return " or ".join(f'key:"{name}"' for name in ready) or None


def across_keys(selection: str | None) -> list[dg.AssetKey]:
    """The keys an ``across_batches_selection`` names."""
    if not selection:
        return []
    return [
        dg.AssetKey.from_user_string(name)
        for name in ACROSS_BATCHES
        if f'key:"{name}"' in selection
    ]


def default_batch_name(path: Path) -> str:
    name = path.name
    for suffix in (".tar.gz", ".tgz", ".zip", ".tar"):
        name = name.removesuffix(suffix)
    return _BATCH_NAME.sub("-", name).strip("-.") or "batch"


def land(path: Path, source_root: Path, batch: str, provider: str | None = None) -> Path:
    """Copy ``path`` (a folder, or one archive or file) into ``source_root/batch`` atomically;
    a provider is recorded in the batch's ``_PROVIDER`` marker, so reruns keep it."""
    if not path.exists():
        raise FileNotFoundError(f"nothing to land at {path}")
    with landing_batch(source_root, batch) as folder:
        if path.is_dir():
            shutil.copytree(path, folder, dirs_exist_ok=True)
        else:
            shutil.copy2(path, folder / path.name)
        if provider:
            (folder / PROVIDER_MARKER).write_text(provider + "\n", encoding="utf-8")
    return source_root / batch


def batch_selection(source: str, assets) -> str:
    """Everything a source's batch feeds, as a selection (the landing job's assets)."""
    keys = [k for a in assets if a.partitions_def == BATCH_PARTITIONS[source] for k in a.keys]
    return " or ".join(f'key:"{k.to_user_string()}"' for k in keys)


def _land_and_run(
    home: HdhHome,
    instance: dg.DagsterInstance,
    source: str,
    path: Path,
    batch: str | None,
    tags: dict[str, str] | None = None,
) -> tuple[str, list[RunOutcome]]:
    """Land, register the partition, run what the batch feeds, then what spans every batch."""
    from hdh_assets.definitions import ALL_ASSETS

    batch = batch or default_batch_name(path)
    land(path, home.landing_for(source), batch, (tags or {}).get("hdh/provider"))
    instance.add_dynamic_partitions(BATCH_PARTITIONS[source].name, [batch])
    selection = batch_selection(source, ALL_ASSETS)
    runs = [materialize_selection(home, instance, selection, partition=batch, tags=tags)]
    across = across_batches_selection(instance) if runs[0].success else None
    if across:
        runs.append(materialize_selection(home, instance, across))
    return batch, runs


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

    batch, runs = _land_and_run(home, instance, "dicom", path, batch)
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
    batch, runs = _land_and_run(home, instance, "json", path, batch, tags)
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
    }
