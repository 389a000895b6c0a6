"""What the platform holds: per asset, rows in the lake, partitions, last run, check results."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

import dagster as dg

from hdh_assets.products.publishing import check_outcome
from hdh_cli.catalog import AssetCatalog
from resources.home import HdhHome
from resources.lake.metadata import parquet_rows
from resources.lake.tables import Lake


@dataclass
class AssetStatus:
    asset: str
    group: str
    rows: int
    partitions_materialized: int | None
    partitions_total: int | None
    last_materialization: str | None
    checks_passed: list[str] = field(default_factory=list)
    checks_failed: list[str] = field(default_factory=list)
    checks_warned: list[str] = field(default_factory=list)
    checks_not_run: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class PlatformStatus:
    home: str
    assets: list[AssetStatus]
    quarantined_files: int

    def to_json(self) -> dict:
        return {
            "home": self.home,
            "quarantined_files": self.quarantined_files,
            "assets": [a.to_json() for a in self.assets],
        }

    @property
    def failing_checks(self) -> list[str]:
        return [f"{a.asset}:{c}" for a in self.assets for c in a.checks_failed]


def count_files(folder) -> int:
    """Quarantined originals (the operators' ``.json`` notes beside them are not counted)."""
    if not folder.exists():
        return 0
    return sum(1 for p in folder.rglob("*") if p.is_file() and p.suffix != ".json")


def collect_status(
    defs: dg.Definitions, instance: dg.DagsterInstance, home: HdhHome
) -> PlatformStatus:
    """The status of a loaded code location (the demo has it loaded already)."""
    return catalog_status(AssetCatalog.from_definitions(defs), instance, home)


def catalog_status(
    catalog: AssetCatalog, instance: dg.DagsterInstance, home: HdhHome
) -> PlatformStatus:
    """Per materialisable asset of the catalog: rows in the lake, partitions, last run, checks.

    The latest materialisations and check executions are read in one query each (SQLite opens a
    connection per query): what a read-only command needs, without a query per asset.
    """
    lake = Lake(home.lake)
    assets = [a for a in catalog.assets if a.materializable]
    keys = {a.name: dg.AssetKey(list(a.path)) for a in assets}
    storage = instance.event_log_storage
    latest_events = storage.get_latest_materialization_events(list(keys.values()))
    check_keys = [dg.AssetCheckKey(keys[a.name], name) for a in assets for name in a.checks]
    check_records = storage.get_latest_asset_check_execution_by_key(check_keys)
    partition_counts: dict[str, int] = {}  # assets sharing a partitioning share its keys
    statuses = []
    for asset in assets:
        key = keys[asset.name]
        latest = latest_events.get(key)
        partitions_def = asset.partitions_def()
        materialized = total = None
        if partitions_def is not None:
            materialized = len(instance.get_materialized_partitions(key))
            if asset.partitions not in partition_counts:
                partition_counts[asset.partitions] = len(
                    partitions_def.get_partition_keys(dynamic_partitions_store=instance)
                )
            total = partition_counts[asset.partitions]
        status = AssetStatus(
            asset=asset.name,
            group=asset.group,
            rows=parquet_rows(lake.table(asset.path).parquet_files()),
            partitions_materialized=materialized,
            partitions_total=total,
            last_materialization=(
                dt.datetime.fromtimestamp(latest.timestamp, dt.UTC).isoformat(timespec="seconds")
                if latest
                else None
            ),
        )
        for name in asset.checks:
            outcome = check_outcome(check_records.get(dg.AssetCheckKey(key, name)))
            getattr(status, f"checks_{outcome}").append(name)
        statuses.append(status)
    return PlatformStatus(str(home.root), statuses, count_files(home.quarantine))
