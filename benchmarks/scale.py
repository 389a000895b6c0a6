"""Claims at scale: a billion-row extract generated month by month, ``claims/events`` materialised
over all its months on a Spark standalone cluster through Dagster, then one data product over it;
rows/s, time per monthly partition, the peak RSS of every process, and a 16-node extrapolation.

    .venv/bin/python benchmarks/scale.py [--rows 1000000000] [--months 24] [--people N]
        [--workers 2] [--months-per-run 0] [--work-dir DIR] [--keep]

What runs, in order:

1. ``synthetic.claims.write_claims`` writes the extract under ``<work-dir>/hdh/landing/claims/
   scale/`` (one file per month and chunk, sorted by date; timed: generation rows/s, disk size).
2. ``LocalSparkCluster`` starts a master and ``--workers`` workers (``--cores-per-worker``,
   ``--memory-per-worker``); the platform's ``pyspark`` resource reaches it through
   ``HDH_SPARK_MASTER`` as in production (``resources.spark.SparkSettings``).
3. ``dg.materialize`` runs ``claims/events`` (the real asset, the lake IO manager, its schema
   check) over every month the extract can touch (its raw months widened by the maximum date
   shift): one run for all (``--months-per-run 0``, the default, as ``HDH_CLAIMS_MONTHS_PER_RUN``)
   or runs of N months. A first run over a month without data starts the Spark session; a second
   one measures what a run costs with nothing to read (Dagster, Spark jobs, the driver).
4. ``products/care_consumption_per_subject_month`` (``dbt_like_sql/claims/``, Spark) runs over the
   same months, reading ``claims/events`` from the lake.

A thread samples every 0.5 s the RSS of this process (the Python driver), of its children (the
driver JVM), of the master, of each worker and of their children (the executor JVMs), and keeps
each one's peak. The 16-node figure scales the measured per-partition time, less the fixed
per-run cost, by the ratio of cores (``--node-cores`` per node); it says what would limit it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psutil
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.claims_generator import peak_rss_mb
from hdh_assets.automation import claims_month_span, clamp
from hdh_assets.claims.assets import MONTHS, claims_events
from hdh_assets.claims.events import claims_files, files_for_window
from hdh_assets.landing.batches import landing_batch
from hdh_cli.spark_cluster import LocalSparkCluster
from resources.home import HdhHome
from resources.pseudonymisation import PseudonymisationKeyResource
from synthetic.claims import DEFAULT_CHUNK_ROWS, write_claims
from synthetic.people import make_population

SAMPLE_SECONDS = 0.5
MEMORY_GOAL = 4 * 2**30  # no process above 4 GB
BATCH = "scale"
PRODUCT = dg.AssetKey(["products", "care_consumption_per_subject_month"])
KEY = "5ca1e" * 12 + "abcd"  # a fixed test key: no demo-key file, the same pseudonyms each run
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


# --- memory of every process -----------------------------------------------------------------


ROLES = (  # command-line marks of each kind of process: the JVMs all look alike by name
    ("CoarseGrainedExecutorBackend", "executor JVM"),
    ("deploy.master.Master", "Spark master"),
    ("deploy.worker.Worker", "Spark worker"),
    ("SparkSubmit", "driver JVM"),
    ("pyspark.daemon", "Python worker"),
    ("pyspark/worker", "Python worker"),
)


def role(process: psutil.Process) -> str | None:
    """What a process is, from its command line (None when it says nothing, or has gone)."""
    with contextlib.suppress(psutil.Error):
        line = " ".join(process.cmdline())
        for mark, name in ROLES:
            if mark in line:
                return name
    return None


def _is_fork(process: psutil.Process) -> bool:
    """A JVM forking a helper (the executor starting Python workers) shows, until the child
    execs, a copy with the parent's command line and its shared pages: not a process of its own."""
    parent = process.parent()
    return parent is not None and parent.cmdline() == process.cmdline()


@dataclass
class Peak:
    label: str
    rss: int = 0
    phase: str = ""


