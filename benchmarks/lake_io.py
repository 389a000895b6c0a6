"""Lake writes: the cost of atomic replacement (write aside, rename) against a plain
``write_parquet`` to the final path, and polars scan throughput of what was written.

    .venv/bin/python benchmarks/lake_io.py [--rows 5000000] [--partitions 24]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from upath import UPath

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resources.lake.frames import write_frame
from resources.lake.tables import Lake, PartitionSpec


def frame(rows: int) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame(
        {
            "subject_pseudonym": pl.Series(rng.integers(0, 2**63, rows)).cast(pl.String),
            "value": rng.normal(size=rows),
            "code": pl.Series(rng.integers(0, 500, rows)).cast(pl.String),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--partitions", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = frame(args.rows)
    pieces = [data[i :: args.partitions] for i in range(args.partitions)]
    spec = PartitionSpec(("month",))
    plain_times, atomic_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lake = Lake(UPath(root / "lake"))
        table = lake.table(["bench", "table"])
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for index, piece in enumerate(pieces):
                target = root / "plain" / f"month={index:02d}"
                target.mkdir(parents=True, exist_ok=True)
                piece.write_parquet(target / "part-00000.parquet")
            plain_times.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            for index, piece in enumerate(pieces):
                staging = lake.new_staging()
                write_frame(piece, staging)
                lake.replace(staging, table.partition_path(spec, [f"{index:02d}"]))
            atomic_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rows = (
            pl.scan_parquet(str(root / "lake/bench/table/**/*.parquet"))
            .select(pl.len())
            .collect()
            .item()
        )
        total = (
            pl.scan_parquet(str(root / "lake/bench/table/**/*.parquet"))
            .select(pl.col("value").sum())
            .collect()
        )
        scan = time.perf_counter() - t0
        assert rows == args.rows and total.height == 1
    plain, atomic = min(plain_times), min(atomic_times)
    print(
        f"plain write_parquet : {args.rows / plain:,.0f} rows/s ({plain:.2f} s, {args.partitions} partitions)"
    )
    print(f"atomic lake write   : {args.rows / atomic:,.0f} rows/s ({atomic:.2f} s)")
    print(f"ratio atomic/plain  : {plain / atomic:.2f} (1.00 = no overhead)")
    print(f"polars scan + sum   : {args.rows / scan:,.0f} rows/s")


if __name__ == "__main__":
    main()
