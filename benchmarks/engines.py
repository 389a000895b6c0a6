"""SQL data products on the platform's two engines, polars SQL and Spark SQL, against the same
queries hand-written with the polars LazyFrame API: wall time, rows/s and peak memory at 1M, 10M
and 100M generated claims events, and which engine wins at each size. With ``--cluster``, Spark
also runs as a driver of a standalone cluster (a master and two workers on this machine, started
for the run), so local and cluster Spark are compared on the same data in the same run.

    .venv/bin/python benchmarks/engines.py [--rows 1000000,10000000,100000000] [--cluster]
                                           [--data-dir /tmp/hdh-engines]

The models are the ones of ``dbt_like_sql/claims/`` that read ``source('claims', 'events')``,
loaded with ``discover`` + ``compile_models`` and run through ``PolarsEngine``/``SparkEngine`` as
``_materialise`` runs them, so the benchmark runs exactly the SQL the platform runs.

Each engine runs in its own child process (this script with ``--child``); the parent samples the
RSS of the child's whole process tree (Spark's JVM included) every 0.2 s, and on the cluster
the executors the workers start for it. The timed part is:
registering the lake table + running both models + writing each result to Parquet. Spark's
session start-up is timed and printed apart, and not included in its engine time. The events
table is generated once per size under ``<data-dir>/rows-<N>/lake/claims/events/month=*/``
(reused afterwards; a ``ROWS`` marker file says it is complete) and is not part of any timing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import dagster as dg
import polars as pl
import psutil
from upath import UPath

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hdh_assets.claims.events import EVENT_SCHEMA
from hdh_assets.products.assets import TableLayout, register_upstreams
from hdh_assets.products.compiler import CompiledModel, compile_models
from hdh_assets.products.engines import PolarsEngine, SparkEngine
from hdh_assets.products.models import discover
from hdh_assets.pseudonymisation.subjects import PSEUDONYM_HEX_LENGTH
from hdh_cli.spark_cluster import LocalSparkCluster
from resources.lake.frames import write_frame
from resources.lake.tables import Lake, PartitionSpec
from resources.spark import spark_config
from synthetic.claims import claims_chunk

ROOT = Path(__file__).resolve().parents[1]
EVENTS_KEY = dg.AssetKey(["claims", "events"])
EVENT_COLUMNS = list(EVENT_SCHEMA)  # the published claims/events columns
MODELS = ("care_consumption_per_subject_month", "chronic_medication_cohort")
SHORT = {
    "care_consumption_per_subject_month": "per_subject_month",
    "chronic_medication_cohort": "cohort",
}
ENGINES = ("hand", "polars", "spark")
LABELS = {
    "hand": "hand-written polars",
    "polars": "polars SQL (platform)",
    "spark": "Spark SQL (platform)",
    "cluster": "Spark SQL on cluster",
}
CLUSTER_WORKERS, CLUSTER_WORKER_MEMORY, CLUSTER_EXECUTOR_MEMORY = 2, "5g", "4g"
CHUNK_ROWS = 5_000_000
SEED = 7
SPARK_DRIVER_MEMORY = "8g"
SAMPLE_SECONDS = 0.2
MEMORY_CAP = 0.9  # of the machine's RAM: a child tree above it is stopped and reported
RESULT_PREFIX = "RESULT "


# --- data ------------------------------------------------------------------------------------


def people_for(rows: int) -> int:
    """4,000 people at 1M rows, 40,000 at 10M, 400,000 at 100M."""
    return max(1_000, rows // 250)


def pseudonyms(count: int) -> pl.Series:
    """Hex strings shaped like the platform's keyed pseudonyms (``PSEUDONYM_HEX_LENGTH``)."""
    return pl.Series(
        "nir",
        [hashlib.sha256(b"bench:%d" % i).hexdigest()[:PSEUDONYM_HEX_LENGTH] for i in range(count)],
        dtype=pl.String,
    )


def size_root(data_dir: Path, rows: int) -> Path:
    return data_dir / f"rows-{rows}"


def events_path(data_dir: Path, rows: int) -> Path:
    return size_root(data_dir, rows) / "lake" / "claims" / "events"


