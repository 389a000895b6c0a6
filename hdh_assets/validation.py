"""pandera (polars) schemas as the one description of a table: its documented columns in the
Dagster catalog, and its asset check."""

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


def column_schema(schema: type[pa.DataFrameModel]) -> dg.TableSchema:
    """The documented columns of a pandera model, for ``dagster/column_schema`` metadata."""
    pandera_schema = schema.to_schema()
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=name,
                type=str(column.dtype),
                description=column.description,
                constraints=dg.TableColumnConstraints(
                    nullable=column.nullable, unique=column.unique
                ),
            )
            for name, column in pandera_schema.columns.items()
        ]
    )
