"""Core of claims ingestion, on Spark: pseudonymise subjects, shift dates, set invalid rows aside.

The national identifier is replaced by the subject pseudonym and each date moves by the
subject's offset, exactly as in imaging and clinical data. Rows that cannot be attributed are
returned separately with a reason, for quarantine; they never reach the lake.

A run over months [start, end) of shifted dates reads only what can land there: a subject's
offset is at most ``max_shift_days`` either way, so the raw dates that matter lie in
[start - max, end + max). The landed files' Parquet footers say which files hold such dates
(``claims_files``); only those are handed to Spark, and the date predicate prunes row groups
inside them. Rows without a date belong to no window: they are read apart, from the files whose
statistics count nulls (``undated_rows``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from hdh_assets.pseudonymisation import InvalidNationalIdentifier, Pseudonymiser

# What a claims extract delivers (SNDS-like); the generator writes exactly this.
RAW_SCHEMA = {
    "event_id": pl.Int64,
    "nir": pl.String,
    "event_date": pl.Date,
    "care_type": pl.String,
    "code": pl.String,
    "amount_eur": pl.Float64,
}
RAW_COLUMNS = tuple(RAW_SCHEMA)
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


def attribute_claims(
    raw: Any, pseudonymiser: Pseudonymiser, batch: str
) -> tuple[Any, list[str | None]]:
    """Raw rows with their subject's pseudonym and date offset, or the reason they are refused;
    and the raw NIR values that were refused (``None`` among them when some rows have none).

    Distinct identifiers go to the driver once (people, not events) for the keyed hash; the
    events never leave Spark. The refused values let a caller pick the refused rows without
    joining every event again.
    """
    from pyspark.sql import functions as F

    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"claims batch '{batch}' lacks columns {missing}")
    nirs = pl.from_arrow(raw.select("nir").distinct().toArrow())["nir"]
    mapping = subject_mapping(nirs, pseudonymiser).rename({"nir": "mapped_nir"})
    refused = mapping.filter(pl.col("reject_reason").is_not_null())["mapped_nir"].to_list()
    spark = raw.sparkSession
    subjects = spark.createDataFrame(mapping.to_arrow())
    attributed = (
        raw.join(F.broadcast(subjects), raw["nir"].eqNullSafe(subjects["mapped_nir"]), "left")
        .withColumn(
            "reject_reason",
            F.when(
                F.col("reject_reason").isNull() & F.col("event_date").isNull(),
                F.lit("missing_event_date"),
            ).otherwise(F.col("reject_reason")),
        )
        .drop("mapped_nir")
    )
    return attributed, refused


def with_refused_nir(frame: Any, refused: list[str | None]) -> Any:
    """The rows of ``frame`` whose NIR is one of the refused values: a filter Spark pushes down
    to the scan, so the few refused rows are found without computing every event."""
    from pyspark.sql import functions as F

    values = [v for v in refused if v is not None]
    nir = F.col("nir")
    predicate = nir.isin(values) if values else F.lit(False)
    if len(values) < len(refused):
        predicate = predicate | nir.isNull()
    return frame.where(predicate)


def _shifted() -> Any:
    from pyspark.sql import functions as F

    return F.date_add(F.col("event_date"), F.col("date_offset_days"))


def events_of(attributed: Any, batch: str) -> Any:
    """The published event rows of attributed rows: pseudonym, shifted date, no NIR."""
    from pyspark.sql import functions as F

    shifted = _shifted()
    return attributed.where(F.col("reject_reason").isNull()).select(
        F.col("event_id").cast("long").alias("source_event_id"),
        F.col("subject_pseudonym"),
        shifted.alias("event_date"),
        F.trunc(shifted, "month").cast("string").alias("month"),  # yyyy-MM-dd, cheaper
        F.col("care_type").cast("string"),
        F.col("code").cast("string"),
        F.col("amount_eur").cast("double"),
        F.lit(batch).alias("batch"),
    )


def rejected_of(attributed: Any, batch: str) -> Any:
    """The refused rows as they landed, with the reason: for quarantine, never the lake."""
    from pyspark.sql import functions as F

    return attributed.where(F.col("reject_reason").isNotNull()).select(
        *RAW_COLUMNS, "reject_reason", F.lit(batch).alias("batch")
    )


def pseudonymise_claims(raw: Any, pseudonymiser: Pseudonymiser, batch: str) -> tuple[Any, Any]:
    """Return (events, rejected rows with reason) of one landed batch, as Spark DataFrames."""
    attributed, _ = attribute_claims(raw, pseudonymiser, batch)
    return events_of(attributed, batch), rejected_of(attributed, batch)


def months_touched(raw_first: dt.date, raw_last: dt.date, max_shift_days: int) -> tuple[str, str]:
    """First and last monthly partition keys that shifted dates of this raw range can fall in."""
    first = raw_first - dt.timedelta(days=max_shift_days)
    last = raw_last + dt.timedelta(days=max_shift_days)
    return first.replace(day=1).isoformat(), last.replace(day=1).isoformat()


def landed_date_range(files: list) -> tuple[dt.date, dt.date] | None:
    """Raw event-date range of landed claims files, from their Parquet footers (no data read)."""
    described = [describe_file(Path(f)) for f in files]
    if any(f.stats_missing for f in described):  # no statistics: read the column
        bounds = (
            pl.scan_parquet([str(f) for f in files])
            .select(pl.col("event_date").min().alias("first"), pl.col("event_date").max())
            .collect()
        )
        first, last = bounds.row(0)
        return (first, last) if first is not None else None
    firsts = [f.first for f in described if f.first is not None]
    lasts = [f.last for f in described if f.last is not None]
    return (min(firsts), max(lasts)) if firsts else None


# -- month-bounded reads ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimsFile:
    """One landed Parquet file as its footer describes it: no row is read to know this."""

    path: Path
    rows: int
    undated_rows: int  # rows without an event date (null count)
    first: dt.date | None  # smallest and largest event date; None when it holds no date
    last: dt.date | None
    stats_missing: bool = False  # a writer without statistics: every window must read it

    def overlaps(self, low: dt.date, high: dt.date) -> bool:
        """Whether it can hold dated rows in [low, high)."""
        if self.stats_missing:
            return True
        return self.first is not None and self.first < high and self.last >= low

    @property
    def may_hold_undated(self) -> bool:
        return self.stats_missing or self.undated_rows > 0


def describe_file(path: Path) -> ClaimsFile:
    """Event-date bounds and null count of one file, from its row groups' statistics."""
    metadata = pq.read_metadata(path)
    column = (
        metadata.schema.names.index("event_date") if "event_date" in metadata.schema.names else -1
    )
    first = last = None
    nulls = 0
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        stats = group.column(column).statistics if column >= 0 else None
        if stats is None or not stats.has_null_count:
            return ClaimsFile(path, metadata.num_rows, 0, None, None, stats_missing=True)
        nulls += stats.null_count
        if group.num_rows == stats.null_count:
            continue
        if not stats.has_min_max:
            return ClaimsFile(path, metadata.num_rows, 0, None, None, stats_missing=True)
        first = stats.min if first is None else min(first, stats.min)
        last = stats.max if last is None else max(last, stats.max)
    return ClaimsFile(path, metadata.num_rows, nulls, first, last)


