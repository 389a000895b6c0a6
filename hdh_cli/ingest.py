"""``hdh ingest``: land a folder or archive as a batch, ingest it now, report what happened."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dagster as dg

from hdh_assets.landing.batches import landing_batch
from hdh_assets.landing.partitions import BATCH_PARTITIONS
from hdh_cli.runs import RunOutcome, materialize_selection
from resources.home import HdhHome

_BATCH_NAME = re.compile(r"[^A-Za-z0-9._-]+")
# What spans every batch, refreshed once batches are in (the daemon does it with automation).
ACROSS_BATCHES = (
    'key:"imaging/dicom_series" or key:"imaging/dicom_studies" or key:"gdpr/subject_index"'
)


def default_batch_name(path: Path) -> str:
    name = path.name
    for suffix in (".tar.gz", ".tgz", ".zip", ".tar"):
        name = name.removesuffix(suffix)
    return _BATCH_NAME.sub("-", name).strip("-.") or "batch"


def land(path: Path, source_root: Path, batch: str) -> Path:
    """Copy ``path`` (a folder, or one archive or file) into ``source_root/batch`` atomically."""
    if not path.exists():
        raise FileNotFoundError(f"nothing to land at {path}")
    with landing_batch(source_root, batch) as folder:
        if path.is_dir():
            shutil.copytree(path, folder, dirs_exist_ok=True)
        else:
            shutil.copy2(path, folder / path.name)
    return source_root / batch


def batch_selection(source: str, assets) -> str:
    """Everything a source's batch feeds, as a selection (the landing job's assets)."""
    keys = [k for a in assets if a.partitions_def == BATCH_PARTITIONS[source] for k in a.keys]
    return " or ".join(f'key:"{k.to_user_string()}"' for k in keys)


def ingest_dicom(
    home: HdhHome, instance: dg.DagsterInstance, path: Path, batch: str | None
) -> dict:
    from hdh_assets.definitions import ALL_ASSETS
    from hdh_assets.imaging.assets import INSTANCES

    batch = batch or default_batch_name(path)
    land(path, home.landing_for("dicom"), batch)
    instance.add_dynamic_partitions(BATCH_PARTITIONS["dicom"].name, [batch])
    runs: list[RunOutcome] = [
        materialize_selection(
            home, instance, batch_selection("dicom", ALL_ASSETS), partition=batch
        ),
    ]
    if runs[0].success:
        runs.append(
            materialize_selection(
                home,
                instance,
                'key:"imaging/dicom_series" or key:"imaging/dicom_studies" or key:"gdpr/subject_index"',
            )
        )
    event = instance.get_latest_materialization_event(INSTANCES)
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}

    def value(name: str):
        item = metadata.get(name)
        return getattr(item, "value", item)

    return {
        "batch": batch,
        "success": all(r.success for r in runs),
        "landed": value("landed"),
        "ingested": value("ingested"),
        "duplicates": value("duplicates"),
        "quarantined": value("quarantined"),
        "quarantined_by_reason": value("quarantined_by_reason") or {},
        "studies": value("studies"),
        "series": value("series"),
        "runs": [r.to_json() for r in runs],
    }
