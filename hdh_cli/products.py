"""Data products from the command line: what to run, and releasing a materialisation."""

from __future__ import annotations

import getpass
from dataclasses import dataclass

import dagster as dg

from hdh_assets.products.assets import GROUP
from hdh_assets.products.releases import Release, ReleaseError, ReleaseStore
from hdh_cli.status import _check_outcome
from resources.home import HdhHome


@dataclass(frozen=True)
class ProductSelections:
    """Product runs in order: partitioned products per partitioning (one range run each), then
    the unpartitioned ones."""

    partitioned: list[tuple[dg.PartitionsDefinition, str]]
    unpartitioned: str | None


def _selection(keys: list[dg.AssetKey]) -> str:
    return " or ".join(f'key:"{k.to_user_string()}"' for k in keys)


def product_selections(graph, exclude: set[dg.AssetKey] = frozenset()) -> ProductSelections:
    keys = sorted(
        (
            k
            for k in graph.get_all_asset_keys()
            if graph.get(k).group_name == GROUP and k not in exclude
        ),
        key=lambda k: k.to_user_string(),
    )
    by_partitions: dict[dg.PartitionsDefinition, list[dg.AssetKey]] = {}
    plain = []
    for key in keys:
        partitions = graph.get(key).partitions_def
        if partitions is None:
            plain.append(key)
        else:
            by_partitions.setdefault(partitions, []).append(key)
    return ProductSelections(
        partitioned=[(p, _selection(k)) for p, k in by_partitions.items()],
        unpartitioned=_selection(plain) or None,
    )


def clamp_range(partitions: dg.PartitionsDefinition, keys: tuple[str, str]) -> tuple[str, str]:
    """The part of a (first, last) key range that exists in ``partitions``."""
    existing = partitions.get_partition_keys()
    inside = [k for k in existing if keys[0] <= k <= keys[1]]
    if not inside:
        raise ValueError(f"no partition of {partitions} between {keys[0]} and {keys[1]}")
    return inside[0], inside[-1]


def _when(event) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(event.timestamp, dt.UTC).isoformat(timespec="seconds")


def release_manifest(defs: dg.Definitions, instance: dg.DagsterInstance, key: dg.AssetKey) -> dict:
    """What the instance knows of the product's materialisation: refuses an unreleasable one."""
    graph = defs.resolve_asset_graph()
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
        outcome = _check_outcome(record)
        evaluation = record.evaluation if record else None
        metadata = getattr(evaluation, "metadata", None) or {}  # a planned check has none
        checks[check_key.name] = {
            "outcome": outcome,
            "run_id": record.run_id if record else None,
            "failing_rows": metadata["failing_rows"].value if "failing_rows" in metadata else None,
        }
    refused = sorted(n for n, c in checks.items() if c["outcome"] in {"failed", "not_run"})
    if refused:
        raise ReleaseError(
            f"{key.to_user_string()} cannot be released: checks failed or not run: "
            f"{', '.join(refused)}; fix and re-materialise first"
        )
    ancestors = sorted(_ancestors(graph, key), key=lambda k: k.to_user_string())
    lineage = []
    for ancestor in ancestors:
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


def _ancestors(graph, key: dg.AssetKey) -> set[dg.AssetKey]:
    seen: set[dg.AssetKey] = set()
    stack = list(graph.get(key).parent_keys)
    while stack:
        parent = stack.pop()
        if parent not in seen:
            seen.add(parent)
            stack.extend(graph.get(parent).parent_keys)
    return seen


def declared_release(defs: dg.Definitions, key: dg.AssetKey) -> str | None:
    node = defs.resolve_asset_graph().get(key)
    value = node.metadata.get("release")
    return getattr(value, "value", value)


def release_product(
    home: HdhHome,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    product: str,
    version: str | None = None,
    extra: dict | None = None,
) -> Release:
    key = dg.AssetKey(["products", product])
    manifest = {**release_manifest(defs, instance, key), **(extra or {})}
    version = version or declared_release(defs, key)
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
