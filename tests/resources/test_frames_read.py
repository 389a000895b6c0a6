"""Reading lake folders with polars: hive values as strings, one scan where schemas agree."""

from __future__ import annotations

import polars as pl
from upath import UPath

from resources.lake.frames import read_polars
from resources.lake.tables import Lake, PartitionSpec

SPEC = PartitionSpec(("month",))


def _table(root, parts: dict[str, pl.DataFrame]):
    table = Lake(UPath(root)).table(["claims", "events"])
    for key, frame in parts.items():
        folder = table.partition_path(SPEC, (key,))
        folder.mkdir(parents=True)
        frame.write_parquet(str(folder / "part-00000.parquet"))
    folders = [(table.partition_path(SPEC, k), {"month": k[0]}) for k in table.partitions(SPEC)]
    return table, folders


def _read(table, folders) -> pl.DataFrame:
    return read_polars(folders, table.parquet_files).collect().sort("month", "x")


def test_partitions_read_as_one_frame_with_the_key_as_a_string(tmp_path):
    parts = {f"2023-0{m}-01": pl.DataFrame({"x": [m, m * 10]}) for m in (1, 2, 3)}
    table, folders = _table(tmp_path, parts)
    frame = _read(table, folders)
    assert frame.schema == pl.Schema({"x": pl.Int64, "month": pl.String})
    assert frame["month"].to_list() == ["2023-01-01"] * 2 + ["2023-02-01"] * 2 + ["2023-03-01"] * 2
    assert frame["x"].to_list() == [1, 10, 2, 20, 3, 30]
    plan = read_polars(folders, table.parquet_files).explain()
    assert plan.count("Parquet SCAN") == 1  # one streaming source, not one per partition


def test_a_parent_folder_with_an_equals_sign_is_not_taken_for_a_partition(tmp_path):
    root = tmp_path / "odd=name" / "lake"
    parts = {"2023-01-01": pl.DataFrame({"x": [1]}), "2023-02-01": pl.DataFrame({"x": [2]})}
    table, folders = _table(root, parts)
    frame = _read(table, folders)
    assert frame.columns == ["x", "month"] and frame["month"].to_list() == [
        "2023-01-01",
        "2023-02-01",
    ]


def test_partitions_with_different_schemas_are_relaxed_together(tmp_path):
    parts = {
        "2023-01-01": pl.DataFrame({"x": [1], "note": [None]}),  # an all-null column: type Null
        "2023-02-01": pl.DataFrame({"x": [2], "note": ["text"]}),
    }
    table, folders = _table(tmp_path, parts)
    frame = _read(table, folders)
    assert frame["note"].to_list() == [None, "text"] and frame.schema["note"] == pl.String
