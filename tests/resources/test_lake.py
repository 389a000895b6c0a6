"""The lake IO manager with polars frames: round trips, partitions, ranges, atomic replacement."""

import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from upath import UPath

from resources.lake import LakeIOManager
from resources.lake.tables import Lake

FRAME = pl.DataFrame(
    {
        "subject": ["a" * 32, "b" * 32, "c" * 32],
        "day": [dt.date(2024, 1, 1), dt.date(2024, 1, 2), None],
        "amount": [1.5, None, 3.25],
        "count": [1, 2, 3],
    }
)
COLOURS = dg.StaticPartitionsDefinition(["red", "green/blue", "2024-01-01"])
DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-05")


def _materialize(assets, lake_root: Path, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets,
        resources={"io_manager": LakeIOManager(base_path=str(lake_root))},
        instance=dg.DagsterInstance.ephemeral(),
        **kwargs,
    )


def test_polars_round_trip_with_metadata(tmp_path):
    @dg.asset(key=["domain", "table"])
    def table() -> pl.DataFrame:
        return FRAME

    @dg.asset(ins={"upstream": dg.AssetIn(key=["domain", "table"])})
    def eager_reader(upstream: pl.DataFrame) -> pl.DataFrame:
        assert_frame_equal(upstream, FRAME)
        return upstream

    @dg.asset(ins={"upstream": dg.AssetIn(key=["domain", "table"])})
    def lazy_reader(upstream: pl.LazyFrame) -> pl.LazyFrame:
        assert isinstance(upstream, pl.LazyFrame)
        return upstream.filter(pl.col("count") > 1)

    result = _materialize([table, eager_reader, lazy_reader], tmp_path)
    assert result.success
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files == [
        "domain/table/part-00000.parquet",
        "eager_reader/part-00000.parquet",
        "lazy_reader/part-00000.parquet",
    ]
    assert_frame_equal(pl.read_parquet(tmp_path / "lazy_reader"), FRAME.filter(pl.col("count") > 1))

    metadata = result.asset_materializations_for_node("domain__table")[0].metadata
    assert metadata["dagster/row_count"].value == 3
    assert metadata["bytes"].value == (tmp_path / "domain/table/part-00000.parquet").stat().st_size
    assert metadata["path"].value == str(tmp_path / "domain/table")
    schema = metadata["dagster/column_schema"].schema
    assert [(c.name, c.type) for c in schema.columns] == [
        ("subject", "large_string"),
        ("day", "date32[day]"),
        ("amount", "double"),
        ("count", "int64"),
    ]
    assert "| subject | day | amount | count |" in metadata["preview"].value


