"""A Parquet IO manager for polars and Spark frames over the same lake files.

Partitioned assets write one hive folder per partition key; a run over a range of partitions
(a single-run backfill) hands over one frame holding the partition column, which is split here.
Every write is atomic per partition (see ``tables.py``).
"""

from __future__ import annotations

import time
from typing import Any

import dagster as dg
import polars as pl
from upath import UPath

from hdh_assets.gdpr.exclusions import excluded_pseudonyms
from resources.lake import frames
from resources.lake.metadata import output_metadata
from resources.lake.tables import Lake, LakeTable, PartitionSpec, partition_folder_name

PARTITION_COLUMN_METADATA = "partition_column"
DEFAULT_PARTITION_COLUMN = "partition"
COLUMN_SCHEMA_METADATA = "dagster/column_schema"
SUBJECT_COLUMN_METADATA = "subject_column"


def partition_spec(partitions_def: dg.PartitionsDefinition | None, metadata: dict) -> PartitionSpec:
    """Hive columns of an asset: the dimension names, or its ``partition_column`` metadata."""
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        return PartitionSpec(tuple(d.name for d in partitions_def.partitions_defs))
    column = metadata.get(PARTITION_COLUMN_METADATA, DEFAULT_PARTITION_COLUMN)
    return PartitionSpec((getattr(column, "value", column),))


def _declared_schema(metadata: dict) -> dg.TableSchema | None:
    value = metadata.get(COLUMN_SCHEMA_METADATA)
    return getattr(value, "schema", value) if value is not None else None


def key_parts(partition_key: str | dg.MultiPartitionKey, spec: PartitionSpec) -> tuple[str, ...]:
    if isinstance(partition_key, dg.MultiPartitionKey):
        return tuple(partition_key.keys_by_dimension[c] for c in spec.columns)
    return (partition_key,)