@dataclass
class MemorySampler:
    """Samples the RSS of named root processes and all their descendants every 0.5 s."""

    roots: dict[str, int] = field(default_factory=dict)
    phase: str = "start"
    peaks: dict[int, Peak] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def sample(self) -> None:
        named = {pid: name for name, pid in self.roots.items()}
        for root, pid in list(self.roots.items()):
            with contextlib.suppress(psutil.Error):
                top = psutil.Process(pid)
                for process in [top, *top.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        if _is_fork(process):
                            continue
                        rss = process.memory_info().rss
                        peak = self.peaks.setdefault(process.pid, Peak(f"{root} child"))
                        # a cluster daemon is named once its pid is known; a process that
                        # is exiting keeps the name it had
                        peak.label = named.get(process.pid) or role(process) or peak.label
                        if rss > peak.rss:
                            peak.rss, peak.phase = rss, self.phase

    def report(self) -> list[tuple[str, int, Peak]]:
        """(label, pid, peak) of every process seen, largest first; short-lived helpers
        (under 50 MB: the launch scripts) are left out."""
        rows = [(p.label, pid, p) for pid, p in self.peaks.items() if p.rss >= 50 * 2**20]
        return sorted(rows, key=lambda row: -row[2].rss)


# --- the steps -------------------------------------------------------------------------------


def default_people(rows: int) -> int:
    """200 000 people at a billion rows (5 000 events each); at least 1 000."""
    return max(1_000, min(rows // 5_000, 200_000))


def generate(home: HdhHome, args: argparse.Namespace) -> dict:
    people = make_population(args.people, seed=1)
    t0 = time.perf_counter()
    done = [0]

    def progress(rows: int) -> None:
        done[0] += rows
        if done[0] // args.progress_every != (done[0] - rows) // args.progress_every:
            rate = done[0] / (time.perf_counter() - t0)
            print(f"  generated {done[0]:>14,} / {args.rows:,} rows ({rate:,.0f} rows/s)")

    with landing_batch(home.landing / "claims", BATCH) as folder:
        names = write_claims(
            people,
            args.rows,
            folder,
            seed=1,
            chunk_rows=args.chunk_rows,
            on_chunk=progress,
            months=args.months,
        )
    seconds = time.perf_counter() - t0
    folder = home.landing / "claims" / BATCH
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return {"seconds": seconds, "files": len(names), "bytes": size, "rss_mb": peak_rss_mb()}


def month_keys(home: HdhHome, max_shift_days: int) -> list[str]:
    span = claims_month_span(home.landing / "claims" / BATCH, max_shift_days)
    first, last = clamp(MONTHS, span)
    return [k for k in MONTHS.get_partition_keys() if first <= k <= last]


def groups_of(keys: list[str], per_run: int) -> list[list[str]]:
    """Runs as Dagster's backfill cuts them: all in one, or ``per_run`` months each."""
    if per_run <= 0:
        return [keys]
    return [keys[i : i + per_run] for i in range(0, len(keys), per_run)]


def _materialize(assets, resources, first: str, last: str, selection=None, passes=None) -> float:
    """Seconds of one range run; ``passes`` (a dict) receives where claims/events spent them."""
    t0 = time.perf_counter()
    result = dg.materialize(
        assets,
        selection=selection,
        resources=resources,
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
        run_config=QUIET,
        raise_on_error=True,
    )
    assert result.success
    seconds = time.perf_counter() - t0
    if passes is not None:  # a range run: every partition's materialisation has the same figures
        metadata = result.get_asset_materialization_events()[0].materialization.metadata
        passes.update(metadata["seconds_by_pass"].value)
        passes["write"] = metadata["write_seconds"].value
    return seconds


def run_events(
    home: HdhHome, resources: dict, keys: list[str], args, sampler: MemorySampler
) -> dict:
    """The empty-month runs (session start, then the fixed cost of a run), then every group."""
    empty = MONTHS.get_partition_keys()[0]  # 2021-01: no raw date can shift into it
    sampler.phase = "spark session start"
    startup = _materialize([claims_events], resources, empty, empty)
    sampler.phase = "empty run"
    overhead = _materialize([claims_events], resources, empty, empty)
    files = claims_files(home.landing / "claims" / BATCH)
    runs = []
    for group in groups_of(keys, args.months_per_run):
        start = dt.date.fromisoformat(group[0])
        end = next_month(dt.date.fromisoformat(group[-1]))
        wanted = files_for_window(files, start, end, args.max_shift_days)
        sampler.phase = f"claims/events {group[0][:7]}..{group[-1][:7]}"
        passes: dict = {}
        seconds = _materialize([claims_events], resources, group[0], group[-1], passes=passes)
        runs.append(
            {
                "passes": passes,
                "first": group[0],
                "months": len(group),
                "seconds": seconds,
                "rows_read": sum(f.rows for f in wanted),
                "bytes_read": sum(f.path.stat().st_size for f in wanted),
            }
        )
        print(
            f"  claims/events {group[0][:7]} .. {group[-1][:7]}: {seconds:7.1f} s "
            f"({seconds / len(group):.1f} s per month, files read hold "
            f"{runs[-1]['rows_read']:,} raw rows)"
        )
    return {"startup": startup, "overhead": overhead, "runs": runs}


def run_product(resources: dict, keys: list[str], sampler: MemorySampler) -> float:
    from hdh_assets.definitions import SOURCE_ASSETS
    from hdh_assets.products.assets import load_products
    from hdh_assets.products.models import sql_dir_from_env

    products = load_products(sql_dir_from_env(), SOURCE_ASSETS)
    sampler.phase = "product"
    return _materialize(
        [*SOURCE_ASSETS, *products],
        resources,
        keys[0],
        keys[-1],
        selection=dg.AssetSelection.assets(PRODUCT),
    )


def next_month(day: dt.date) -> dt.date:
    return (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)


def lake_rows(home: HdhHome, table: list[str]) -> int:
    import pyarrow.parquet as pq

    folder = home.lake.joinpath(*table)
    return sum(pq.read_metadata(p).num_rows for p in folder.rglob("*.parquet"))


# --- the report ------------------------------------------------------------------------------


def gb(value: float) -> str:
    return f"{value / 2**30:.2f} GB" if value >= 2**30 else f"{value / 2**20:,.0f} MB"


def extrapolate(events: dict, args, total_rows: int) -> list[str]:
    """Per-partition time on 16 nodes: the fixed per-run cost stays, the rest scales with cores;
    the sentence names which of driver, storage and shuffle would bound it."""
    runs = events["runs"]
    overhead = events["overhead"]
    cores_here = args.workers * args.cores_per_worker
    cores_there = 16 * args.node_cores
    per_month = [r["seconds"] / r["months"] for r in runs]
    median = statistics.median(per_month)
    months = sum(r["months"] for r in runs)
    parallel = sum(max(r["seconds"] - overhead, 0.0) for r in runs)
    scaled = len(runs) * overhead + parallel * cores_here / cores_there
    bytes_read = sum(r["bytes_read"] for r in runs)
    bandwidth = bytes_read / scaled if scaled else 0.0
    fixed_share = len(runs) * overhead / scaled if scaled else 0.0
    lines = [
        f"16 nodes x {args.node_cores} cores ({cores_there} cores vs {cores_here} here): "
        f"~{scaled / months:.1f} s per monthly partition (median here {median:.1f} s), "
        f"~{scaled / 60:.1f} min for the {months} months ({total_rows / scaled:,.0f} rows/s), "
        f"reading {gb(bandwidth)}/s from storage."
    ]
    if fixed_share > 0.5:
        why = (
            f"the fixed cost of a run ({overhead:.1f} s: Dagster, Spark job scheduling, the "
            f"driver's distinct-NIR mapping) is {fixed_share:.0%} of it: the driver, not the "
            "executors, limits it; fewer, larger runs (HDH_CLAIMS_MONTHS_PER_RUN) help"
        )
    elif bandwidth > 16 * 0.5 * 2**30:
        why = (
            f"{gb(bandwidth)}/s is more than 16 nodes usually read from shared storage "
            "(~0.5 GB/s each): storage bandwidth limits it"
        )
    else:
        why = (
            "the scan and pseudonymisation scale with cores (the NIR join is a broadcast, "
            "no shuffle); what remains is the small shuffle of the distinct-subject count and the "
            "partitioned write, then storage bandwidth"
        )
    amplification = sum(r["rows_read"] for r in runs) / max(total_rows, 1)
    lines.append(
        f"Limit: {why}. Raw rows in the files read / landed: {amplification:.1f}x "
        "(the date shift widens each run's window)."
    )
    return lines


def print_report(args, generation: dict, events: dict, product: float, home, sampler) -> None:
    runs = events["runs"]
    total = sum(r["seconds"] for r in runs)
    per_month = [r["seconds"] / r["months"] for r in runs]
    months = sum(r["months"] for r in runs)
    events_rows = lake_rows(home, ["claims", "events"])
    print(f"\n=== {args.rows:,} claims rows, {args.months} months, {args.people:,} people ===")
    print(
        f"generation      : {args.rows / generation['seconds']:,.0f} rows/s "
        f"({generation['seconds']:.1f} s), {generation['files']:,} files, "
        f"{gb(generation['bytes'])} on disk, generator peak RSS {generation['rss_mb']:,.0f} MB"
    )
    print(
        f"spark cluster   : {args.workers} workers x {args.cores_per_worker} core(s), "
        f"{args.memory_per_worker} each; session start {events['startup']:.1f} s; "
        f"a run with nothing to read {events['overhead']:.1f} s"
    )
    print(
        f"claims/events   : {months} monthly partitions in {len(runs)} run(s), {total:.1f} s, "
        f"{args.rows / total:,.0f} landed rows/s, {events_rows:,} events written"
    )
    print(
        f"per partition   : min {min(per_month):.1f} s, median "
        f"{statistics.median(per_month):.1f} s, max {max(per_month):.1f} s"
        + ("  (one run: its time / months)" if len(runs) == 1 else "")
    )
    print(
        f"data product    : {PRODUCT.to_user_string()} over the {months} months in "
        f"{product:.1f} s ({events_rows / product:,.0f} event rows/s)"
    )
    spent: dict = {}
    for run in runs:
        for name, value in run["passes"].items():
            spent[name] = spent.get(name, 0.0) + value
    print(
        "where it went    : "
        + ", ".join(f"{name} {value:.0f} s ({value / total:.0%})" for name, value in spent.items())
        + f", the rest (Dagster, reading footers, the run's start) {total - sum(spent.values()):.0f} s"
    )
    for line in extrapolate(events, args, args.rows):
        print(f"extrapolation   : {line}")
    print("\npeak RSS by process (sampled every 0.5 s):")
    report = sampler.report()
    for label, pid, peak in report:
        print(f"  {label:<22} pid {pid:<8} {gb(peak.rss):>10}  during {peak.phase}")
    worst = max((p.rss for _, _, p in report), default=0)
    verdict = "yes" if worst <= MEMORY_GOAL else "NO"
    print(f"no process above 4 GB: {verdict} (largest {gb(worst)})")


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000_000)
    parser.add_argument("--months", type=int, default=24, help="months of raw event dates")
    parser.add_argument("--people", type=int, default=None, help="default: rows / 5000, 1k-200k")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores-per-worker", type=int, default=1)
    parser.add_argument("--memory-per-worker", default="2g", help="also the executor memory")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument(
        "--months-per-run", type=int, default=0, help="0: all months in one run (default)"
    )
    parser.add_argument("--max-shift-days", type=int, default=365, help="the platform's default")
    parser.add_argument("--node-cores", type=int, default=8, help="cores per node, extrapolation")
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the work dir afterwards")
    args = parser.parse_args(argv)
    args.people = args.people or default_people(args.rows)
    args.progress_every = max(args.rows // 20, 1)
    return args


def quiet_spark_console(folder: Path) -> None:
    """No stage progress bars in the figures: a ``spark-defaults.conf`` the driver reads."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spark-defaults.conf").write_text("spark.ui.showConsoleProgress false\n")
    os.environ["SPARK_CONF_DIR"] = str(folder)


def configure(home: HdhHome, cluster: LocalSparkCluster, args) -> dict:
    """The platform's resources, with Spark pointed at the cluster by its settings."""
    os.environ.update(
        {
            "HDH_HOME": str(home.root),
            "DAGSTER_HOME": str(home.dagster_home),
            "HDH_PSEUDONYM_KEY": KEY,
            "HDH_SPARK_MASTER": cluster.master_url,
            "HDH_SPARK_DRIVER_HOST": "127.0.0.1",
            "HDH_SPARK_DRIVER_MEMORY": args.driver_memory,
            "HDH_SPARK_EXECUTOR_MEMORY": args.memory_per_worker,
            "HDH_SPARK_EXECUTOR_CORES": str(args.cores_per_worker),
        }
    )
    os.environ.pop("HDH_SPARK_REMOTE", None)
    from hdh_assets.definitions import build_resources

    return {
        **build_resources(home),
        "pseudonymisation": PseudonymisationKeyResource(max_date_shift_days=args.max_shift_days),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="hdh-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    home = HdhHome(work / "hdh").ensure()
    # shuffle and cache files of the executors go to the work dir, not /tmp
    os.environ["SPARK_LOCAL_DIRS"] = str(work / "spark-local")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    quiet_spark_console(work / "spark-conf")
    print(f"work dir: {work}")
    sampler = MemorySampler(roots={"Python driver": os.getpid()})
    try:
        with sampler:
            sampler.phase = "generation"
            generation = generate(home, args)
            keys = month_keys(home, args.max_shift_days)
            print(f"  {len(keys)} monthly partitions: {keys[0][:7]} .. {keys[-1][:7]}")
            sampler.phase = "cluster start"
            with LocalSparkCluster(
                work / "spark",
                workers=args.workers,
                cores_per_worker=args.cores_per_worker,
                memory_per_worker=args.memory_per_worker,
            ) as cluster:
                sampler.roots.update(cluster.pids())
                resources = configure(home, cluster, args)
                events = run_events(home, resources, keys, args, sampler)
                product = run_product(resources, keys, sampler)
                from pyspark.sql import SparkSession

                session = SparkSession.getActiveSession()
                if session is not None:
                    session.stop()
        print_report(args, generation, events, product, home, sampler)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