def ensure_data(data_dir: Path, rows: int) -> tuple[float, bool]:
    """The pseudonymised events table in lake layout; (seconds spent, reused)."""
    root = size_root(data_dir, rows)
    marker = root / "ROWS"
    if marker.exists() and marker.read_text().strip() == str(rows):
        return 0.0, True
    t0 = time.perf_counter()
    staging = data_dir / f".rows-{rows}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    table = staging / "lake" / "claims" / "events"
    people = pseudonyms(people_for(rows))
    for chunk, first_row in enumerate(range(0, rows, CHUNK_ROWS)):
        size = min(CHUNK_ROWS, rows - first_row)
        raw = claims_chunk(people, SEED, chunk, first_row, size)
        events = raw.select(
            pl.col("event_id").alias("source_event_id"),
            pl.col("nir").alias("subject_pseudonym"),
            "event_date",
            "care_type",
            "code",
            "amount_eur",
            pl.lit(f"bench-{chunk % 3:03d}", dtype=pl.String).alias("batch"),
            pl.col("event_date").dt.truncate("1mo").dt.strftime("%Y-%m-%d").alias("month"),
        )
        for (month,), part in events.partition_by("month", as_dict=True).items():
            folder = table / f"month={month}"
            folder.mkdir(parents=True, exist_ok=True)
            part.drop("month").write_parquet(
                folder / f"part-{chunk:05d}.parquet", compression="zstd", statistics=True
            )
        del raw, events
        print(f"  generated {first_row + size:>12,} / {rows:,} rows", flush=True)
    (staging / "ROWS").write_text(str(rows))
    staging.rename(root)
    return time.perf_counter() - t0, False


# --- the three engines (run in the child) ----------------------------------------------------


def compiled_models() -> list[CompiledModel]:
    sources = [s for s in discover(ROOT / "dbt_like_sql") if s.name in MODELS]
    models = compile_models(sources, {EVENTS_KEY: EVENT_COLUMNS})
    assert sorted(m.name for m in models) == sorted(MODELS), [m.name for m in models]
    return models


def run_platform(engine_name: str, data_dir: Path, rows: int, out: Path) -> dict:
    """Each model as ``_materialise`` runs it: a fresh engine, the upstream registered from the
    lake's month folders, the compiled SQL, the result written as the lake writes it."""
    startup = None
    spark = None
    if engine_name in ("spark", "cluster"):  # the cluster's master comes in HDH_SPARK_MASTER
        from pyspark.sql import SparkSession

        t0 = time.perf_counter()
        builder = SparkSession.builder
        settings = {**spark_config(), "spark.driver.memory": SPARK_DRIVER_MEMORY}
        for key, value in settings.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        startup = time.perf_counter() - t0
    lake = Lake(UPath(size_root(data_dir, rows) / "lake"))
    # All month folders, as a single-run backfill of every month scans them.
    layouts = {EVENTS_KEY: TableLayout(None, PartitionSpec(("month",)), tuple(EVENT_COLUMNS))}
    seconds, result_rows = {}, {}
    for model in compiled_models():
        target = out / model.name
        target.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        engine = SparkEngine(spark) if spark is not None else PolarsEngine()
        register_upstreams(engine, lake, model.references, layouts, None, None)
        result = engine.run(model.sql_for(engine.name))
        write_frame(result, UPath(target))
        seconds[model.name] = time.perf_counter() - t0
        result_rows[model.name] = engine.rows(result)  # not timed (a count of the cache)
        if isinstance(engine, SparkEngine):
            engine.close()
        del result
    return {"startup": startup, "seconds": seconds, "rows": result_rows}


def hand_written(scan: pl.LazyFrame) -> dict[str, pl.LazyFrame]:
    """The two models, written by hand with the LazyFrame API."""
    per_subject_month = scan.group_by("month", "subject_pseudonym").agg(
        pl.len().alias("events"),
        (pl.col("care_type") == "consultation").sum().alias("consultations"),
        (pl.col("care_type") == "pharmacy").sum().alias("dispensations"),
        (pl.col("care_type") == "biology").sum().alias("lab_tests"),
        (pl.col("care_type") == "hospital_stay").sum().alias("hospital_stays"),
        pl.col("amount_eur").sum().round(2).alias("amount_eur"),
    )
    cohort = (
        scan.filter(pl.col("care_type") == "pharmacy")
        .group_by("subject_pseudonym")
        .agg(
            pl.col("event_date").min().alias("first_dispensation"),
            pl.col("event_date").max().alias("last_dispensation"),
            pl.len().alias("dispensations"),
            pl.col("month").n_unique().alias("months_with_dispensation"),
        )
        .filter(pl.col("months_with_dispensation") >= 6)
    )
    return {
        "care_consumption_per_subject_month": per_subject_month,
        "chronic_medication_cohort": cohort,
    }


def run_hand(data_dir: Path, rows: int, out: Path) -> dict:
    seconds, result_rows = {}, {}
    for name in MODELS:
        target = out / name
        target.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        scan = pl.scan_parquet(
            str(events_path(data_dir, rows) / "**" / "*.parquet"),
            hive_partitioning=True,
            hive_schema={"month": pl.String},  # a string, as the platform registers it
        )
        frame = hand_written(scan)[name].collect(engine="streaming")
        frame.write_parquet(target / "part-00000.parquet", statistics=True)
        seconds[name] = time.perf_counter() - t0
        result_rows[name] = frame.height
        del frame
    return {"startup": None, "seconds": seconds, "rows": result_rows}


