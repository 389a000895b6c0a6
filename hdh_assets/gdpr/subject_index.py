"""Which (asset, partition) holds which subject: what GDPR processing re-materialises.

Built from the lake itself (every asset that declares a ``subject_column``), so it can never
disagree with what is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from resources.lake.tables import Lake, PartitionSpec

SUBJECT_INDEX_SCHEMA = {
    "asset": pl.String,
    "partition": pl.String,
    "subject_pseudonym": pl.String,
    "rows": pl.UInt32,
}


@dataclass(frozen=True)
class IndexedAsset:
    asset: str  # user string of the asset key, e.g. "imaging/dicom_instances"
    subject_column: str
    partition_column: str | None  # None for unpartitioned assets


def subjects_of(lake_root: Path, source: IndexedAsset) -> pl.DataFrame:
    table = Lake(lake_root).table(source.asset.split("/"))
    if source.partition_column is None:
        folders = [(None, table.path)]
    else:
        spec = PartitionSpec((source.partition_column,))
        folders = [(key, table.partition_path(spec, [key])) for (key,) in table.partitions(spec)]
    frames = []
    for key, folder in folders:
        files = [str(f) for f in table.parquet_files(folder)]
        if not files:
            continue
        frames.append(
            pl.scan_parquet(files)
            .group_by(pl.col(source.subject_column).alias("subject_pseudonym"))
            .agg(pl.len().cast(pl.UInt32).alias("rows"))
            .with_columns(
                pl.lit(source.asset).alias("asset"), pl.lit(key, dtype=pl.String).alias("partition")
            )
            .select(list(SUBJECT_INDEX_SCHEMA))
            .collect()
        )
    return pl.concat(frames) if frames else pl.DataFrame(schema=SUBJECT_INDEX_SCHEMA)


def build_subject_index(lake_root: Path, sources: list[IndexedAsset]) -> pl.DataFrame:
    frames = [subjects_of(lake_root, source) for source in sources]
    return (
        pl.concat(frames, how="vertical_relaxed")
        .cast(SUBJECT_INDEX_SCHEMA)
        .filter(pl.col("subject_pseudonym").is_not_null())
        .sort("asset", "partition", "subject_pseudonym", nulls_last=True)
    )
