"""Erasure cost follows the partitions holding the person, not the size of the data.

    .venv/bin/python benchmarks/erasure.py [--partitions 120] [--rows 50000] [--k 3]

A daily-partitioned asset of ``--partitions`` partitions (``--rows`` rows each, a few thousand
people) holds one person in ``--k`` of them. The platform's own path is timed: subject index,
``plan_erasure``, then the planned runs with the person excluded at the lake boundary. The
baseline, in the same run, is a full rebuild of every partition.
"""

import argparse
import datetime as dt
import hashlib
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import dagster as dg  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from hdh_assets.gdpr.exclusions import EXCLUSIONS_PATH, exclusions_frame  # noqa: E402
from hdh_assets.gdpr.processing import plan_erasure  # noqa: E402
from hdh_assets.gdpr.subject_index import IndexedAsset, build_subject_index  # noqa: E402
from resources.lake import LakeIOManager  # noqa: E402

START = dt.date(2024, 1, 1)
TARGET = hashlib.sha256(b"the person who asked").hexdigest()[:32]


def build_asset(partitions: int, rows: int, holding: set[str]):
    days = dg.DailyPartitionsDefinition(
        start_date=START.isoformat(), end_date=(START + dt.timedelta(days=partitions)).isoformat()
    )

    @dg.asset(
        key=["bench", "events"],
        partitions_def=days,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"subject_column": "subject_pseudonym", "partition_column": "day"},
    )
    def events(context: dg.AssetExecutionContext) -> pl.DataFrame:
        frames = []
        for key in context.partition_keys:
            rng = np.random.default_rng(int(key.replace("-", "")))
            people = [f"{i:032x}" for i in rng.integers(0, 5000, rows)]
            if key in holding:
                people[: rows // 100] = [TARGET] * (rows // 100)
            frames.append(
                pl.DataFrame(
                    {
                        "subject_pseudonym": pl.Series(people, dtype=pl.String),
                        "amount": rng.lognormal(3, 1, rows),
                        "day": pl.Series([key] * rows),
                    }
                )
            )
        return pl.concat(frames)

    return events


def run(asset, resources, instance, first: str, last: str) -> float:
    started = time.perf_counter()
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    result = dg.materialize([asset], resources=resources, instance=instance, tags=tags)
    assert result.success
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=120)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    keys = [(START + dt.timedelta(days=i)).isoformat() for i in range(args.partitions)]
    holding = {keys[i] for i in sorted(rng.choice(args.partitions, args.k, replace=False))}
    asset = build_asset(args.partitions, args.rows, holding)
    with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test() as instance:
        lake = Path(tmp) / "lake"
        resources = {"io_manager": LakeIOManager(base_path=str(lake))}
        full = run(asset, resources, instance, keys[0], keys[-1])  # the baseline: rebuild all

        started = time.perf_counter()
        index = build_subject_index(
            lake, [IndexedAsset("bench/events", "subject_pseudonym", "day")]
        )
        graph = dg.Definitions(assets=[asset]).resolve_asset_graph()
        plan = plan_erasure(index, TARGET, graph)
        folder = lake.joinpath(*EXCLUSIONS_PATH)
        folder.mkdir(parents=True)
        exclusions_frame([(TARGET, "HDH-BENCH", "erasure")]).write_parquet(
            folder / "part-00000.parquet"
        )
        planning = time.perf_counter() - started
        rewritten = 0
        for planned in plan.runs:
            if planned.partition_range is None:
                continue  # the unpartitioned tail (subject index) is not part of this benchmark
            first, last = planned.partition_range
            rewritten += keys.index(last) - keys.index(first) + 1
            run(asset, resources, instance, first, last)
        erasure = time.perf_counter() - started
        remaining = (
            pl.scan_parquet(str(lake / "bench" / "events" / "**" / "*.parquet"))
            .filter(pl.col("subject_pseudonym") == TARGET)
            .select(pl.len())
            .collect()
            .item()
        )
    total = args.partitions * args.rows
    print(
        f"{args.partitions} partitions x {args.rows:,} rows ({total:,} rows); the person in {args.k}: {sorted(holding)}"
    )
    print(f"full rebuild (baseline): {full:.2f} s, {args.partitions} partitions rewritten")
    print(
        f"erasure: {erasure:.2f} s ({planning:.2f} s index + plan), {rewritten} partitions "
        f"rewritten in {sum(1 for r in plan.runs if r.partition_range)} runs; rows of the person left: {remaining}"
    )
    print(
        f"ratio erasure / full rebuild: {erasure / full:.3f} (partitions {rewritten / args.partitions:.3f})"
    )
    if remaining:
        sys.exit("the person is still in the lake")


if __name__ == "__main__":
    os.environ.setdefault("DAGSTER_HOME", tempfile.mkdtemp())
    main()