def child(engine: str, rows: int, data_dir: Path) -> None:
    out = Path("/tmp") / "hdh-engines-results" / f"{engine}-{rows}"
    shutil.rmtree(out, ignore_errors=True)
    try:
        if engine == "hand":
            report = run_hand(data_dir, rows, out)
        else:
            report = run_platform(engine, data_dir, rows, out)
    except BaseException as error:  # MemoryError and engine errors alike: report, do not crash
        traceback.print_exc()
        report = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(RESULT_PREFIX + json.dumps(report), flush=True)


# --- measuring (in the parent) ---------------------------------------------------------------


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_info().rss
    return total


def stop_tree(process: psutil.Process) -> None:
    """Stop the child and its descendants (the JVM), each by its own pid."""
    try:
        procs = [*process.children(recursive=True), process]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(procs, timeout=10)


def measure(
    engine: str, rows: int, data_dir: Path, cluster: LocalSparkCluster | None = None
) -> dict:
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out_log, err_log = logs / f"{engine}-{rows}.out", logs / f"{engine}-{rows}.err"
    command = [sys.executable, __file__, "--child", engine, str(rows), "--data-dir", str(data_dir)]
    cap = int(psutil.virtual_memory().total * MEMORY_CAP)
    peak, capped = 0, False
    t0 = time.perf_counter()
    with open(out_log, "w") as out, open(err_log, "w") as err:
        env = dict(os.environ)
        if cluster is not None:
            env["HDH_SPARK_MASTER"] = cluster.master_url
            env["HDH_SPARK_EXECUTOR_MEMORY"] = CLUSTER_EXECUTOR_MEMORY
        popen = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT, env=env)
        process = psutil.Process(popen.pid)
        # On the cluster the executors are children of the worker daemons, not of the driver.
        daemons = cluster.pids() if cluster else {}
        workers = [
            psutil.Process(pid) for name, pid in daemons.items() if name.startswith("worker")
        ]
        while popen.poll() is None:
            executors = sum(tree_rss(e) for worker in workers for e in _children(worker))
            peak = max(peak, tree_rss(process) + executors)
            if peak > cap:
                capped = True
                stop_tree(process)
                break
            time.sleep(SAMPLE_SECONDS)
        popen.wait()
    wall = time.perf_counter() - t0
    lines = [line for line in out_log.read_text().splitlines() if line.startswith(RESULT_PREFIX)]
    report = json.loads(lines[-1][len(RESULT_PREFIX) :]) if lines else {}
    if capped:
        report = {"error": f"stopped: process tree above {cap / 2**30:.0f} GiB (out of memory)"}
    elif not lines:
        code = popen.returncode
        why = "killed (SIGKILL: out of memory?)" if code == -9 else f"exit code {code}"
        report = {"error": f"{why}; see {err_log}"}
    report.update(peak_rss=peak, process_wall=wall, log=str(err_log))
    return report


