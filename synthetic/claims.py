"""SNDS-like claims events, from thousands to billions of rows, in bounded memory.

The extract is laid out as providers partition large tables: by month of event date. Each month
is cut into chunks of at most ``chunk_rows``; each chunk is drawn from its own seeded generator
(seed, month, chunk), sorted by event date and written to its own Parquet file
``events-YYYY-MM-NNNNN.parquet`` with row-group statistics. So memory is bounded by the chunk
size, every chunk is reproducible alone, and a reader that wants one month's date window opens
only that month's files (and, inside them, only the row groups whose dates overlap).

Rows without an event date belong to no month: like a partitioned export's "unknown" partition,
they go to ``events-undated-00000.parquet``. A few NIRs carry a wrong key (0.02 % of the rows,
spread over the months), for the quarantine.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from hdh_assets.claims.events import RAW_SCHEMA
from synthetic.people import Person

CARE_TYPES = ("consultation", "pharmacy", "biology", "imaging", "hospital_stay", "nursing")
CARE_WEIGHTS = (0.34, 0.30, 0.16, 0.07, 0.05, 0.08)
# Codes per care type (NGAP acts, CIP13 drugs, NABM tests, CCAM acts, GHM stays, NGAP nursing)
CODES = {
    "consultation": ("G", "GS", "APC", "CS", "TCG"),
    "pharmacy": ("3400936403114", "3400930000000", "3400934998452", "3400935955812"),
    "biology": ("0552", "1104", "0593", "1577"),
    "imaging": ("ZBQK002", "ACQN001", "ZCQK004", "NZQN001"),
    "hospital_stay": ("05M092", "04M053", "10M153", "06C124"),
    "nursing": ("AMI", "AIS", "DI"),
}
MEAN_AMOUNT = {
    "consultation": 30.0,
    "pharmacy": 22.0,
    "biology": 18.0,
    "imaging": 70.0,
    "hospital_stay": 3200.0,
    "nursing": 9.0,
}
_ALL_CODES = pl.Series("code", [c for kind in CARE_TYPES for c in CODES[kind]], dtype=pl.String)
_CODE_COUNTS = np.array([len(CODES[kind]) for kind in CARE_TYPES], dtype=np.int64)
_CODE_OFFSETS = np.concatenate(([0], np.cumsum(_CODE_COUNTS)[:-1]))
EPOCH = dt.date(1970, 1, 1)
PERIOD_START = dt.date(2023, 1, 1)
DEFAULT_MONTHS = 24  # 2023-01 .. 2024-12, the span of the demo's other sources
PERIOD_DAYS = 730  # kept for the other sources' generators and the baselines
DEFAULT_CHUNK_ROWS = 1_000_000
ROW_GROUP_ROWS = 131_072  # a few days of a big month per row group: day-level pruning
DEFECT_EVERY = 5_000  # one NIR with a wrong key and one missing date per 5 000 rows
UNDATED_FILE = "events-undated-00000.parquet"

CLAIMS_SCHEMA = RAW_SCHEMA  # the delivery format the platform reads


def month_starts(months: int, first: dt.date = PERIOD_START) -> list[dt.date]:
    """First day of each of ``months`` consecutive months, and of the month after the last."""
    index = first.year * 12 + first.month - 1
    return [dt.date((index + m) // 12, (index + m) % 12 + 1, 1) for m in range(months + 1)]


def month_rows(rows: int, months: int) -> list[tuple[dt.date, dt.date, int, int]]:
    """(month start, next month start, first row, row count) per month: rows spread in
    proportion to the days, so the daily rate is even over the span, whatever its length."""
    starts = month_starts(months)
    total = (starts[-1] - starts[0]).days
    out, first = [], 0
    for begin, end in itertools.pairwise(starts):
        last = rows * (end - starts[0]).days // total
        out.append((begin, end, first, last - first))
        first = last
    return out


def month_file_name(month: dt.date, chunk: int) -> str:
    return f"events-{month:%Y-%m}-{chunk:05d}.parquet"


def claims_chunk(
    people_nirs: pl.Series,
    seed: int,
    chunk: int,
    first_row: int,
    rows: int,
    days: tuple[dt.date, dt.date] = (PERIOD_START, PERIOD_START + dt.timedelta(days=PERIOD_DAYS)),
    month: int = 0,
) -> pl.DataFrame:
    """``rows`` events with dates in ``days`` [first, end), sorted by date; drawn from the
    generator (seed, month, chunk) alone, so any chunk can be rebuilt without the others."""
    rng = np.random.default_rng([seed, 0xC1A1, month, chunk])
    # Care is concentrated on a minority of people, as in real claims.
    person = np.minimum(
        (rng.pareto(1.2, rows) * len(people_nirs) / 8).astype(np.int64), len(people_nirs) - 1
    )
    care_index = rng.choice(len(CARE_TYPES), size=rows, p=CARE_WEIGHTS)
    care = pl.Series("care_type", CARE_TYPES, dtype=pl.String).gather(care_index)
    code_draw = rng.random(rows)
    # Codes gathered from one flat list (no Python objects per row): the code of a row is
    # option floor(draw * options) of its care type.
    code_index = _CODE_OFFSETS[care_index] + (code_draw * _CODE_COUNTS[care_index]).astype(int)
    codes = _ALL_CODES.gather(code_index)
    amounts = np.empty(rows, dtype=np.float64)
    for index, kind in enumerate(CARE_TYPES):
        mask = care_index == index
        amounts[mask] = rng.lognormal(np.log(MEAN_AMOUNT[kind]), 0.5, int(mask.sum()))
    first_day, end_day = ((d - EPOCH).days for d in days)
    # Sorted dates (the other columns are independent draws, so sorting the dates alone is
    # sorting the rows): row groups then cover a few days each and their statistics prune.
    day_numbers = np.sort(rng.integers(first_day, end_day, rows))
    return pl.DataFrame(
        {
            "event_id": np.arange(first_row, first_row + rows, dtype=np.int64),
            "nir": people_nirs.gather(person),
            "event_date": pl.Series(day_numbers, dtype=pl.Int32).cast(pl.Date),
            "care_type": care,
            "code": codes,
            "amount_eur": np.round(amounts, 2),
        }
    ).cast(CLAIMS_SCHEMA)


def defect_count(first_row: int, rows: int, total_rows: int) -> int:
    """Defects of each kind in rows [first_row, first_row + rows): one per ``DEFECT_EVERY``
    rows of the whole extract (at least one in the extract), wherever the chunk boundaries."""
    count = (first_row + rows) // DEFECT_EVERY - first_row // DEFECT_EVERY
    if total_rows < DEFECT_EVERY and first_row == 0 and rows >= 2:
        count = 1
    return min(count, rows // 2)


def with_defects(
    frame: pl.DataFrame, seed: int, count: int | None = None, stream: tuple[int, ...] = ()
) -> pl.DataFrame:
    """Spoil a few rows as real extracts do (NIR with a wrong key, missing date), for quarantine."""
    if count is None:
        count = max(1, frame.height // DEFECT_EVERY)
    if count <= 0:
        return frame
    rng = np.random.default_rng([seed, 0xBAD, *stream])
    rows = rng.choice(frame.height, size=min(2 * count, frame.height), replace=False)
    bad_key, no_date = rows[:count], rows[count:]
    wrong = pl.col("nir").str.slice(0, 13) + (
        (pl.col("nir").str.slice(13, 2).cast(pl.Int32) % 96 + 1).cast(pl.String).str.zfill(2)
    )
    index = pl.int_range(pl.len())
    return frame.with_columns(
        pl.when(index.is_in(bad_key.tolist())).then(wrong).otherwise(pl.col("nir")).alias("nir"),
        pl.when(index.is_in(no_date.tolist()))
        .then(None)
        .otherwise(pl.col("event_date"))
        .alias("event_date"),
    )


def _chunk_days(
    begin: dt.date, end: dt.date, offset: int, size: int, month_count: int
) -> tuple[dt.date, dt.date]:
    """The days [first, end) of a month's chunk: the month is cut into consecutive day ranges
    in proportion to the rows, so its files are sorted one after the other as well as inside,
    and a window of a few days touches one or two files of a month, not all of them."""
    days = (end - begin).days
    first = offset * days // month_count
    last = -(-(offset + size) * days // month_count)  # ceiling
    return begin + dt.timedelta(days=first), begin + dt.timedelta(days=max(last, first + 1))


def _write(frame: pl.DataFrame, path: Path) -> None:
    frame.write_parquet(path, compression="zstd", statistics=True, row_group_size=ROW_GROUP_ROWS)


def split_undated(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows with a date, rows without), the latter copied out: a filtered frame's strings are
    views into the whole chunk's buffers, so keeping it for the undated file would keep every
    chunk alive (the generator grew by 15 MB per million rows before this copy)."""
    missing = frame["event_date"].is_null()
    undated = frame.filter(missing)
    return frame.filter(~missing), pl.DataFrame(undated.to_dicts(), schema=frame.schema)