class LakeIOManager(dg.ConfigurableIOManager):
    """Stores asset outputs as Parquet under ``base_path`` (``HDH_HOME/lake`` by default)."""

    base_path: str

    @property
    def lake(self) -> Lake:
        return Lake(UPath(self.base_path))

    def _table(self, asset_key: dg.AssetKey) -> LakeTable:
        return self.lake.table(asset_key.path)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        lake = self.lake
        table = self._table(context.asset_key)
        definition = context.definition_metadata or {}
        documented = _declared_schema(definition)
        obj = self._without_excluded_subjects(context, obj, definition)
        if not context.has_asset_partitions:
            self._write(lake, obj, table.path)
            context.add_output_metadata(
                output_metadata(table.parquet_files(), table.path, None, documented)
            )
            return

        spec = partition_spec(context.asset_partitions_def, definition)
        keys = list(context.asset_partition_keys)
        if frames.is_spark_frame(obj) and len(keys) > 1 and len(spec.columns) == 1:
            began = time.perf_counter()
            written_folders = self._write_spark_range(context, lake, obj, table, spec, keys)
            files = [f for folder in written_folders for f in table.parquet_files(folder)]
            context.add_output_metadata(
                {
                    **output_metadata(files, table.path, len(written_folders), documented),
                    # one Spark job computes and writes the whole range: its share of the run
                    "write_seconds": dg.MetadataValue.float(round(time.perf_counter() - began, 1)),
                }
            )
            return
        pieces = (
            self._split_range(context, obj, spec, keys)
            if spec.columns[0] in frames.columns_of(obj) or len(keys) > 1
            else {keys[0]: obj}
        )
        written_folders = []
        for key, piece in pieces.items():
            folder = table.partition_path(spec, key_parts(key, spec))
            self._write(lake, piece, folder)
            written_folders.append(folder)
        files = [f for folder in written_folders for f in table.parquet_files(folder)]
        target = written_folders[0] if len(written_folders) == 1 else table.path
        context.add_output_metadata(
            output_metadata(files, target, len(written_folders), documented)
        )

    def _split_range(
        self, context: dg.OutputContext, obj: Any, spec: PartitionSpec, keys: list[str]
    ) -> dict[str, Any]:
        """One frame per partition key; the partition column becomes the hive folder."""
        if len(spec.columns) != 1:
            raise dg.Failure(
                f"asset {context.asset_key.to_user_string()}: a run over several partitions needs "
                f"a single-dimension partitioning"
            )
        (column,) = spec.columns
        if column not in frames.columns_of(obj):
            raise dg.Failure(
                f"asset {context.asset_key.to_user_string()} materialised {len(keys)} partitions "
                f"in one run, so its output must hold the partition column '{column}'"
            )
        split = frames.split_by_column(obj, column)
        unexpected = sorted(set(split) - set(keys))
        if unexpected:
            raise dg.Failure(
                f"asset {context.asset_key.to_user_string()} returned rows for partitions outside "
                f"the run's range: {unexpected[:5]}"
            )
        return {key: split.get(key, frames.empty_like(obj, column)) for key in keys}

    def _without_excluded_subjects(self, context: dg.OutputContext, obj: Any, definition: dict):
        """The lake boundary of every asset holding people: rows of a person who objected or
        asked for erasure are never written, whichever asset produced them."""
        column = definition.get(SUBJECT_COLUMN_METADATA)
        column = getattr(column, "value", column)
        if not column or column not in frames.columns_of(obj):
            return obj
        excluded = excluded_pseudonyms(self.base_path)
        if not excluded:
            return obj
        context.log.info(
            f"{context.asset_key.to_user_string()}: rows of {len(excluded)} excluded people "
            "(objection or erasure) are not written"
        )
        return frames.drop_values(obj, column, excluded)

    def _write_spark_range(
        self,
        context: dg.OutputContext,
        lake: Lake,
        obj: Any,
        table: LakeTable,
        spec: PartitionSpec,
        keys: list[str],
    ) -> list[UPath]:
        """One Spark job writes every partition of the range (``partitionBy``) into staging;
        each partition folder then replaces its lake folder atomically."""
        (column,) = spec.columns
        if column not in frames.columns_of(obj):
            raise dg.Failure(
                f"asset {context.asset_key.to_user_string()} materialised {len(keys)} partitions "
                f"in one run, so its output must hold the partition column '{column}'"
            )
        expected = {partition_folder_name(column, key): key for key in keys}
        staging = lake.new_staging()
        try:
            frames.write_spark_partitioned(obj, staging, column)
            present = {p.name: p for p in staging.iterdir() if p.is_dir() and "=" in p.name}
            unexpected = sorted(set(present) - set(expected))
            if unexpected:
                raise dg.Failure(
                    f"asset {context.asset_key.to_user_string()} returned rows for partitions "
                    f"outside the run's range: {unexpected[:5]}"
                )
            folders = []
            for name, key in expected.items():
                folder = table.partition_path(spec, (key,))
                if name in present:
                    lake.replace(present[name], folder)
                else:  # a month of the range without rows: an empty partition, columns kept
                    self._write(lake, frames.empty_like(obj, column), folder)
                folders.append(folder)
            return folders
        finally:
            lake.discard(staging)

    @staticmethod
    def _write(lake: Lake, obj: Any, target: UPath) -> None:
        staging = lake.new_staging()
        try:
            frames.write_frame(obj, staging)
            lake.replace(staging, target)
        finally:  # after a successful replace the staging folder is gone already
            lake.discard(staging)

    def load_input(self, context: dg.InputContext) -> Any:
        lake = self.lake
        lake.recover()
        table = self._table(context.asset_key)
        if context.has_asset_partitions:
            upstream = context.upstream_output
            metadata = (upstream.definition_metadata if upstream else None) or {}
            spec = partition_spec(context.asset_partitions_def, metadata)
            keys = list(context.asset_partition_keys)
            folders = [
                (table.partition_path(spec, parts), dict(zip(spec.columns, parts, strict=True)))
                for parts in (key_parts(k, spec) for k in keys)
            ]
            present = [(folder, values) for folder, values in folders if folder.exists()]
            if len(present) < len(folders):
                context.log.warning(
                    f"{context.asset_key.to_user_string()}: {len(folders) - len(present)} of "
                    f"{len(folders)} requested partitions are not materialised; reading the rest"
                )
            if len(keys) == 1:  # one partition reads as a plain table, without the hive column
                present = [(folder, {}) for folder, _ in present]
        else:
            present = [(table.path, {})]
        return self._read(context, table, present)

    @staticmethod
    def _read(context: dg.InputContext, table: LakeTable, folders: list) -> Any:
        wanted = context.dagster_type.typing_type if context.dagster_type else None
        if frames.is_spark_type(wanted):
            if not folders:
                raise FileNotFoundError(f"no data for {context.asset_key.to_user_string()}")
            return frames.read_spark(table.path, folders)
        lazy = frames.read_polars(folders, table.parquet_files)
        return lazy if wanted is pl.LazyFrame else lazy.collect()
