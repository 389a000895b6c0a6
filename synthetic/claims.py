"""SNDS-like claims events, from thousands to hundreds of millions of rows, in bounded memory.

Rows are produced in chunks; each chunk is drawn from its own seeded generator and written to its
own Parquet file, so memory is bounded by the chunk size and every chunk is reproducible alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

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
EPOCH = dt.date(1970, 1, 1)
PERIOD_START = dt.date(2023, 1, 1)
PERIOD_DAYS = 730
DEFAULT_CHUNK_ROWS = 1_000_000

CLAIMS_SCHEMA = {
    "event_id": pl.Int64,
    "nir": pl.String,
    "event_date": pl.Date,
    "care_type": pl.String,
    "code": pl.String,
    "amount_eur": pl.Float64,
}


def claims_chunk(
    people_nirs: pl.Series, seed: int, chunk: int, first_row: int, rows: int
) -> pl.DataFrame:
    rng = np.random.default_rng([seed, 0xC1A1, chunk])
    # Care is concentrated on a minority of people, as in real claims.
    person = np.minimum(
        (rng.pareto(1.2, rows) * len(people_nirs) / 8).astype(np.int64), len(people_nirs) - 1
    )
    care_index = rng.choice(len(CARE_TYPES), size=rows, p=CARE_WEIGHTS)
    care = pl.Series("care_type", CARE_TYPES, dtype=pl.String).gather(care_index)
    code_draw = rng.random(rows)
    codes = np.empty(rows, dtype=object)
    amounts = np.empty(rows, dtype=np.float64)
    for index, kind in enumerate(CARE_TYPES):
        mask = care_index == index
        options = CODES[kind]
        codes[mask] = np.array(options, dtype=object)[(code_draw[mask] * len(options)).astype(int)]
        amounts[mask] = rng.lognormal(np.log(MEAN_AMOUNT[kind]), 0.5, int(mask.sum()))
    days = rng.integers(0, PERIOD_DAYS, rows)
    return pl.DataFrame(
        {
            "event_id": np.arange(first_row, first_row + rows, dtype=np.int64),
            "nir": people_nirs.gather(person),
            "event_date": pl.Series(days + (PERIOD_START - EPOCH).days, dtype=pl.Int32).cast(
                pl.Date
            ),
            "care_type": care,
            "code": pl.Series(codes, dtype=pl.String),
            "amount_eur": np.round(amounts, 2),
        }
    ).cast(CLAIMS_SCHEMA)


def with_defects(frame: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Spoil a few rows as real extracts do (NIR with a wrong key, missing date), for quarantine."""
    count = max(1, frame.height // 5000)
    rng = np.random.default_rng([seed, 0xBAD])
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


def write_claims(
    people: list[Person],
    rows: int,
    folder: Path,
    seed: int,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_chunk: Callable[[int], None] | None = None,
) -> list[str]:
    """Write ``rows`` events as ``events-NNNNN.parquet`` chunks; return the file names."""
    folder.mkdir(parents=True, exist_ok=True)
    nirs = pl.Series("nir", [p.nir for p in people], dtype=pl.String)
    names = []
    for chunk, first_row in enumerate(range(0, rows, chunk_rows)):
        size = min(chunk_rows, rows - first_row)
        frame = claims_chunk(nirs, seed, chunk, first_row, size)
        if chunk == 0:
            frame = with_defects(frame, seed)
        name = f"events-{chunk:05d}.parquet"
        frame.write_parquet(folder / name, compression="zstd", statistics=True)
        names.append(name)
        if on_chunk:
            on_chunk(size)
    return names