def claims_files(batch_folder: Path) -> list[ClaimsFile]:
    """Every Parquet file of a landed batch (nested folders too), described by its footer."""
    return [
        describe_file(path)
        for path in sorted(batch_folder.rglob("*.parquet"))
        if not path.name.startswith(".")
    ]


def raw_window(start: dt.date, end: dt.date, max_shift_days: int) -> tuple[dt.date, dt.date]:
    """Raw dates [low, high) whose shifted date can fall in [start, end): offsets are at most
    ``max_shift_days`` either way."""
    shift = dt.timedelta(days=max_shift_days)
    return start - shift, end + shift


def files_for_window(
    files: list[ClaimsFile], start: dt.date, end: dt.date, max_shift_days: int
) -> list[ClaimsFile]:
    low, high = raw_window(start, end, max_shift_days)
    return [f for f in files if f.overlaps(low, high)]


def undated_fingerprint(files: list[ClaimsFile]) -> str:
    """Names what the undated rows were read from (file, size, change time, null count): when it
    has not changed, their quarantine is up to date and no run reads them again."""
    digest = hashlib.sha256()
    for f in sorted((f for f in files if f.may_hold_undated), key=lambda f: str(f.path)):
        stat = f.path.stat()
        digest.update(
            f"{f.path.name}|{stat.st_size}|{stat.st_mtime_ns}|{f.undated_rows}\n".encode()
        )
    return digest.hexdigest()[:16]


def read_window(spark: Any, files: list[ClaimsFile], low: dt.date, high: dt.date) -> Any:
    """The raw rows dated in [low, high) of these files; the predicate is pushed down, so row
    groups outside it are skipped by their statistics."""
    from pyspark.sql import functions as F

    raw = spark.read.parquet(*[str(f.path) for f in files])
    return raw.where((F.col("event_date") >= F.lit(low)) & (F.col("event_date") < F.lit(high)))


def read_undated(spark: Any, files: list[ClaimsFile]) -> Any:
    """The raw rows without an event date, from the files whose footers count some."""
    from pyspark.sql import functions as F

    raw = spark.read.parquet(*[str(f.path) for f in files if f.may_hold_undated])
    return raw.where(F.col("event_date").isNull())


def window_claims(
    raw: Any,
    pseudonymiser: Pseudonymiser,
    batch: str,
    start: dt.date,
    end: dt.date,
) -> tuple[Any, Any, Any]:
    """(kept, events, rejected) of raw rows read for shifted months [start, end).

    ``kept``: the rows this window keeps, events whose shifted date is in [start, end) and
    refused rows whose raw date is (they have no offset, so they are filed by raw month: each
    belongs to exactly one window of a backfill). The NIR is kept for refused rows only (the
    quarantine needs it); an event's row no longer carries it. ``rejected`` is drawn from the
    rows whose NIR the driver refused (no Spark job at all when it refused none): a window holds
    no undated row, so no other row can be refused.
    """
    from pyspark.sql import functions as F

    attributed, refused_nirs = attribute_claims(raw, pseudonymiser, batch)
    refused = F.col("reject_reason").isNotNull()

    def within(column: Any) -> Any:
        return (column >= F.lit(start)) & (column < F.lit(end))

    def keep(rows: Any) -> Any:
        return rows.where(
            F.when(refused, within(F.col("event_date"))).otherwise(within(_shifted()))
        ).withColumn("nir", F.when(refused, F.col("nir")))

    kept = keep(attributed)
    # filtered on the raw NIR before the join, so Spark pushes it down to the scan
    refusable = keep(with_refused_nir(attributed, refused_nirs)) if refused_nirs else kept.limit(0)
    return kept, events_of(kept, batch), rejected_of(refusable, batch)
