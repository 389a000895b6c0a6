"""polars and Spark over the same lake files, through the IO manager."""

import datetime as dt

import dagster as dg
import polars as pl
import pytest
from dagster_pyspark import PySparkResource
from polars.testing import assert_frame_equal
from pyspark.sql import DataFrame as SparkDataFrame

from resources.lake import LakeIOManager

pytestmark = pytest.mark.spark

FRAME = pl.DataFrame(
    {
        "subject": ["a" * 32, "b" * 32, "c" * 32, "d" * 32],
        "day": [dt.date(2024, 1, 1), dt.date(2024, 1, 2), None, dt.date(2024, 2, 29)],
        "amount": [1.5, None, 3.25, 0.0],
        "count": [1, 2, 3, 4],
        "flag": [True, False, None, True],
    }
)
MONTHS = dg.StaticPartitionsDefinition(["2024-01-01", "2024-02-01"])


def _spark_to_polars(frame: SparkDataFrame) -> pl.DataFrame:
    return pl.from_arrow(frame.toArrow())


def _materialize(assets, lake_root, spark_session, **kwargs):
    return dg.materialize(
        assets,
        resources={
            "io_manager": LakeIOManager(base_path=str(lake_root)),
            "pyspark": PySparkResource(
                spark_config={"spark.master": spark_session.conf.get("spark.master")}
            ),
        },
        instance=dg.DagsterInstance.ephemeral(),
        **kwargs,
    )


def test_polars_write_then_spark_read_gives_equal_frames(tmp_path, spark):
    @dg.asset
    def written_by_polars() -> pl.DataFrame:
        return FRAME

    seen = {}

    @dg.asset(ins={"upstream": dg.AssetIn(key="written_by_polars")})
    def read_by_spark(upstream: SparkDataFrame) -> SparkDataFrame:
        seen["frame"] = _spark_to_polars(upstream.orderBy("count"))
        return upstream.where("count > 1")

    @dg.asset(ins={"upstream": dg.AssetIn(key="read_by_spark")})
    def back_to_polars(upstream: pl.DataFrame) -> pl.DataFrame:
        return upstream

    result = _materialize([written_by_polars, read_by_spark, back_to_polars], tmp_path, spark)
    assert result.success
    assert_frame_equal(seen["frame"], FRAME, check_dtypes=False)
    assert_frame_equal(
        result.output_for_node("back_to_polars").sort("count"),
        FRAME.filter(pl.col("count") > 1),
        check_dtypes=False,
    )
    metadata = result.asset_materializations_for_node("read_by_spark")[0].metadata
    assert metadata["dagster/row_count"].value == 3  # counted from the files Spark wrote


def test_spark_partitions_and_ranges_are_readable_by_polars(tmp_path, spark):
    @dg.asset(
        partitions_def=MONTHS,
        metadata={"partition_column": "month"},
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def monthly(context: dg.AssetExecutionContext, pyspark: PySparkResource) -> SparkDataFrame:
        frame = pyspark.spark_session.createDataFrame(FRAME.to_arrow())
        from pyspark.sql import functions as F

        return frame.withColumn(
            "month",
            F.date_format(
                F.trunc(F.coalesce("day", F.lit("2024-01-01").cast("date")), "month"), "yyyy-MM-dd"
            ),
        )

    result = _materialize(
        [monthly],
        tmp_path,
        spark,
        tags={
            "dagster/asset_partition_range_start": "2024-01-01",
            "dagster/asset_partition_range_end": "2024-02-01",
        },
    )
    assert result.success
    january = pl.read_parquet(tmp_path / "monthly" / "month=2024-01-01" / "*.parquet")
    february = pl.read_parquet(tmp_path / "monthly" / "month=2024-02-01" / "*.parquet")
    assert sorted(january["count"].to_list()) == [1, 2, 3]
    assert february["count"].to_list() == [4]

    # Spark reads the whole table back with the partition as a string column.
    from upath import UPath

    from resources.lake.frames import read_spark

    table = UPath(tmp_path / "monthly")
    both = read_spark(
        table,
        [
            (table / "month=2024-01-01", {"month": "2024-01-01"}),
            (table / "month=2024-02-01", {"month": "2024-02-01"}),
        ],
    )
    assert dict(both.dtypes)["month"] == "string"
    assert both.count() == 4
