"""Core of claims ingestion, on Spark: pseudonymise subjects, shift dates, set invalid rows aside.

The national identifier is replaced by the subject pseudonym and each date moves by the
subject's offset, exactly as in imaging and clinical data. Rows that cannot be attributed are
returned separately with a reason, for quarantine; they never reach the lake.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from hdh_assets.pseudonymisation import InvalidNationalIdentifier, Pseudonymiser

RAW_COLUMNS = ("event_id", "nir", "event_date", "care_type", "code", "amount_eur")
EVENT_SCHEMA = {
    "source_event_id": pl.Int64,
    "subject_pseudonym": pl.String,
    "event_date": pl.Date,
    "month": pl.String,  # the partition key: first day of the shifted event month
    "care_type": pl.String,
    "code": pl.String,
    "amount_eur": pl.Float64,
    "batch": pl.String,
}


def subject_mapping(nirs: pl.Series, pseudonymiser: Pseudonymiser) -> pl.DataFrame:
    """One row per distinct raw NIR: pseudonym and date offset, or the reason it was refused."""
    rows = []
    for nir in nirs.unique().to_list():
        if nir is None or not str(nir).strip():
            rows.append((nir, None, None, "missing_nir"))
            continue
        try:
            pseudonym = pseudonymiser.subject_pseudonym(nir)
        except InvalidNationalIdentifier:
            rows.append((nir, None, None, "invalid_nir"))
            continue
        rows.append((nir, pseudonym, pseudonymiser.date_offset_days(pseudonym), None))
    return pl.DataFrame(
        rows,
        schema={
            "nir": pl.String,
            "subject_pseudonym": pl.String,
            "date_offset_days": pl.Int32,
            "reject_reason": pl.String,
        },
        orient="row",
    )


def pseudonymise_claims(raw: Any, pseudonymiser: Pseudonymiser, batch: str) -> tuple[Any, Any]:
    """Return (events, rejected rows with reason) of one landed batch, as Spark DataFrames.

    Distinct identifiers go to the driver once (people, not events) for the keyed hash; the
    events never leave Spark.
    """
    from pyspark.sql import functions as F

    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"claims batch '{batch}' lacks columns {missing}")
    nirs = pl.from_arrow(raw.select("nir").distinct().toArrow())["nir"]
    mapping = subject_mapping(nirs, pseudonymiser).rename({"nir": "mapped_nir"})
    spark = raw.sparkSession
    subjects = spark.createDataFrame(mapping.to_arrow())
    joined = raw.join(
        F.broadcast(subjects), raw["nir"].eqNullSafe(subjects["mapped_nir"]), "left"
    ).withColumn(
        "reject_reason",
        F.when(
            F.col("reject_reason").isNull() & F.col("event_date").isNull(),
            F.lit("missing_event_date"),
        ).otherwise(F.col("reject_reason")),
    )
    shifted = F.date_add(F.col("event_date"), F.col("date_offset_days"))
    events = joined.where(F.col("reject_reason").isNull()).select(
        F.col("event_id").cast("long").alias("source_event_id"),
        F.col("subject_pseudonym"),
        shifted.alias("event_date"),
        F.date_format(F.trunc(shifted, "month"), "yyyy-MM-dd").alias("month"),
        F.col("care_type").cast("string"),
        F.col("code").cast("string"),
        F.col("amount_eur").cast("double"),
        F.lit(batch).alias("batch"),
    )
    rejected = joined.where(F.col("reject_reason").isNotNull()).select(
        *RAW_COLUMNS, "reject_reason", F.lit(batch).alias("batch")
    )
    return events, rejected


def months_touched(raw_first: dt.date, raw_last: dt.date, max_shift_days: int) -> tuple[str, str]:
    """First and last monthly partition keys that shifted dates of this raw range can fall in."""
    first = raw_first - dt.timedelta(days=max_shift_days)
    last = raw_last + dt.timedelta(days=max_shift_days)
    return first.replace(day=1).isoformat(), last.replace(day=1).isoformat()


def landed_date_range(files: list) -> tuple[dt.date, dt.date] | None:
    """Raw event-date range of landed claims files, from Parquet statistics where possible."""
    if not files:
        return None
    bounds = (
        pl.scan_parquet([str(f) for f in files])
        .select(pl.col("event_date").min().alias("first"), pl.col("event_date").max().alias("last"))
        .collect()
    )
    first, last = bounds.row(0)
    return (first, last) if first is not None else None