def _children(process: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return process.children()
    return []


# --- printing --------------------------------------------------------------------------------


def _seconds(report: dict) -> float | None:
    return sum(report["seconds"].values()) if "seconds" in report else None


def print_size(rows: int, generation: float, reused: bool, reports: dict[str, dict]) -> None:
    made = "reused from disk" if reused else f"generated in {generation:.1f} s (not timed below)"
    people = people_for(rows)
    print(f"\n=== {rows:,} claims events, {people:,} people, 24 month folders; data {made} ===")
    header = (
        f"{'engine':<22} {'engine s':>9} {'rows/s':>12} {'peak RSS':>10} {'time/hand':>10} "
        f"{'RSS/hand':>9} {'start-up s':>10}  {'per model s':<34} result rows"
    )
    print(header)
    print("-" * len(header))
    hand = reports.get("hand", {})
    hand_s, hand_rss = _seconds(hand), hand.get("peak_rss")
    for engine, report in reports.items():
        seconds = _seconds(report)
        rss = f"{report['peak_rss'] / 2**20:,.0f} MB"
        if seconds is None:
            print(f"{LABELS[engine]:<22} {'FAILED':>9} {'-':>12} {rss:>10}  {report['error']}")
            continue
        ratio = f"{seconds / hand_s:.2f}x" if hand_s else "-"
        rss_ratio = f"{report['peak_rss'] / hand_rss:.2f}x" if hand_s and hand_rss else "-"
        startup = f"{report['startup']:.1f}" if report.get("startup") is not None else "-"
        per_model = ", ".join(f"{SHORT[m]} {report['seconds'][m]:.2f}" for m in MODELS)
        result_rows = " / ".join(f"{report['rows'][m]:,}" for m in MODELS)
        print(
            f"{LABELS[engine]:<22} {seconds:>9.2f} {rows / seconds:>12,.0f} {rss:>10} {ratio:>10} "
            f"{rss_ratio:>9} {startup:>10}  {per_model:<34} {result_rows}"
        )
    check_rows(rows, reports)
    print(crossover(rows, reports))
    if "cluster" in reports:
        print(cluster_versus_local(rows, reports))


def check_rows(rows: int, reports: dict[str, dict]) -> None:
    done = {e: r["rows"] for e, r in reports.items() if "rows" in r}
    for model in MODELS:
        counts = {e: r[model] for e, r in done.items()}
        if len(set(counts.values())) > 1:
            print(f"!!! MISMATCH at {rows:,} rows, {model}: {counts} !!!")


def crossover(rows: int, reports: dict[str, dict]) -> str:
    polars_s, spark_s = _seconds(reports["polars"]), _seconds(reports["spark"])
    hand_s = _seconds(reports["hand"])
    label = f"crossover @ {rows:,}:"
    if polars_s is None and spark_s is None:
        return f"{label} both platform engines failed"
    if polars_s is None:
        return f"{label} only Spark completed ({spark_s:.1f} s); polars SQL failed"
    if spark_s is None:
        return f"{label} only polars SQL completed ({polars_s:.1f} s); Spark failed"
    startup = reports["spark"]["startup"]
    if polars_s <= spark_s:
        verdict = f"polars SQL faster than Spark by {spark_s / polars_s:.1f}x"
    else:
        verdict = f"Spark faster than polars SQL by {polars_s / spark_s:.1f}x"
    with_startup = "Spark wins" if spark_s + startup < polars_s else "polars wins"
    best = f"; hand-written polars {hand_s:.1f} s" if hand_s is not None else ""
    return (
        f"{label} {verdict} ({polars_s:.1f} s vs {spark_s:.1f} s{best}); counting Spark's "
        f"{startup:.0f} s session start-up, {with_startup}"
    )


def cluster_versus_local(rows: int, reports: dict[str, dict]) -> str:
    local_s, cluster_s = _seconds(reports["spark"]), _seconds(reports["cluster"])
    if local_s is None or cluster_s is None:
        return f"cluster @ {rows:,}: a Spark run failed, no ratio"
    return (
        f"cluster @ {rows:,}: standalone cluster {cluster_s:.1f} s vs local[*] {local_s:.1f} s "
        f"({cluster_s / local_s:.2f}x the local time on the same cores: what a cluster costs "
        "before it adds machines)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,10000000,100000000")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/hdh-engines"))
    parser.add_argument(
        "--cluster", action="store_true", help="also run Spark on a local standalone cluster"
    )
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    if args.child:
        child(args.child[0], int(args.child[1]), data_dir)
        return
    sizes = [int(s.replace("_", "")) for s in args.rows.split(",") if s.strip()]
    data_dir.mkdir(parents=True, exist_ok=True)
    memory = psutil.virtual_memory().total / 2**30
    print(
        f"{os.cpu_count()} cores, {memory:.0f} GiB RAM; polars {pl.__version__}; Spark "
        f"{spark_config()['spark.master']} with driver memory {SPARK_DRIVER_MEMORY}, "
        f"{spark_config()['spark.sql.shuffle.partitions']} shuffle partitions"
    )
    print(
        "engine s = register lake table + run both models + write results to Parquet "
        "(Spark session start-up excluded, shown apart); rows/s = input events / engine s; "
        "peak RSS = whole child process tree (incl. Spark's JVM), sampled every 0.2 s"
    )
    engines = (*ENGINES, "cluster") if args.cluster else ENGINES
    with contextlib.ExitStack() as stack:
        cluster = None
        if args.cluster:
            cluster = stack.enter_context(
                LocalSparkCluster(
                    data_dir / "cluster",
                    workers=CLUSTER_WORKERS,
                    cores_per_worker=max(1, (os.cpu_count() or 2) // CLUSTER_WORKERS),
                    memory_per_worker=CLUSTER_WORKER_MEMORY,
                )
            )
            print(
                f"cluster {cluster.master_url}: {CLUSTER_WORKERS} workers of "
                f"{CLUSTER_WORKER_MEMORY}, executors of {CLUSTER_EXECUTOR_MEMORY} (on this machine)"
            )
        for rows in sizes:
            print(f"\npreparing {rows:,} rows under {size_root(data_dir, rows)}", flush=True)
            generation, reused = ensure_data(data_dir, rows)
            reports = {}
            for engine in engines:
                print(f"  running {LABELS[engine]} ...", flush=True)
                reports[engine] = measure(
                    engine, rows, data_dir, cluster if engine == "cluster" else None
                )
            print_size(rows, generation, reused, reports)
            sys.stdout.flush()


if __name__ == "__main__":
    main()
