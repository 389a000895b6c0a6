"""Releasing a product's materialisation: what the instance knows of it, checked, then frozen.

Shared by ``hdh products release``, the demo and GDPR processing (which re-issues the releases
holding an erased person); each passes the asset graph it already has.
"""

from __future__ import annotations

import datetime as dt
import getpass

import dagster as dg

from hdh_assets.products.releases import Release, ReleaseError, ReleaseStore
from resources.home import HdhHome


def check_outcome(record) -> str:
    """passed, warned, failed or not_run, from an asset check execution record."""
    if record is None or record.status.value == "PLANNED":
        return "not_run"
    evaluation = record.evaluation
    if evaluation is None:
        return "failed"  # the check's execution itself failed
    if not hasattr(evaluation, "passed"):
        return "not_run"  # planned, then skipped (its asset's step failed)
    if evaluation.passed:
        return "passed"
    return "warned" if evaluation.severity == dg.AssetCheckSeverity.WARN else "failed"


def _when(event) -> str:
    return dt.datetime.fromtimestamp(event.timestamp, dt.UTC).isoformat(timespec="seconds")


def _ancestors(graph, key: dg.AssetKey) -> set[dg.AssetKey]:
    seen: set[dg.AssetKey] = set()
    stack = list(graph.get(key).parent_keys)
    while stack:
        parent = stack.pop()
        if parent not in seen:
            seen.add(parent)
            stack.extend(graph.get(parent).parent_keys)
    return seen


def release_manifest(graph, instance: dg.DagsterInstance, key: dg.AssetKey) -> dict:
    """What the instance knows of the product's materialisation: refuses an unreleasable one."""
    from hdh_assets.products.assets import GROUP  # here: hdh status imports check_outcome only

    if not graph.has(key) or graph.get(key).group_name != GROUP:
        raise ReleaseError(f"{key.to_user_string()} is not a data product (group '{GROUP}')")
    node = graph.get(key)
    latest = instance.get_latest_materialization_event(key)
    if latest is None:
        raise ReleaseError(f"{key.to_user_string()} was never materialised")
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        list(node.check_keys)
    )
    checks = {}
    for check_key in sorted(node.check_keys, key=lambda c: c.name):
        record = records.get(check_key)
        evaluation = record.evaluation if record else None
        metadata = getattr(evaluation, "metadata", None) or {}  # a planned check has none
        checks[check_key.name] = {
            "outcome": check_outcome(record),
            "run_id": record.run_id if record else None,
            "failing_rows": metadata["failing_rows"].value if "failing_rows" in metadata else None,
        }
    refused = sorted(n for n, c in checks.items() if c["outcome"] in {"failed", "not_run"})
    if refused:
        raise ReleaseError(
            f"{key.to_user_string()} cannot be released: checks failed or not run: "
            f"{', '.join(refused)}; fix and re-materialise first"
        )
    lineage = []
    for ancestor in sorted(_ancestors(graph, key), key=lambda k: k.to_user_string()):
        event = instance.get_latest_materialization_event(ancestor)
        lineage.append(
            {
                "asset": ancestor.to_user_string(),
                "code_version": graph.get(ancestor).code_version,
                "materialized_at": _when(event) if event else None,
                "run_id": event.run_id if event else None,
            }
        )
    metadata = {k: getattr(v, "value", v) for k, v in node.metadata.items()}
    partitions = None
    if node.partitions_def is not None:
        partitions = sorted(instance.get_materialized_partitions(key))
    return {
        "asset": key.to_user_string(),
        "description": node.description,
        "owners": list(node.owners),
        "code_version": node.code_version,
        "engine": metadata.get("engine"),
        "model_file": metadata.get("model_file"),
        "subject_column": metadata.get("subject_column"),
        "aggregate_only": bool(metadata.get("aggregate_only")),
        "min_cell_size": metadata.get("min_cell_size"),
        "materialization": {"run_id": latest.run_id, "at": _when(latest)},
        "partitions": partitions,
        "checks": checks,
        "lineage": lineage,
    }


def declared_release(graph, key: dg.AssetKey) -> str | None:
    value = graph.get(key).metadata.get("release")
    return getattr(value, "value", value)


def release_product(
    home: HdhHome,
    graph,
    instance: dg.DagsterInstance,
    product: str,
    version: str | None = None,
    extra: dict | None = None,
) -> Release:
    key = dg.AssetKey(["products", product])
    manifest = {**release_manifest(graph, instance, key), **(extra or {})}
    version = version or declared_release(graph, key)
    if not version:
        raise ReleaseError(f"{key.to_user_string()} declares no release version: give VERSION")
    manifest["released_by"] = getpass.getuser()
    release = ReleaseStore(home.releases).create(
        product, version, home.lake.joinpath(*key.path), manifest
    )
    instance.report_runless_asset_event(
        dg.AssetObservation(
            asset_key=key,
            metadata={
                "release": version,
                "release_path": dg.MetadataValue.path(str(release.path)),
                "release_rows": release.manifest["rows"],
            },
        )
    )
    return release
