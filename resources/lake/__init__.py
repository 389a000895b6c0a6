"""The lake: Parquet tables under ``HDH_HOME/lake``, one folder per asset key, read by polars and Spark."""

from resources.lake.io_manager import LakeIOManager
from resources.lake.tables import LakeTable, PartitionSpec

__all__ = ["LakeIOManager", "LakeTable", "PartitionSpec"]
