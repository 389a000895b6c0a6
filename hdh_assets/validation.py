"""pandera (polars) schemas as the one description of a table: its documented columns in the
Dagster catalog, and its asset check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


SPARK_TYPES = {
    pl.Int64: "bigint",
    pl.Int32: "int",
    pl.String: "string",
    pl.Date: "date",
    pl.Float64: "double",
    pl.Boolean: "boolean",
}


def _spark_violation(column, check: pa.Check):
    """A Spark predicate true on the rows that break one pandera check."""
    stats = check.statistics or {}
    if check.name == "str_matches":
        pattern = stats["pattern"]
        return ~column.rlike(getattr(pattern, "pattern", pattern))
    if check.name == "isin":
        return ~column.isin(list(stats["allowed_values"]))
    if check.name == "greater_than_or_equal_to":
        return column < stats["min_value"]
    raise NotImplementedError(f"pandera check '{check.name}' has no Spark translation yet")


@dataclass(frozen=True)
class SparkSchemaCheck:
    """A pandera model checked in Spark: the column and type comparison (known from the frame's
    schema, no data read) and the value rules as aggregations, which a caller may compute in the
    same pass as its own (a billion rows are then read once, not twice)."""

    schema: Schema
    structural_failures: tuple[dict, ...]
    rules: tuple[tuple[str, str, Any], ...]  # (column, check, Spark predicate of the bad rows)

    def aggregations(self) -> list[Any]:
        from pyspark.sql import functions as F

        return [
            F.sum(F.when(bad, 1).otherwise(0)).alias(f"_rule_{i}")
            for i, (_, _, bad) in enumerate(self.rules)
        ]

    def result(
        self, row: Any, check_name: str, asset_key: dg.AssetKey | None = None
    ) -> dg.AssetCheckResult:
        """The check's result from a collected row holding :meth:`aggregations`."""
        failing = list(self.structural_failures)
        for i, (name, check, _) in enumerate(self.rules):
            count = int(row[f"_rule_{i}"] or 0)
            if count:
                failing.append({"column": name, "check": check, "rows": count})
        metadata = {"schema": _name(self.schema), "engine": "spark"}
        if failing:
            metadata["failing_checks"] = dg.MetadataValue.json(failing)
        return dg.AssetCheckResult(
            check_name=check_name, asset_key=asset_key, passed=not failing, metadata=metadata
        )


def spark_schema_check(schema: Schema, frame) -> SparkSchemaCheck:
    """The same pandera model, for a Spark frame: exact columns and types (strict), nullability,
    and the value checks. Failures are reported by column and check, never by value."""
    from pyspark.sql import functions as F

    pandera_schema = schema if isinstance(schema, pa.DataFrameSchema) else schema.to_schema()
    failing: list[dict] = []
    actual = {f.name: f.dataType.simpleString() for f in frame.schema.fields}
    for name, column in pandera_schema.columns.items():
        expected = next((v for k, v in SPARK_TYPES.items() if column.dtype.type == k), None)
        if name not in actual:
            failing.append({"column": name, "check": "column_in_dataframe", "rows": None})
        elif expected and actual[name] != expected:
            failing.append({"column": name, "check": f"dtype('{expected}')", "rows": None})
    extra = sorted(set(actual) - set(pandera_schema.columns))
    failing += [{"column": c, "check": "column_in_schema", "rows": None} for c in extra]
    rules = []
    for name, column in pandera_schema.columns.items():
        if name not in actual:
            continue
        col = F.col(name)
        if not column.nullable:
            rules.append((name, "not_nullable", col.isNull()))
        rules += [(name, c.name, _spark_violation(col, c) & col.isNotNull()) for c in column.checks]
    return SparkSchemaCheck(schema, tuple(failing), tuple(rules))


def spark_pandera_check(
    schema: Schema, frame, check_name: str, asset_key: dg.AssetKey | None = None
) -> dg.AssetCheckResult:
    """:func:`spark_schema_check` counted in one pass of its own."""
    check = spark_schema_check(schema, frame)
    aggregations = check.aggregations()
    row = frame.agg(*aggregations).collect()[0] if aggregations else {}
    return check.result(row, check_name, asset_key)