def write_claims(
    people: list[Person],
    rows: int,
    folder: Path,
    seed: int,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_chunk: Callable[[int], None] | None = None,
    months: int = DEFAULT_MONTHS,
) -> list[str]:
    """Write ``rows`` events over ``months`` months from 2023-01 as month files
    (``events-YYYY-MM-NNNNN.parquet``, at most ``chunk_rows`` rows each) and the undated rows'
    file; return the file names. ``on_chunk`` hears the rows drawn per chunk (they sum to
    ``rows``)."""
    if months < 1:
        raise ValueError("months must be at least 1")
    folder.mkdir(parents=True, exist_ok=True)
    nirs = pl.Series("nir", [p.nir for p in people], dtype=pl.String)
    names: list[str] = []
    undated: list[pl.DataFrame] = []  # 1 row in 5 000: bounded, small beside a chunk
    for month_index, (begin, end, month_first, month_count) in enumerate(month_rows(rows, months)):
        for chunk, offset in enumerate(range(0, month_count, chunk_rows)):
            size = min(chunk_rows, month_count - offset)
            first_row = month_first + offset
            days = _chunk_days(begin, end, offset, size, month_count)
            frame = claims_chunk(nirs, seed, chunk, first_row, size, days, month_index)
            count = defect_count(first_row, size, rows)
            frame = with_defects(frame, seed, count, (month_index, chunk))
            if count:
                frame, undated_rows = split_undated(frame)
                undated.append(undated_rows)
            name = month_file_name(begin, chunk)
            _write(frame, folder / name)
            names.append(name)
            if on_chunk:
                on_chunk(size)
    if undated:
        _write(pl.concat(undated), folder / UNDATED_FILE)
        names.append(UNDATED_FILE)
    return names