def test_partitions_write_one_hive_folder_each_and_read_back(tmp_path):
    @dg.asset(partitions_def=COLOURS, metadata={"partition_column": "colour"})
    def painted(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return FRAME.with_columns(pl.lit(context.partition_key).alias("key"))

    @dg.asset(deps=[painted], ins={"painted": dg.AssetIn()})
    def everything(painted: pl.DataFrame) -> pl.DataFrame:
        return painted

    for key in COLOURS.get_partition_keys():
        assert _materialize([painted], tmp_path, partition_key=key).success
    folders = sorted(p.name for p in (tmp_path / "painted").iterdir())
    assert folders == ["colour=2024-01-01", "colour=green%2Fblue", "colour=red"]

    # An unpartitioned downstream sees every partition, with the partition as a string column.
    result = _materialize([painted, everything], tmp_path, selection=[everything])
    combined = result.output_for_node("everything")
    assert combined.height == 9
    assert combined.schema["colour"] == pl.String
    assert (combined["colour"] == combined["key"]).all()


def test_a_range_run_is_split_into_partitions(tmp_path):
    @dg.asset(
        partitions_def=DAYS,
        metadata={"partition_column": "day"},
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def daily(context: dg.AssetExecutionContext) -> pl.DataFrame:
        keys = context.partition_keys
        # No row for the last day: its partition is written empty, not skipped.
        return pl.DataFrame(
            {"day": [k for k in keys[:-1] for _ in range(2)], "n": range(2 * len(keys) - 2)}
        )

    result = _materialize(
        [daily],
        tmp_path,
        tags={
            "dagster/asset_partition_range_start": "2024-01-01",
            "dagster/asset_partition_range_end": "2024-01-03",
        },
    )
    assert result.success
    for day, rows in (("2024-01-01", 2), ("2024-01-02", 2), ("2024-01-03", 0)):
        frame = pl.read_parquet(tmp_path / "daily" / f"day={day}")
        assert frame.height == rows
        assert frame.columns == ["n"]  # the partition column lives in the folder name only
    assert len(result.asset_materializations_for_node("daily")) == 3


def test_rows_outside_the_run_range_are_refused(tmp_path):
    @dg.asset(partitions_def=DAYS, metadata={"partition_column": "day"})
    def misplaced() -> pl.DataFrame:
        return pl.DataFrame({"day": ["2024-01-04"], "n": [1]})

    result = _materialize([misplaced], tmp_path, partition_key="2024-01-01", raise_on_error=False)
    assert not result.success
    assert not (tmp_path / "misplaced").exists()


class CrashBetweenRenames(Exception):
    pass


def test_a_failed_write_leaves_the_previous_version_readable(tmp_path, monkeypatch):
    version = {"n": 1}

    @dg.asset
    def table() -> pl.DataFrame:
        return FRAME.with_columns(pl.lit(version["n"]).alias("version"))

    assert _materialize([table], tmp_path).success

    # Crash after the new data is written aside, before it is renamed into place.
    def crash(self, staging, target):
        assert list(Path(staging.path).glob("*.parquet")), "new data must be complete aside"
        raise CrashBetweenRenames("killed before rename")

    monkeypatch.setattr(Lake, "_move_into_place", crash)
    version["n"] = 2
    assert not _materialize([table], tmp_path, raise_on_error=False).success
    monkeypatch.undo()

    lake = Lake(UPath(tmp_path))
    assert lake.recover() == [str(tmp_path / "table")]  # the old version is put back
    assert pl.read_parquet(tmp_path / "table")["version"].unique().to_list() == [1]
    assert len(lake.abandoned_staging()) == 0  # the failed write cleaned its staging

    assert _materialize([table], tmp_path).success  # and the next run replaces it
    assert pl.read_parquet(tmp_path / "table")["version"].unique().to_list() == [2]


def test_a_writer_killed_mid_write_never_touches_the_published_partition(tmp_path):
    lake = Lake(UPath(tmp_path))
    target = UPath(tmp_path) / "t" / "p=1"
    first = lake.new_staging()
    FRAME.write_parquet(str(first / "part-00000.parquet"))
    lake.replace(first, target)

    # A second writer dies after writing half a file into staging (no cleanup ran).
    second = lake.new_staging()
    (Path(second.path) / "part-00000.parquet").write_bytes(b"PAR1 half a file")
    assert_frame_equal(pl.read_parquet(str(target)), FRAME)
    assert lake.table(["t"]).parquet_files() == [target / "part-00000.parquet"]
    assert lake.clean_staging() == 1


def test_unsupported_output_type_names_the_type(tmp_path):
    @dg.asset
    def wrong() -> dict:
        return {"a": 1}

    with pytest.raises(TypeError, match=r"builtins\.dict"):
        _materialize([wrong], tmp_path)


def test_declared_column_descriptions_are_merged_with_written_types(tmp_path):
    declared = dg.TableSchema(
        columns=[
            dg.TableColumn("subject", "string", description="who"),
            dg.TableColumn("count", "int", description="how many"),
        ]
    )

    @dg.asset(metadata={"dagster/column_schema": declared})
    def documented() -> pl.DataFrame:
        return FRAME

    result = _materialize([documented], tmp_path)
    schema = (
        result.asset_materializations_for_node("documented")[0]
        .metadata["dagster/column_schema"]
        .schema
    )
    described = {c.name: (c.type, c.description) for c in schema.columns}
    assert described["subject"] == ("large_string", "who")
    assert described["count"] == ("int64", "how many")
    assert described["day"] == ("date32[day]", None)  # written but undocumented: still listed


def _slow_writer(root: str, started) -> None:
    """Another run writing a new version, slowly, between its two renames."""
    import time as _time

    class Slow(Lake):
        def _move_into_place(self, staging, target):
            started.set()
            _time.sleep(1.0)
            super()._move_into_place(staging, target)

    lake = Slow(UPath(root))
    staging = lake.new_staging()
    pl.DataFrame({"version": [2]}).write_parquet(str(staging / "part-00000.parquet"))
    lake.replace(staging, UPath(root) / "table")


def test_recovery_waits_for_a_swap_in_another_process(tmp_path):
    """A reader's recovery must not mistake another run's swap in progress for a crash."""
    import multiprocessing

    lake = Lake(UPath(tmp_path))
    first = lake.new_staging()
    pl.DataFrame({"version": [1]}).write_parquet(str(first / "part-00000.parquet"))
    lake.replace(first, UPath(tmp_path) / "table")
    context = multiprocessing.get_context("spawn")
    started = context.Event()
    writer = context.Process(target=_slow_writer, args=(str(tmp_path), started))
    writer.start()
    assert started.wait(60)
    assert lake.recover() == []  # waited for the swap instead of undoing it
    writer.join(60)
    assert writer.exitcode == 0
    assert pl.read_parquet(tmp_path / "table")["version"].to_list() == [2]
