"""FHIR ingestion speed against pandas.json_normalize on the same NDJSON, and peak memory on a
large file (streamed, spilled to Parquet chunks).

    .venv/bin/python benchmarks/fhir_ingest.py [--people 20000] [--big-gb 0]

Throughput counts every resource read: ours parses, pseudonymises (keyed pseudonyms, ids and
references, date shifts, removal of identifying fields) and flattens into typed tables; the
baseline only parses and flattens with ``pandas.json_normalize``.
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


def make_export(folder: Path, people: int) -> int:
    counts = write_fhir(make_population(people, 11), {}, folder, seed=11, bundles=0)
    return sum(v for k, v in counts.items() if k != "Bundle")


def ours(folder: Path, spill: Path | None = None) -> tuple[float, dict]:
    settings = JsonIngestSettings(bytes(range(32)), folder.parent / "quarantine")
    start = time.perf_counter()
    result = ingest_json_batch("bench", folder, settings, spill=spill)
    return time.perf_counter() - start, result.summary()


def pandas_baseline(folder: Path) -> float:
    import pandas as pd

    start = time.perf_counter()
    for path in sorted(folder.glob("*.ndjson")):
        with path.open() as handle:
            records = [json.loads(line) for line in handle if line.strip()]
        pd.json_normalize(records)
    return time.perf_counter() - start


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


def measure_big(folder: Path) -> None:
    """Child process: ingest with spilling, print seconds, records and peak RSS as JSON."""
    seconds, summary = ours(folder, spill=folder.parent / "spill")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "records": summary["records_in"], "peak_rss_mb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--big-gb", type=float, default=0.0, help="also stream a file this large")
    parser.add_argument("--measure-big", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_big:
        measure_big(args.measure_big)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "export"
        resources = make_export(folder, args.people)
        size = sum(p.stat().st_size for p in folder.glob("*.ndjson")) / 1e6
        seconds, summary = ours(folder)
        baseline = pandas_baseline(folder)
        print(f"export: {resources:,} resources, {size:.0f} MB NDJSON ({args.people:,} people)")
        print(
            f"ours    {summary['records_in'] / seconds:10,.0f} resources/s (parse, pseudonymise, flatten)"
        )
        print(f"pandas  {resources / baseline:10,.0f} resources/s (json.loads + json_normalize)")
        print(f"ratio   {baseline / seconds * summary['records_in'] / resources:10.2f}")
        if args.big_gb:
            big = Path(tmp) / "big" / "export"
            written = make_big(folder, big, args.big_gb)
            child = subprocess.run(
                [sys.executable, __file__, "--measure-big", str(big)],
                capture_output=True,
                text=True,
                check=True,
            )
            report = json.loads(child.stdout.strip().splitlines()[-1])
            print(
                f"big file: {written / 1e9:.2f} GB, {report['records']:,} records in {report['seconds']:.0f} s "
                f"({report['records'] / report['seconds']:,.0f}/s), peak RSS {report['peak_rss_mb']:.0f} MB"
            )


if __name__ == "__main__":
    main()
