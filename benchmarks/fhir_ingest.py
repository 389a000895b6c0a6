"""FHIR ingestion speed against pandas.json_normalize on the same NDJSON, and peak memory on a
large file (streamed, spilled to Parquet chunks).

    .venv/bin/python benchmarks/fhir_ingest.py [--people 20000] [--big-gb 0] [--big-per-record]

Throughput counts every resource read: ours parses, pseudonymises (keyed pseudonyms, ids and
references, date shifts, removal of identifying fields) and flattens into typed tables, either
column-wise (the default path: pyarrow + polars, ``vectorised``) or one record at a time (the
per-record path it falls back to); the baseline only parses and flattens with
``pandas.json_normalize``. ``decode-only`` measures pyarrow's JSON reader alone, the first step
of the column-wise path: the floor under which it cannot go. Each measurement runs in a child process of its own, so that its peak
RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hdh_assets.clinical.ingest import JsonIngestSettings, ingest_json_batch
from synthetic.fhir import write_fhir
from synthetic.people import make_population

MODES = ("vectorised", "per-record", "pandas", "decode-only", "redelivery")


def make_export(folder: Path, people: int) -> int:
    counts = write_fhir(make_population(people, 11), {}, folder, seed=11, bundles=0)
    return sum(v for k, v in counts.items() if k != "Bundle")


def ours(folder: Path, spill: Path | None = None, vectorised: bool = True) -> tuple[float, dict]:
    settings = JsonIngestSettings(bytes(range(32)), folder.parent / "quarantine")
    start = time.perf_counter()
    result = ingest_json_batch("bench", folder, settings, spill=spill, vectorised=vectorised)
    if spill is not None:  # the tables are lazy scans of the spilled chunks: count them
        result.summary()
    return time.perf_counter() - start, result.summary()


def redelivery(folder: Path) -> tuple[float, dict]:
    """The same export landed again: every resource is compared with what the first delivery
    left in the lake (here its tables, as the asset reads them) and found a duplicate."""
    import polars as pl

    from hdh_assets.clinical.earlier import RANK, EarlierBatches

    settings = JsonIngestSettings(bytes(range(32)), folder.parent / "quarantine")
    first = ingest_json_batch("first", folder, settings)
    earlier = EarlierBatches(
        {t: f.lazy().with_columns(pl.lit(0, pl.Int32).alias(RANK)) for t, f in first.tables.items()}
    )
    start = time.perf_counter()
    result = ingest_json_batch("again", folder, settings, earlier=earlier)
    return time.perf_counter() - start, result.summary()


def pandas_baseline(folder: Path) -> tuple[float, int]:
    import pandas as pd

    start, records = time.perf_counter(), 0
    for path in sorted(folder.glob("*.ndjson")):
        with path.open() as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        records += len(rows)
        pd.json_normalize(rows)
    return time.perf_counter() - start, records


def decode_only(folder: Path) -> tuple[float, int]:
    """The floor: pyarrow's JSON reader (both cores), decoding alone, as our path's first step
    does. Nothing pseudonymised, nothing flattened."""
    import pyarrow.json as pj

    start, records = time.perf_counter(), 0
    for path in sorted(folder.glob("*.ndjson")):
        if path.stat().st_size:
            records += pj.read_json(path).num_rows
    return time.perf_counter() - start, records


def make_big(source: Path, target: Path, gigabytes: float) -> int:
    """Repeat the source's non-patient lines with fresh ids until the folder weighs ``gigabytes``."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "Patient.ndjson").write_bytes((source / "Patient.ndjson").read_bytes())
    lines = (source / "Observation.ndjson").read_text().splitlines()
    written, copy, limit = 0, 0, int(gigabytes * 1e9)
    with (target / "Observation.ndjson").open("w") as handle:
        while written < limit:
            for line in lines:
                record = json.loads(line)
                record["id"] = f"{record['id']}-{copy}"
                text = json.dumps(record) + "\n"
                handle.write(text)
                written += len(text)
            copy += 1
    return written


