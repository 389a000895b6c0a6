"""Series and studies from the instance index (pure polars), with geometry consistency."""

from __future__ import annotations

import polars as pl


def _single(column: str) -> pl.Expr:
    """True when every instance of the group agrees on ``column`` (nulls ignored)."""
    return (pl.col(column).drop_nulls().n_unique() <= 1).alias(f"consistent_{column}")


def series_table(instances: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    lazy = instances.lazy()
    z = pl.col("image_position_patient").list.get(2, null_on_oob=True)
    return (
        lazy.group_by("series_instance_uid")
        .agg(
            pl.col("study_instance_uid").first(),
            pl.col("subject_pseudonym").first(),
            pl.col("modality").drop_nulls().first(),
            pl.col("sop_class_uid").drop_nulls().first(),
            pl.col("series_number").drop_nulls().first(),
            pl.col("study_date").drop_nulls().min(),
            pl.col("series_date").drop_nulls().min(),
            pl.len().alias("instances"),
            pl.col("number_of_frames").fill_null(0).sum().alias("frames"),
            pl.col("rows").drop_nulls().first(),
            pl.col("columns").drop_nulls().first(),
            _single("rows"),
            _single("columns"),
            _single("pixel_spacing"),
            _single("image_orientation_patient"),
            z.min().alias("first_slice_z"),
            z.max().alias("last_slice_z"),
            pl.col("file_bytes").sum().alias("bytes"),
            pl.col("batch").unique().sort().alias("batches")
            if "batch" in lazy.collect_schema()
            else pl.lit(None).alias("batches"),
        )
        .with_columns(
            (
                pl.col("consistent_rows")
                & pl.col("consistent_columns")
                & pl.col("consistent_pixel_spacing")
                & pl.col("consistent_image_orientation_patient")
            ).alias("geometry_consistent")
        )
        .sort("study_instance_uid", "series_number", "series_instance_uid", nulls_last=True)
        .collect()
    )


def studies_table(series: pl.DataFrame) -> pl.DataFrame:
    return (
        series.group_by("study_instance_uid")
        .agg(
            pl.col("subject_pseudonym").first(),
            pl.col("study_date").min(),
            pl.col("modality").drop_nulls().unique().sort().alias("modalities"),
            pl.len().alias("series"),
            pl.col("instances").sum(),
            pl.col("frames").sum(),
            pl.col("bytes").sum(),
            pl.col("geometry_consistent").all(),
        )
        .sort("study_date", "study_instance_uid", nulls_last=True)
    )
