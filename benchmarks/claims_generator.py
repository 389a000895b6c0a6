"""Claims generator: rows/s of the chunked, vectorised writer against a row-by-row Python baseline,
and peak memory, which must stay bounded by the chunk size rather than the total row count.

    .venv/bin/python benchmarks/claims_generator.py [--rows 5000000] [--chunk-rows 1000000]
                                                    [--months 24]

The writer lays the extract out by month (at most ``--chunk-rows`` rows per file, one month per
file, sorted by date): ``benchmarks/scale.py`` uses it for billion-row runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthetic.claims import CARE_TYPES, CARE_WEIGHTS, CODES, write_claims
from synthetic.people import make_population


def baseline_rows(people, rows: int, folder: Path) -> None:
    """What one writes first: a Python loop building dicts, then one DataFrame."""
    rng = random.Random(1)
    start = dt.date(2023, 1, 1)
    records = []
    for i in range(rows):
        care = rng.choices(CARE_TYPES, CARE_WEIGHTS)[0]
        records.append(
            {
                "event_id": i,
                "nir": rng.choice(people).nir,
                "event_date": start + dt.timedelta(days=rng.randrange(730)),
                "care_type": care,
                "code": rng.choice(CODES[care]),
                "amount_eur": round(rng.lognormvariate(3, 0.5), 2),
            }
        )
    pl.DataFrame(records).write_parquet(folder / "baseline.parquet")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--chunk-rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=300_000)
    parser.add_argument("--months", type=int, default=24, help="months of event dates")
    args = parser.parse_args()
    people = make_population(10_000, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        names = write_claims(
            people,
            args.rows,
            folder / "chunked",
            seed=1,
            chunk_rows=args.chunk_rows,
            months=args.months,
        )
        rate = args.rows / (time.perf_counter() - t0)
        rss_chunked = peak_rss_mb()
        t0 = time.perf_counter()
        baseline_rows(people, args.baseline_rows, folder)
        baseline_rate = args.baseline_rows / (time.perf_counter() - t0)

        size = sum(p.stat().st_size for p in (folder / "chunked").iterdir())
    print(
        f"chunked generator : {rate:,.0f} rows/s over {args.rows:,} rows in {len(names)} files, "
        f"{args.months} months "
        f"({size / 1e6:.0f} MB Parquet)"
    )
    print(f"python baseline   : {baseline_rate:,.0f} rows/s over {args.baseline_rows:,} rows")
    print(f"ratio             : {rate / baseline_rate:.1f}x")
    print(
        f"peak RSS          : {rss_chunked:.0f} MB after the chunked run (chunk = "
        f"{args.chunk_rows:,} rows; it does not grow with --rows)"
    )


if __name__ == "__main__":
    main()
