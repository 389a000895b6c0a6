"""pandera (polars) schemas as the one description of a table: its documented columns in the
Dagster catalog, and its asset check."""

from __future__ import annotations

import dagster as dg
import pandera.polars as pa
import polars as pl

Schema = type[pa.DataFrameModel] | pa.DataFrameSchema


def _name(schema: Schema) -> str:
    return getattr(schema, "name", None) or getattr(schema, "__name__", "schema")


def pandera_check(
    schema: Schema,
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
                "schema": _name(schema),
            },
        )
    return dg.AssetCheckResult(
        check_name=check_name,
        asset_key=asset_key,
        passed=True,
        metadata={"schema": _name(schema)},
    )


def column_schema(schema: Schema) -> dg.TableSchema:
    """The documented columns of a pandera schema, for ``dagster/column_schema`` metadata."""
    pandera_schema = schema if isinstance(schema, pa.DataFrameSchema) else schema.to_schema()
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


def documented_columns(columns: dict[str, tuple[str, str]]) -> dg.TableSchema:
    """``{name: (type, description)}`` as a table schema, for tables without a pandera model."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, type_, description=text) for name, (type_, text) in columns.items()
        ]
    )
