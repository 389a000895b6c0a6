"""What the platform holds: per asset, rows in the lake, partitions, last run, check results."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

import dagster as dg

from hdh_assets.products.publishing import check_outcome
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
    graph = defs.resolve_asset_graph()
    lake = Lake(home.lake)
    statuses = []
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        if not node.is_materializable:
            continue
        table = lake.table(key.path)
        latest = instance.get_latest_materialization_event(key)
        partitions_def = node.partitions_def
        materialized = total = None
        if partitions_def is not None:
            materialized = len(instance.get_materialized_partitions(key))
            total = len(partitions_def.get_partition_keys(dynamic_partitions_store=instance))
        status = AssetStatus(
            asset=key.to_user_string(),
            group=node.group_name or "default",
            rows=parquet_rows(table.parquet_files()),
            partitions_materialized=materialized,
            partitions_total=total,
            last_materialization=(
                dt.datetime.fromtimestamp(latest.timestamp, dt.UTC).isoformat(timespec="seconds")
                if latest
                else None
            ),
        )
        check_keys = sorted(node.check_keys, key=lambda k: k.name)
        records = instance.event_log_storage.get_latest_asset_check_execution_by_key(check_keys)
        for check_key in check_keys:
            outcome = check_outcome(records.get(check_key))
            getattr(status, f"checks_{outcome}").append(check_key.name)
        statuses.append(status)
    return PlatformStatus(str(home.root), statuses, count_files(home.quarantine))
