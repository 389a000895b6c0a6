"""The DICOMweb service against Orthanc (the reference server), on the same files, in one run.

``--instances`` instances are indexed the platform's way: pydicom's test files (many transfer
syntaxes, multi-frame, colour, SEG, SR and RT objects; at most a quarter of the instances, so small
runs take an even selection of them) and the synthetic generator's CT and MR
deliveries (burned-in studies and malformed files included, as real deliveries hold them) go
through the ingestion core, and each batch's index is written where the lake keeps it. Orthanc
(Debian's, DICOMweb plugin, default settings, SQLite index) then receives the pseudonymised files
of the store over its REST API, so both servers hold the same instances.

Both are asked over HTTP on the loopback by the same client (httpx, keep-alive), which runs in
a process of its own so it never shares an interpreter with our service (uvicorn in a thread of
this process); each request goes to ours then to Orthanc, so background load hits both alike.
Warm-up requests are excluded. Measured: QIDO study searches (a first page, and one filtered on
modality and a date range), series metadata, and ``/frames/1`` of many instances as stored
(``transfer-syntax=*``; Explicit VR Big Endian files as Little Endian, which both serve). The
CPU time each server's process uses is read from /proc around each operation's timed requests,
a figure background load on the machine disturbs less than latency.

    .venv/bin/python benchmarks/dicomweb.py [--instances 10000] [--requests 200] [--frames 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import warnings
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")  # pydicom on pydicom's deliberately odd files, pyspark on pandas

import httpx  # noqa: E402
import polars as pl  # noqa: E402
import pydicom  # noqa: E402
import pydicom.data  # noqa: E402

from dicomweb.app import create_app  # noqa: E402
from dicomweb.media import EXPLICIT_BE, EXPLICIT_LE  # noqa: E402
from dicomweb.tokens import Tokens  # noqa: E402
from resources.home import HdhHome  # noqa: E402
from synthetic.sample import SampleConfig, generate_sample  # noqa: E402
from tests.dicomweb.conftest import (  # noqa: E402
    CORPUS,
    SAMPLE,
    TOKEN_KEY,
    Store,
    ingest,
    write_native_multiframes,
)
from tests.dicomweb.servers import MISSING, missing_orthanc, start_orthanc, start_service  # noqa: E402

SEARCH_P95_GOAL_MS = 50.0
PAGE = 100
FILTER = {"ModalitiesInStudy": "MR", "StudyDate": "20190101-20241231"}
JSON = {"Accept": "application/dicom+json"}
AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
AS_LITTLE_ENDIAN = (
    f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_LE}'
)
INSTANCES_PER_PERSON = 3.4  # what the generator delivers per person, burned-in studies included
SYNTAX_NAMES = {
    "1.2.840.10008.1.2": "implicit LE",
    "1.2.840.10008.1.2.1": "explicit LE",
    "1.2.840.10008.1.2.2": "explicit BE",
    "1.2.840.10008.1.2.1.99": "deflated",
    "1.2.840.10008.1.2.5": "RLE",
    "1.2.840.10008.1.2.4.50": "JPEG baseline",
    "1.2.840.10008.1.2.4.51": "JPEG extended",
    "1.2.840.10008.1.2.4.57": "JPEG lossless",
    "1.2.840.10008.1.2.4.70": "JPEG lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS near-lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.4.201": "HTJ2K lossless",
    "1.2.840.10008.1.2.4.202": "HTJ2K lossless RPCL",
    "1.2.840.10008.1.2.4.203": "HTJ2K",
}


# --- the corpus --------------------------------------------------------------------------------


def pydicom_corpus(folder: Path, share: int) -> int:
    """pydicom's test files (at most ``share``, evenly spread) and the decompressed multi-frame
    copies the tests add; the number of files written."""
    folder.mkdir(parents=True)
    paths = [Path(p) for p in sorted(pydicom.data.get_testdata_files()) if Path(p).is_file()]
    step = max(1, -(-len(paths) // max(share, 1)))
    for number, path in enumerate(paths[::step]):
        shutil.copyfile(path, folder / f"{number:03d}-{path.name}")
    write_native_multiframes(folder)
    return sum(1 for _ in folder.iterdir())


def synthetic_delivery(root: Path, wanted: int) -> tuple[Path, int, int]:
    """A generated DICOM delivery holding ``wanted`` files that ingestion will index (the
    generator's malformed files and burned-in studies come along and are quarantined); the
    batch folder, the files delivered and the files quarantined by design."""
    people = max(10, int(wanted / INSTANCES_PER_PERSON * 1.15) + 10)
    while True:
        generate_sample(
            root / "landing",
            root / "sample",
            SampleConfig(seed=5, people=people, claims_rows=10),
        )
        (batch,) = (root / "landing" / "dicom").iterdir()
        kept, dropped = _trim(batch, wanted)
        if kept >= wanted:
            return batch, kept + dropped, dropped
        shutil.rmtree(root / "landing")
        shutil.rmtree(root / "sample", ignore_errors=True)
        people = int(people * 1.3) + 10


def _trim(batch: Path, wanted: int) -> tuple[int, int]:
    """Keep the first studies (in path order) until ``wanted`` indexable files; remove the rest.
    The number of indexable files kept, and of files kept that ingestion will refuse."""
    indexable, refused = 0, 0
    for study in sorted(p for p in batch.glob("P*/ST*") if p.is_dir()):
        files = sorted(p for p in study.rglob("*") if p.is_file())
        if indexable >= wanted:
            shutil.rmtree(study)
            continue
        burned = pydicom.dcmread(files[0], stop_before_pixels=True).get("BurnedInAnnotation")
        if burned == "YES":
            refused += len(files)
            continue
        for path in files:
            if indexable < wanted:
                indexable += 1
            else:
                path.unlink()
    misc = batch / "misc"
    refused += sum(1 for p in misc.iterdir() if p.is_file()) if misc.exists() else 0
    for person in batch.glob("P*"):
        if person.is_dir() and not any(person.iterdir()):
            person.rmdir()
    return indexable, refused


# --- the measurements (in a process of their own) ----------------------------------------------


def _time(client: httpx.Client, path: str, headers: dict) -> tuple[float, int, int]:
    started = time.perf_counter()
    response = client.get(path, headers=headers)
    elapsed = time.perf_counter() - started
    return elapsed, response.status_code, len(response.content)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    bases: dict[str, str], headers: dict[str, dict], pids: dict[str, int], plan: dict
) -> dict:
    """For each operation of ``plan`` ((path, accept) pairs for warm-up, then timed), the
    seconds, statuses and body sizes of each server's answers, and the CPU time each server's
    process used over the timed requests."""
    clients = {
        name: httpx.Client(base_url=base, headers=headers[name], timeout=120)
        for name, base in bases.items()
    }
    results: dict = {}
    try:
        for operation, (warmup, requests) in plan.items():
            for path, accept in warmup:
                for client in clients.values():
                    client.get(path, headers={"Accept": accept})
            timings = {name: [] for name in clients}
            cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            for path, accept in requests:
                for name, client in clients.items():
                    timings[name].append(_time(client, path, {"Accept": accept}))
            cpu = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
            results[operation] = {"timings": timings, "cpu": cpu}
    finally:
        for client in clients.values():
            client.close()
    return results


# --- reporting ---------------------------------------------------------------------------------


def percentile(values: list[float], q: int) -> float:
    ordered = sorted(values)
    return (
        statistics.quantiles(ordered, n=100, method="inclusive")[q - 1]
        if len(ordered) > 1
        else ordered[0]
    )


def summarise(timings: list[tuple[float, int, int]]) -> dict:
    seconds = [t for t, _, _ in timings]
    return {
        "p50": percentile(seconds, 50) * 1e3,
        "p95": percentile(seconds, 95) * 1e3,
        "errors": sum(1 for _, status, _ in timings if status != 200),
        "seconds": sum(seconds),
        "bytes": sum(size for _, status, size in timings if status == 200),
        "ok": sum(1 for _, status, _ in timings if status == 200),
    }


def composition(instances: pl.DataFrame, label: str) -> str:
    def counts(column: str, names: dict | None = None) -> str:
        grouped = instances.group_by(column).len().sort("len", descending=True)
        return ", ".join(
            f"{(names or {}).get(value, value) or 'none'} {count}"
            for value, count in grouped.iter_rows()
        )

    return (
        f"  {label}: {instances.height} instances, {instances['study_instance_uid'].n_unique()} "
        f"studies, {instances['series_instance_uid'].n_unique()} series, "
        f"{instances['file_bytes'].sum() / 1e6:.1f} MB\n"
        f"    modalities: {counts('modality')}\n"
        f"    transfer syntaxes: {counts('transfer_syntax_uid', SYNTAX_NAMES)}"
    )


def machine() -> str:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"machine: {os.cpu_count()} cores ({model or platform.processor()}), load average {load}"


# --- the run -----------------------------------------------------------------------------------


def plan_requests(store: Store, args: argparse.Namespace) -> dict[str, tuple[list, list]]:
    rng = random.Random(11)
    instances = store.instances
    warm, count = args.warmup, args.requests

    first_page = f"/studies?limit={PAGE}"
    filtered = "/studies?" + "&".join(f"{k}={v}" for k, v in FILTER.items()) + f"&limit={PAGE}"
    json = JSON["Accept"]

    series = (
        instances.select("study_instance_uid", "series_instance_uid")
        .unique()
        .sort("series_instance_uid")
    )
    rows = list(series.iter_rows())
    picked = [rng.choice(rows) for _ in range(warm + count)]
    metadata = [(f"/studies/{s}/series/{se}/metadata", json) for s, se in picked]

    with_pixels = list(
        instances.filter(pl.col("rows").is_not_null() & pl.col("number_of_frames").is_not_null())
        .sort("sop_instance_uid")
        .select(
            "study_instance_uid", "series_instance_uid", "sop_instance_uid", "transfer_syntax_uid"
        )
        .iter_rows()
    )
    rng.shuffle(with_pixels)
    frame_rows = with_pixels[: warm + args.frames]
    frames = [
        (
            f"/studies/{s}/series/{se}/instances/{sop}/frames/1",
            AS_LITTLE_ENDIAN if syntax == EXPLICIT_BE else AS_STORED,
        )
        for s, se, sop, syntax in frame_rows
    ]
    return {
        f"QIDO /studies?limit={PAGE}": (
            [(first_page, json)] * warm,
            [(first_page, json)] * count,
        ),
        "QIDO /studies MR, 2019-2024": ([(filtered, json)] * warm, [(filtered, json)] * count),
        "series metadata": (metadata[:warm], metadata[warm:]),
        "frames/1 as stored": (frames[:warm], frames[warm:]),
    }


def run(args: argparse.Namespace, root: Path) -> None:
    started = time.perf_counter()
    print(machine())
    missing = missing_orthanc()
    if missing:
        sys.exit(MISSING.format(", ".join(missing)))

    corpus_files = pydicom_corpus(root / "pydicom", max(1, args.instances // 4))
    home = HdhHome(root / "hdh").ensure()
    indexes = ingest(home, {CORPUS: root / "pydicom"})
    wanted = max(0, args.instances - indexes[CORPUS].height)
    generated = time.perf_counter()
    batch, delivered, refused = synthetic_delivery(root / "generated", wanted)
    generated = time.perf_counter() - generated
    ingested = time.perf_counter()
    indexes.update(ingest(home, {SAMPLE: batch}))
    ingested = time.perf_counter() - ingested
    store = Store(home, indexes)
    instances = store.instances
    files = store.files()
    print(
        f"corpus: {instances.height} indexed instances in {len(files)} stored files "
        f"({sum(p.stat().st_size for p in files) / 1e6:.0f} MB), "
        f"{instances['study_instance_uid'].n_unique()} studies, "
        f"{instances['series_instance_uid'].n_unique()} series"
    )
    print(
        composition(
            indexes[CORPUS],
            f"pydicom test files ({corpus_files} delivered, decompressed multi-frame copies included)",
        )
    )
    print(
        composition(
            indexes[SAMPLE],
            f"synthetic CT/MR delivery ({delivered} files delivered: {refused} burned-in or "
            f"malformed, quarantined; generated in {generated:.0f} s, ingested in {ingested:.0f} s)",
        )
    )

    tokens = Tokens(TOKEN_KEY)
    service = orthanc = None
    try:
        service = start_service(create_app(home, tokens))
        orthanc = start_orthanc(root / "orthanc")
        version = httpx.get(f"{orthanc.url}/system").json().get("Version", "?")
        uploading = time.perf_counter()
        uploaded = orthanc.upload(files)
        uploading = time.perf_counter() - uploading
        print(
            f"servers: ours (uvicorn, in a thread of pid {os.getpid()}) on port {service.port}; "
            f"Orthanc {version} (pid {orthanc.process.pid}, DICOMweb plugin) on port {orthanc.port}, "
            f"{uploaded}/{len(files)} files stored through its REST API in {uploading:.0f} s"
        )
        if uploaded != len(files):
            sys.exit(
                "Orthanc refused some of the stored files: the servers would not hold the same data"
            )

        plan = plan_requests(store, args)
        bases = {"ours": service.dicomweb, "orthanc": orthanc.dicomweb}
        pids = {"ours": os.getpid(), "orthanc": orthanc.process.pid}
        headers = {"ours": {"Authorization": f"Bearer {tokens.issue(None, 3600)}"}, "orthanc": {}}
        print(
            f"client: httpx {httpx.__version__} in a separate process, sequential, keep-alive; "
            f"{args.warmup} warm-up requests per operation and server excluded; "
            f"{args.requests} requests per search and metadata, {len(plan['frames/1 as stored'][1])} frame requests"
        )
        measuring = time.perf_counter()
        with get_context("spawn").Pool(1) as pool:  # terminated on leaving, even on error
            results = pool.apply(measure, (bases, headers, pids, plan))
        measuring = time.perf_counter() - measuring
        answers = search_answers(bases, headers, plan)
    finally:
        if orthanc is not None:
            orthanc.stop()
        if service is not None:
            service.stop()

    print(answers)
    report(results, measuring, time.perf_counter() - started)


def search_answers(bases: dict[str, str], headers: dict[str, dict], plan: dict) -> str:
    """How many studies each search returned on each server (they should agree)."""
    parts = []
    for operation, (_, requests) in plan.items():
        if operation.startswith("QIDO"):
            path, accept = requests[0]
            found = {
                name: len(
                    httpx.get(base + path, headers={**headers[name], "Accept": accept}).json()
                )
                for name, base in bases.items()
            }
            parts.append(f"{operation}: ours {found['ours']}, Orthanc {found['orthanc']}")
    return "studies returned: " + "; ".join(parts)


def report(results: dict, measuring: float, total: float) -> None:
    print()
    print(
        f"{'operation':28} {'ours p50/p95 ms':>17} {'Orthanc p50/p95 ms':>19} "
        f"{'ratio p50/p95':>14} {'server CPU ms/req ours/Orthanc':>31}"
    )
    summaries = {}
    for operation, measured in results.items():
        timings, cpu = measured["timings"], measured["cpu"]
        ours, theirs = summarise(timings["ours"]), summarise(timings["orthanc"])
        summaries[operation] = ours, theirs
        count = len(timings["ours"])
        print(
            f"{operation:28} {ours['p50']:8.1f} /{ours['p95']:7.1f} "
            f"{theirs['p50']:10.1f} /{theirs['p95']:7.1f} "
            f"{ours['p50'] / theirs['p50']:7.2f} /{ours['p95'] / theirs['p95']:5.2f} "
            f"{cpu['ours'] / count * 1e3:22.1f} /{cpu['orthanc'] / count * 1e3:7.1f}"
        )
    ours, theirs = summaries["frames/1 as stored"]
    print()
    for name, figures in (("ours", ours), ("Orthanc", theirs)):
        print(
            f"frames/1 throughput {name:8}: {figures['ok'] / figures['seconds']:7.0f} frames/s, "
            f"{figures['bytes'] / 1e6 / figures['seconds']:6.1f} MB/s "
            f"({figures['ok']} frames, {figures['bytes'] / 1e6:.2f} MB of response bodies, {figures['seconds']:.1f} s)"
        )
    print(
        f"frames/1 throughput ratio ours/Orthanc: "
        f"{(ours['ok'] / ours['seconds']) / (theirs['ok'] / theirs['seconds']):.2f}"
    )
    errors = {
        f"{operation} ({name})": figures["errors"]
        for operation, pair in summaries.items()
        for name, figures in zip(("ours", "Orthanc"), pair, strict=True)
        if figures["errors"]
    }
    if errors:
        print(f"non-200 answers (left out of the sizes and throughput): {errors}")
    print(
        "ratio: ours / Orthanc (below 1: ours is faster); server CPU: user + system time of "
        "each server's process over the timed requests, per request"
    )
    print()
    search_p95 = max(summaries[op][0]["p95"] for op in summaries if op.startswith("QIDO /studies"))
    ours_meta, theirs_meta = summaries["series metadata"]
    print(
        f"study search p95 < {SEARCH_P95_GOAL_MS:.0f} ms: "
        f"{'yes' if search_p95 < SEARCH_P95_GOAL_MS else 'no'} (worst of the two searches: {search_p95:.1f} ms)"
    )
    faster = ours_meta["p50"] <= theirs_meta["p50"] and ours_meta["p95"] <= theirs_meta["p95"]
    print(
        f"metadata at least as fast as Orthanc: {'yes' if faster else 'no'} "
        f"(p50 {ours_meta['p50']:.1f} vs {theirs_meta['p50']:.1f} ms, "
        f"p95 {ours_meta['p95']:.1f} vs {theirs_meta['p95']:.1f} ms)"
    )
    print(f"time: {measuring:.0f} s measuring, {total:.0f} s in all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000, help="indexed instances")
    parser.add_argument("--requests", type=int, default=200, help="per search and for metadata")
    parser.add_argument(
        "--frames", type=int, default=2000, help="frame requests (distinct instances)"
    )
    parser.add_argument("--warmup", type=int, default=20, help="requests per operation, not timed")
    args = parser.parse_args()
    # A SIGTERM ends the run through the finally blocks, so every server started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="hdh-dicomweb-bench-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