def measure(folder: Path, mode: str, spill: bool) -> None:
    """Child process: one measurement, printed as JSON (seconds, records, peak RSS)."""
    warm = folder.parent / f"warm-{mode}" / "export"  # first use of each library, untimed
    warm.mkdir(parents=True, exist_ok=True)
    for path in folder.glob("*.ndjson"):
        with path.open("rb") as handle:
            head = [line for _, line in zip(range(200), handle, strict=False)]
            (warm / path.name).write_bytes(b"".join(head))
    if mode in ("pandas", "decode-only"):
        baseline = pandas_baseline if mode == "pandas" else decode_only
        baseline(warm)
        seconds, records = baseline(folder)
        summary = {"records_in": records, "ingested": records, "quarantined": 0}
    elif mode == "redelivery":
        redelivery(warm)
        seconds, summary = redelivery(folder)
        assert summary["duplicates"] == summary["records_in"], summary
    else:
        ours(warm, None, mode == "vectorised")
        seconds, summary = ours(
            folder, folder.parent / f"spill-{mode}" if spill else None, mode == "vectorised"
        )
    print(
        json.dumps(
            {
                "seconds": seconds,
                "records": summary["records_in"],
                "ingested": summary["ingested"],
                "quarantined": summary["quarantined"],
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


def peak_rss_mb() -> float:
    """This process's peak RSS. ``ru_maxrss`` would also count the parent's peak before the
    fork (Linux keeps it across exec); ``VmHWM`` is the current address space's own."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(folder: Path, mode: str, spill: bool = False) -> dict:
    command = [sys.executable, __file__, "--measure", str(folder), "--mode", mode]
    child = subprocess.run(
        command + (["--spill"] if spill else []), capture_output=True, text=True, check=True
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--big-gb", type=float, default=0.0, help="also stream a file this large")
    parser.add_argument(
        "--big-per-record",
        action="store_true",
        help="on the large file, measure the per-record path too (slow)",
    )
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, default="vectorised", help=argparse.SUPPRESS)
    parser.add_argument("--spill", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.mode, args.spill)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "export"
        resources = make_export(folder, args.people)
        size = sum(p.stat().st_size for p in folder.glob("*.ndjson")) / 1e6
        print(f"export: {resources:,} resources, {size:.0f} MB NDJSON ({args.people:,} people)")
        runs = {mode: _child(folder, mode) for mode in MODES}
        for mode, label in (
            ("vectorised", "column-wise: pyarrow + polars, pseudonymise, flatten"),
            ("per-record", "one record at a time: parse, pseudonymise, flatten"),
            ("pandas", "json.loads + json_normalize"),
            ("decode-only", "pyarrow.json decoding alone: the floor of our path"),
            ("redelivery", "the same export again, column-wise: every resource a duplicate"),
        ):
            run = runs[mode]
            print(
                f"{mode:11s} {run['records'] / run['seconds']:10,.0f} resources/s "
                f"({run['seconds']:.2f} s, peak RSS {run['peak_rss_mb']:.0f} MB; {label})"
            )
        pandas_rate = runs["pandas"]["records"] / runs["pandas"]["seconds"]
        for mode in ("vectorised", "per-record"):
            rate = runs[mode]["records"] / runs[mode]["seconds"]
            print(f"ratio {mode:11s} / pandas {rate / pandas_rate:6.2f}")
        floor = runs["decode-only"]["seconds"]
        target = runs["pandas"]["seconds"] / 10
        print(
            f"decoding alone is {runs['pandas']['seconds'] / floor:.1f}x pandas: at 10x pandas "
            f"({target:.2f} s) pseudonymisation and flattening would have {target - floor:.2f} s "
            f"(they take {runs['vectorised']['seconds'] - floor:.2f} s now)"
        )
        print(
            f"ratio redelivery / first delivery (column-wise) "
            f"{runs['redelivery']['seconds'] / runs['vectorised']['seconds']:6.2f} (time)"
        )
        vectorised_rate = runs["vectorised"]["records"] / runs["vectorised"]["seconds"]
        per_record_rate = runs["per-record"]["records"] / runs["per-record"]["seconds"]
        print(f"ratio vectorised / per-record {vectorised_rate / per_record_rate:6.2f}")
        if args.big_gb:
            big = Path(tmp) / "big" / "export"
            written = make_big(folder, big, args.big_gb)
            modes = ("vectorised", "per-record") if args.big_per_record else ("vectorised",)
            for mode in modes:
                report = _child(big, mode, spill=True)
                print(
                    f"big file ({mode}): {written / 1e9:.2f} GB, {report['records']:,} records "
                    f"in {report['seconds']:.0f} s "
                    f"({report['records'] / report['seconds']:,.0f}/s), "
                    f"peak RSS {report['peak_rss_mb']:.0f} MB"
                )


if __name__ == "__main__":
    main()
