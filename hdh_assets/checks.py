"""Asset-check helpers shared by every domain: pandera (polars) schemas as check results."""

from __future__ import annotations

import dagster as dg
import pandera.polars as pa
import polars as pl


def pandera_check(
    schema: type[pa.DataFrameModel],
    frame: pl.DataFrame | pl.LazyFrame,
    check_name: str,
    asset_key: dg.AssetKey | None = None,
) -> dg.AssetCheckResult:
    """Validate ``frame``; failures are reported by column and check, never by value."""
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        summary = (
            cases.group_by("column", "check").len().sort("column", "check")
            if isinstance(cases, pl.DataFrame)
            else pl.DataFrame()
        )
        return dg.AssetCheckResult(
            check_name=check_name,
            asset_key=asset_key,
            passed=False,
            metadata={
                "failing_checks": dg.MetadataValue.json(
                    [{"column": c, "check": k, "rows": n} for c, k, n in summary.iter_rows()]
                ),
                "schema": schema.__name__,
            },
        )
    return dg.AssetCheckResult(
        check_name=check_name,
        asset_key=asset_key,
        passed=True,
        metadata={"schema": schema.__name__},
    )
