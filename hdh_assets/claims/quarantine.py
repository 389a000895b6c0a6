"""Quarantine of claims rows that cannot be attributed, bounded by month and rerun-safe.

Layout, under ``quarantine/claims/<batch>/``:

- ``rejected-YYYY-MM.parquet``: rows with an event date in raw month YYYY-MM and no valid NIR.
  Written (or removed when empty) by the run whose months include YYYY-MM, from the rows it
  read anyway; a rerun or another grouping of months rewrites the same file, never a second one.
- ``rejected-undated-<fingerprint>.parquet``: rows without an event date, whatever the NIR. They
  belong to no month, so they are read once per batch: the fingerprint names the landed files
  they came from, and a run that finds the file for today's fingerprint reads nothing.

Every landed row is thus an event of exactly one month or a row of exactly one of these files.
Each file is written aside and renamed into place, so a run killed midway leaves the previous
file or the new one, and two runs writing the same file concurrently write the same rows.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from hdh_assets.claims.events import RAW_SCHEMA

LEGACY_FILE = "rejected_rows.parquet"  # one file per batch, rewritten by every month run
UNDATED_PREFIX = "rejected-undated-"
REJECTED_SCHEMA = {**RAW_SCHEMA, "reject_reason": pl.String, "batch": pl.String}


def month_file(month: dt.date) -> str:
    return f"rejected-{month:%Y-%m}.parquet"


def months_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """First days of the months in [start, end)."""
    months, month = [], start.replace(day=1)
    while month < end:
        months.append(month)
        month = (month + dt.timedelta(days=32)).replace(day=1)
    return months


def _replace(target: Path, frame: pl.DataFrame) -> None:
    """Write aside, then rename: readers see the old file or the new one, never half of one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    frame.select(list(REJECTED_SCHEMA)).cast(REJECTED_SCHEMA).write_parquet(
        partial, compression="zstd", statistics=True
    )
    partial.replace(target)


def _drop_legacy(folder: Path) -> None:
    """The single-file layout is superseded: keeping it would count its rows twice."""
    (folder / LEGACY_FILE).unlink(missing_ok=True)


def quarantine_months(
    folder: Path, rejected: pl.DataFrame, start: dt.date, end: dt.date
) -> dict[str, int]:
    """Replace the month files of raw months [start, end) with ``rejected`` (dated rows of that
    window only); an empty month loses its file. Returns rows per month file written."""
    _drop_legacy(folder)
    if rejected.is_empty():
        rejected = pl.DataFrame(schema=REJECTED_SCHEMA)
    outside = rejected.filter(
        (pl.col("event_date") < start)
        | (pl.col("event_date") >= end)
        | pl.col("event_date").is_null()
    )
    if not outside.is_empty():
        raise ValueError(f"{outside.height} rejected rows lie outside {start} .. {end}")
    written = {}
    by_month = rejected.with_columns(pl.col("event_date").dt.truncate("1mo").alias("_month"))
    for month in months_between(start, end):
        rows = by_month.filter(pl.col("_month") == month).drop("_month").sort("event_id")
        target = folder / month_file(month)
        if rows.is_empty():
            target.unlink(missing_ok=True)
            continue
        _replace(target, rows)
        written[target.name] = rows.height
    return written


def quarantine_undated(
    folder: Path, fingerprint: str, read: Callable[[], pl.DataFrame]
) -> tuple[int, bool]:
    """Make sure the undated rows of the landed files named by ``fingerprint`` are quarantined:
    ``read`` is called only when they are not yet. Returns (rows, whether this run wrote them)."""
    _drop_legacy(folder)
    target = folder / f"{UNDATED_PREFIX}{fingerprint}.parquet"
    written = False
    if target.exists():
        rows = pq.read_metadata(target).num_rows
    else:
        frame = read().sort("event_id")
        rows = frame.height
        if rows:
            _replace(target, frame)
            written = True
    for stale in folder.glob(f"{UNDATED_PREFIX}*.parquet") if folder.is_dir() else []:
        if stale != target:
            stale.unlink(missing_ok=True)
    return rows, written


def clear_undated(folder: Path) -> None:
    """No landed file holds an undated row (any more): no undated quarantine either."""
    for stale in folder.glob(f"{UNDATED_PREFIX}*.parquet") if folder.is_dir() else []:
        stale.unlink(missing_ok=True)


def quarantined_rows(folder: Path) -> int:
    """Rows held in a batch's quarantine files, from their footers."""
    if not folder.is_dir():
        return 0
    return sum(pq.read_metadata(p).num_rows for p in folder.glob("rejected-*.parquet"))
