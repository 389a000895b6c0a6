"""In-process materialisation against the platform's own instance, shared by CLI and demo."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from hdh_assets.definitions import ALL_ASSETS, PROOF_CHECKS, build_resources
from resources.home import HdhHome


@dataclass
class RunOutcome:
    selection: str
    partition: str | None
    run_id: str
    success: bool
    materializations: int
    checks_failed: list[str]

    def to_json(self) -> dict:
        return self.__dict__.copy()


def materialize_selection(
    home: HdhHome,
    instance: dg.DagsterInstance,
    selection: str,
    partition: str | None = None,
    partition_range: tuple[str, str] | None = None,
    log_level: str = "WARNING",
    tags: dict[str, str] | None = None,
) -> RunOutcome:
    """Run ``selection`` (Dagster selection syntax, e.g. ``key:claims/events`` or ``group:imaging``)."""
    tags = {"hdh/launched_by": "hdh-cli", **(tags or {})}
    if partition_range:
        tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG] = partition_range
    result = dg.materialize(
        [*ALL_ASSETS, *PROOF_CHECKS],
        selection=dg.AssetSelection.from_string(selection),
        resources=build_resources(home),
        instance=instance,
        partition_key=partition,
        tags=tags,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
    )
    failed_checks = [
        f"{e.asset_key.to_user_string()}:{e.check_name}"
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    ]
    label = partition or (
        f"{partition_range[0]}..{partition_range[1]}" if partition_range else None
    )
    return RunOutcome(
        selection=selection,
        partition=label,
        run_id=result.run_id,
        success=result.success,
        materializations=len(result.get_asset_materialization_events()),
        checks_failed=failed_checks,
    )
