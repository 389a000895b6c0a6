"""DICOM ingestion speed, each figure beside a baseline measured in the same run.

The corpus is a synthetic delivery (CT and MR series, SEG, RT, SR, archives) plus copies of
pydicom's 190-odd test files: real-world files in every transfer syntax they carry, big endian,
deflated, encapsulated, odd and broken ones included.

- raw reads: reading every file's bytes (the physical floor);
- indexing: our header walk and index row (the pixel data located, never read into objects),
  parallel across cores, against a plain ``pydicom.dcmread(stop_before_pixels=True)`` loop;
- pseudonymisation: our whole ingestion (classify, Annex E at the header's level, keyed UIDs,
  verify, write, commit, index) against dicognito's anonymiser (read, anonymise, write);
- the peak memory of the ingestion's processes.

    .venv/bin/python benchmarks/dicom_ingest.py [--files 5000] [--pydicom-copies 5] [--workers 0]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import psutil
import pydicom
import pydicom.data

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hdh_assets.imaging.classify import classify_bytes
from hdh_assets.imaging.elements import HeaderValues, Malformed, NotWalkable, read_header
from hdh_assets.imaging.index import index_row
from hdh_assets.imaging.ingest import IngestSettings, ingest_batch
from synthetic.sample import SampleConfig, generate_sample


def make_corpus(root: Path, files: int, pydicom_copies: int) -> Path:
    """Generate samples until the DICOM batch holds at least ``files`` instances, then add
    ``pydicom_copies`` copies of pydicom's test files (each copy in its own folder)."""
    people = max(10, files // 3)
    generate_sample(
        root / "landing", root / "sample", SampleConfig(seed=5, people=people, claims_rows=10)
    )
    batch = root / "landing" / "dicom" / "sample-seed5"
    real = [Path(p) for p in pydicom.data.get_testdata_files() if Path(p).is_file()]
    for copy in range(pydicom_copies):
        folder = batch / "pydicom" / str(copy)
        folder.mkdir(parents=True)
        for number, path in enumerate(real):
            shutil.copyfile(path, folder / f"{number:03d}_{path.name}")
    return batch


def _index_chunk(paths: list[str]) -> int:
    """Index rows as ingestion builds them: from the header walk, pydicom for what it cannot
    follow."""
    rows = 0
    for path in paths:
        data = Path(path).read_bytes()
        try:
            header = read_header(data)
        except (NotWalkable, Malformed):
            classified = classify_bytes(data)
            if classified.ok:
                ds = classified.dataset
                syntax = str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", ""))
                index_row(ds, "national", 0, "", "", transfer_syntax=syntax)
                rows += 1
            continue
        index_row(
            HeaderValues.of(header),
            "national",
            0,
            "",
            "",
            has_pixel_data=header.has_pixel_data,
            transfer_syntax=header.transfer_syntax,
        )
        rows += 1
    return rows


def raw_reads(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        path.read_bytes()
    return len(paths) / (time.perf_counter() - start)


def our_indexing(paths: list[Path], workers: int) -> tuple[float, float]:
    """Files per second once the workers have started (throughput), and with their start-up
    (spawned interpreters importing pydicom and the platform: about a second)."""
    chunks = [[str(p) for p in paths[i::workers]] for i in range(workers)]
    started = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_index_chunk, [[str(paths[0])]] * workers))  # start and import
        start = time.perf_counter()
        sum(pool.map(_index_chunk, chunks))
        end = time.perf_counter()
    return len(paths) / (end - start), len(paths) / (end - started)


def plain_pydicom(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        try:
            pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # broken files: refused, as ours quarantines them
            continue
    return len(paths) / (time.perf_counter() - start)


def dicognito(paths: list[Path], out: Path) -> float:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    failed = 0
    for index, path in enumerate(paths):
        try:
            ds = pydicom.dcmread(path)
            anonymizer.anonymize(ds)
            ds.save_as(out / f"{index}.dcm")
        except Exception:  # broken files: refused, as ours quarantines them
            failed += 1
    rate = len(paths) / (time.perf_counter() - start)
    print(f"dicognito: {failed} of {len(paths)} files failed")
    return rate


def ours(batch: Path, root: Path, workers: int) -> tuple[float, dict, dict]:
    settings = IngestSettings(
        bytes(range(32)), root / "store", root / "quarantine", workers=workers
    )
    peaks: dict[str, float] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_memory, args=(peaks, stop), daemon=True)
    sampler.start()
    start = time.perf_counter()
    result = ingest_batch("bench", batch, settings)
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    parsers = Counter(o.parser for o in result.outcomes)
    return result.summary()["landed"] / seconds, result.summary() | {"parsers": parsers}, peaks


def _sample_memory(peaks: dict[str, float], stop: threading.Event) -> None:
    """The peak RSS of this process and of its worker processes, in MB."""
    me = psutil.Process()
    while not stop.is_set():
        peaks["parent"] = max(peaks.get("parent", 0), me.memory_info().rss / 1e6)
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                rss = child.memory_info().rss / 1e6
                peaks["worker"] = max(peaks.get("worker", 0), rss)
        stop.wait(0.2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=5000, help="synthetic files, at least")
    parser.add_argument("--pydicom-copies", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0, help="0: one per core")
    args = parser.parse_args()
    workers = args.workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        batch = make_corpus(root, args.files, args.pydicom_copies)
        paths = sorted(
            p
            for p in batch.rglob("*")
            if p.is_file() and p.parent.name != "misc" and p.name != "_READY"
        )
        print(
            f"corpus: {len(paths)} DICOM files ({sum(p.stat().st_size for p in paths) / 1e6:.0f} MB), {workers} workers"
        )
        raw_rate = raw_reads(paths)
        index_rate, with_start = our_indexing(paths, workers)
        plain_rate = plain_pydicom(paths)
        print(f"raw reads          {raw_rate:8.0f} files/s (the physical floor)")
        print(f"indexing, the workers' start-up included: {with_start:8.0f} files/s")
        print(
            f"indexing      ours {index_rate:8.0f} files/s | dcmread(stop_before_pixels) loop {plain_rate:8.0f} files/s | ratio {index_rate / plain_rate:.2f}"
        )
        ours_rate, summary, peaks = ours(batch, root / "ours", workers)
        dicognito_rate = dicognito(paths, root / "dicognito")
        print(
            f"pseudonymise  ours {ours_rate:8.0f} files/s | dicognito                        {dicognito_rate:8.0f} files/s | ratio {ours_rate / dicognito_rate:.2f}"
        )
        print(f"ours: {summary}")
        print("peak memory: " + ", ".join(f"{k} {v:.0f} MB" for k, v in sorted(peaks.items())))
        shutil.rmtree(root / "dicognito", ignore_errors=True)


if __name__ == "__main__":
    main()
