"""Where compiled SQL runs: polars' SQLContext over lazy lake scans, or Spark SQL over the same
Parquet files. Both register each upstream under its table name and answer the same calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import polars as pl
from upath import UPath

from hdh_assets.products.compiler import transpile
from resources.lake import frames
from resources.lake.tables import LakeTable

Folders = Sequence[tuple[UPath, dict[str, str]]]


class Engine(Protocol):
    name: str

    def register_lake(self, name: str, table: LakeTable, folders: Folders) -> None: ...

    def run(self, sql: str) -> Any: ...

    def register_result(self, name: str, frame: Any) -> None: ...

    def count(self, sql: str) -> int: ...

    def rows(self, frame: Any) -> int: ...


def _files_or_schema(table: LakeTable, folders: Folders) -> list[UPath]:
    return [f for folder, _ in folders for f in table.parquet_files(folder)]


class PolarsEngine:
    """polars' SQL over lazy scans; the result is collected with the streaming engine."""

    name = "polars"

    def __init__(self) -> None:
        self.context = pl.SQLContext()

    def register_lake(self, name: str, table: LakeTable, folders: Folders) -> None:
        if _files_or_schema(table, folders):
            scan = frames.read_polars(folders, table.parquet_files)
        else:  # no data in the requested partitions: the table's columns, no rows
            scan = _empty_scan(table, folders)
        self.context.register(name, scan)

    def run(self, sql: str) -> pl.DataFrame:
        """``sql`` is already in this engine's dialect (``CompiledModel.sql_for``)."""
        return self.context.execute(sql, eager=False).collect(engine="streaming")

    def register_result(self, name: str, frame: pl.DataFrame) -> None:
        self.context.register(name, frame)

    def count(self, sql: str) -> int:
        return int(self.context.execute(transpile(sql, self.name), eager=True).item())

    def rows(self, frame: pl.DataFrame) -> int:
        return frame.height


class SparkEngine:
    """Spark SQL in the session of ``PySparkResource``; the result is persisted for the checks."""

    name = "spark"

    def __init__(self, spark: Any) -> None:
        self.spark = spark
        self._views: list[str] = []
        self._persisted: list[Any] = []

    def register_lake(self, name: str, table: LakeTable, folders: Folders) -> None:
        present = [(f, v) for f, v in folders if table.parquet_files(f)]
        if present:
            frame = frames.read_spark(table.path, present)
        else:
            frame = self.spark.createDataFrame(_empty_scan(table, folders).collect().to_arrow())
        frame.createOrReplaceTempView(name)
        self._views.append(name)

    def run(self, sql: str) -> Any:
        from pyspark import StorageLevel

        frame = self.spark.sql(sql).persist(StorageLevel.MEMORY_AND_DISK)
        self._persisted.append(frame)
        return frame

    def register_result(self, name: str, frame: Any) -> None:
        frame.createOrReplaceTempView(name)
        self._views.append(name)

    def count(self, sql: str) -> int:
        return int(self.spark.sql(transpile(sql, self.name)).collect()[0][0])

    def rows(self, frame: Any) -> int:
        return frame.count()

    def close(self) -> None:
        for frame in self._persisted:
            frame.unpersist()
        for view in self._views:
            self.spark.catalog.dropTempView(view)


def _empty_scan(table: LakeTable, folders: Folders) -> pl.LazyFrame:
    """Zero rows with the table's columns (from any of its files), hive columns as strings."""
    any_file = next(iter(table.parquet_files()), None)
    if any_file is None:
        raise FileNotFoundError(
            f"{'/'.join(table.path.parts[-2:])} has no data in the lake: materialise it first"
        )
    scan = pl.scan_parquet(str(any_file)).limit(0)
    hive = sorted({k for _, values in folders for k in values})
    return scan.with_columns(pl.lit(None, dtype=pl.String).alias(k) for k in hive)
