"""Writing and reading the frame types the lake accepts: polars (eager or lazy) and Spark.

Spark is imported lazily: most runs never start a JVM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl
from upath import UPath

PART_FILE = "part-00000.parquet"


def is_spark_frame(obj: Any) -> bool:
    module = type(obj).__module__
    return module.startswith("pyspark.sql") and type(obj).__name__ == "DataFrame"


def is_spark_type(annotation: Any) -> bool:
    module = getattr(annotation, "__module__", "") or ""
    return module.startswith("pyspark.sql") and getattr(annotation, "__name__", "") == "DataFrame"


def columns_of(obj: Any) -> list[str]:
    if isinstance(obj, pl.LazyFrame):
        return obj.collect_schema().names()
    return list(obj.columns)


def write_frame(obj: Any, folder: UPath) -> None:
    """Write a whole frame as Parquet into an existing, empty staging folder."""
    if isinstance(obj, pl.DataFrame):
        obj.write_parquet(str(folder / PART_FILE), statistics=True)
    elif isinstance(obj, pl.LazyFrame):
        obj.sink_parquet(str(folder / PART_FILE), statistics=True)
    elif is_spark_frame(obj):
        obj.write.mode("overwrite").parquet(_spark_uri(folder))
    else:
        raise TypeError(
            f"the lake stores polars or Spark DataFrames, not {type(obj).__module__}.{type(obj).__name__}"
        )


def write_spark_partitioned(obj: Any, folder: UPath, column: str) -> None:
    """One Spark job: a hive folder per value of ``column`` under an existing staging folder."""
    obj.write.mode("overwrite").partitionBy(column).parquet(_spark_uri(folder))


def drop_values(obj: Any, column: str, values: frozenset[str]) -> Any:
    """The frame without rows whose ``column`` is one of ``values`` (nulls kept)."""
    listed = sorted(values)
    if isinstance(obj, (pl.DataFrame, pl.LazyFrame)):
        return obj.filter(~pl.col(column).is_in(listed).fill_null(False))
    if is_spark_frame(obj):
        from pyspark.sql import functions as F

        return obj.where(~F.coalesce(F.col(column).isin(listed), F.lit(False)))
    raise TypeError(f"cannot filter {type(obj).__name__}")


def split_by_column(obj: Any, column: str) -> dict[str, Any]:
    """Split a frame that spans several partitions into one frame per value of ``column``."""
    if isinstance(obj, pl.LazyFrame):
        obj = obj.collect(engine="streaming")
    if isinstance(obj, pl.DataFrame):
        return {
            str(key[0]): part.drop(column)
            for key, part in obj.partition_by(column, as_dict=True, maintain_order=True).items()
        }
    if is_spark_frame(obj):
        from pyspark.sql import functions as F

        values = [row[0] for row in obj.select(F.col(column).cast("string")).distinct().collect()]
        return {
            str(value): obj.where(F.col(column).cast("string") == value).drop(column)
            for value in values
        }
    raise TypeError(f"cannot split {type(obj).__name__} by partition")


def empty_like(obj: Any, drop: str) -> Any:
    """A zero-row frame with the same columns, for a partition of a range that had no rows."""
    if isinstance(obj, pl.LazyFrame):
        return obj.drop(drop).limit(0)
    if isinstance(obj, pl.DataFrame):
        return obj.drop(drop).clear()
    return obj.drop(drop).limit(0)


def read_polars(folders: Sequence[tuple[UPath, dict[str, str]]], files_of) -> pl.LazyFrame:
    """Lazily scan folders; each folder's hive values become string columns.

    Folders whose files share one schema are read by one scan (one streaming source: memory
    stays flat over hundreds of partitions); groups with different schemas, such as batches
    where a column was all null, are concatenated with relaxed types.
    """
    groups: dict[tuple, list[tuple[list[str], dict[str, str]]]] = {}
    for folder, hive_values in folders:
        files = [str(f) for f in files_of(folder)]
        if not files:
            continue
        schema = tuple(pl.read_parquet_schema(files[0]).items())
        key = (schema, tuple(sorted(hive_values)))
        groups.setdefault(key, []).append((files, hive_values))
    if not groups:
        raise FileNotFoundError(
            "no Parquet data in " + ", ".join(str(folder) for folder, _ in folders)
        )
    scans = [_scan_group(members) for members in groups.values()]
    return pl.concat(scans, how="vertical_relaxed") if len(scans) > 1 else scans[0]


def _scan_group(members: list[tuple[list[str], dict[str, str]]]) -> pl.LazyFrame:
    hive_columns = sorted(members[0][1])
    if len(members) == 1 or not hive_columns:
        files, hive_values = (
            members[0] if len(members) == 1 else ([f for m in members for f in m[0]], {})
        )
        scan = pl.scan_parquet(files)
        return scan.with_columns(
            pl.lit(v, dtype=pl.String).alias(k) for k, v in hive_values.items()
        )
    files = [f for member_files, _ in members for f in member_files]
    if all(sum("=" in part for part in f.split("/")) == len(hive_columns) for f in files):
        return pl.scan_parquet(
            files, hive_partitioning=True, hive_schema=dict.fromkeys(hive_columns, pl.String)
        )
    # A folder above the lake has '=' in its name: polars would take it for a hive column, so
    # each file's values are joined on its path instead.
    values = {
        column: [hive[column] for member_files, hive in members for _ in member_files]
        for column in hive_columns
    }
    paths = pl.DataFrame({"file": files, **values})
    scan = pl.scan_parquet(files, include_file_paths="__file")
    return scan.join(paths.lazy(), left_on="__file", right_on="file", how="left").drop("__file")


def read_spark(table_path: UPath, folders: Sequence[tuple[UPath, dict[str, str]]]) -> Any:
    from pyspark.sql import functions as F

    from resources.spark import active_session

    spark = active_session()
    paths = [_spark_uri(folder) for folder, _ in folders]
    hive_columns = sorted({k for _, values in folders for k in values})
    reader = spark.read
    if hive_columns:
        reader = reader.option("basePath", _spark_uri(table_path))
    frame = reader.parquet(*paths)
    for column in hive_columns:  # Spark infers dates and numbers; partition keys are strings
        frame = frame.withColumn(column, F.col(column).cast("string"))
    return frame


def _spark_uri(path: UPath) -> str:
    # Local paths go as plain paths: a file URI would escape the '=' of hive folders.
    return path.path if path.protocol in ("", "file", "local") else str(path)
