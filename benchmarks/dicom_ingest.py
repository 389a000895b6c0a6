"""DICOM ingestion speed, each figure beside a baseline measured in the same run.

- indexing: our classification + index row (every element parsed, pixel data length checked),
  parallel across cores, against a plain ``pydicom.dcmread(stop_before_pixels=True)`` loop;
- pseudonymisation: our full ingestion (classify, Annex E, keyed UIDs, verify, write, index),
  against dicognito's anonymiser (read, anonymise, write) on the same files.

    .venv/bin/python benchmarks/dicom_ingest.py [--files 5000] [--workers 0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hdh_assets.imaging.classify import classify_bytes
from hdh_assets.imaging.index import index_row
from hdh_assets.imaging.ingest import IngestSettings, ingest_batch
from synthetic.sample import SampleConfig, generate_sample


def make_corpus(root: Path, files: int) -> Path:
    """Generate samples until the DICOM batch holds at least ``files`` instances."""
    people = max(10, files // 3)
    generate_sample(
        root / "landing", root / "sample", SampleConfig(seed=5, people=people, claims_rows=10)
    )
    return root / "landing" / "dicom" / "sample-seed5"


def _index_chunk(paths: list[str]) -> int:
    rows = 0
    for path in paths:
        classified = classify_bytes(Path(path).read_bytes())
        if classified.ok:
            ds = classified.dataset
            ds.file_meta = ds.file_meta if hasattr(ds, "file_meta") else None
            index_row(ds, "national", 0, "", "")
            rows += 1
    return rows


def our_indexing(paths: list[Path], workers: int) -> float:
    chunks = [[str(p) for p in paths[i::workers]] for i in range(workers)]
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        sum(pool.map(_index_chunk, chunks))
    return len(paths) / (time.perf_counter() - start)


def plain_pydicom(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        pydicom.dcmread(path, stop_before_pixels=True)
    return len(paths) / (time.perf_counter() - start)


def dicognito(paths: list[Path], out: Path) -> float:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for index, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        anonymizer.anonymize(ds)
        ds.save_as(out / f"{index}.dcm")
    return len(paths) / (time.perf_counter() - start)


def ours(batch: Path, root: Path, workers: int) -> tuple[float, dict]:
    settings = IngestSettings(
        bytes(range(32)), root / "store", root / "quarantine", workers=workers
    )
    start = time.perf_counter()
    result = ingest_batch("bench", batch, settings)
    return result.summary()["landed"] / (time.perf_counter() - start), result.summary()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=0, help="0: one per core")
    args = parser.parse_args()
    workers = args.workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        batch = make_corpus(root, args.files)
        paths = sorted(
            p
            for p in batch.rglob("*")
            if p.is_file() and p.parent.name != "misc" and p.name != "_READY"
        )
        print(
            f"corpus: {len(paths)} DICOM files ({sum(p.stat().st_size for p in paths) / 1e6:.0f} MB), {workers} workers"
        )
        index_rate = our_indexing(paths, workers)
        plain_rate = plain_pydicom(paths)
        print(
            f"indexing      ours {index_rate:8.0f} files/s | dcmread(stop_before_pixels) loop {plain_rate:8.0f} files/s | ratio {index_rate / plain_rate:.2f}"
        )
        ours_rate, summary = ours(batch, root / "ours", workers)
        dicognito_rate = dicognito(paths, root / "dicognito")
        print(
            f"pseudonymise  ours {ours_rate:8.0f} files/s | dicognito                        {dicognito_rate:8.0f} files/s | ratio {ours_rate / dicognito_rate:.2f}"
        )
        print(f"ours: {summary}")
        shutil.rmtree(root / "dicognito", ignore_errors=True)


if __name__ == "__main__":
    main()
