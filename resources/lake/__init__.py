"""The lake: Parquet tables under ``HDH_HOME/lake``, one folder per asset key, read by polars and Spark."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resources.lake.io_manager import LakeIOManager
    from resources.lake.tables import LakeTable, PartitionSpec

__all__ = ["LakeIOManager", "LakeTable", "PartitionSpec"]
_DEFINED_IN = {
    "LakeIOManager": "resources.lake.io_manager",
    "LakeTable": "resources.lake.tables",
    "PartitionSpec": "resources.lake.tables",
}


def __getattr__(name: str) -> Any:
    """Imported on first use: listing a table's files need not load polars and the IO manager."""
    if name in _DEFINED_IN:
        return getattr(importlib.import_module(_DEFINED_IN[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
