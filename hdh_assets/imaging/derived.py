"""Derived objects' index rows (segmentations, reports, model outputs stored by STOW-RS).

They live in ``imaging/dicom_instances`` under ``batch=derived-<YYYYMMDD>`` partitions that the
DICOMweb service writes itself, one small file per request, under an exclusive lock on the
store. Dagster never materialises these partitions, so an erasure's re-materialisations cannot
rewrite them: :func:`drop_subject_rows` does, under the same lock, before the erasure's runs.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

DERIVED_BATCH = "derived-{date}"
DERIVED_PREFIX = "batch=derived-"
# In the DICOM store's root: writers of derived objects take it, and so does each batch's
# ingestion from its commit until its index is written (the name predates the latter).
LOCK_NAME = ".stow.lock"
INSTANCES_PATH = ("imaging", "dicom_instances")


@contextmanager
def store_lock(store_root: Path) -> Iterator[None]:
    """Exclusive across processes: one writer of the store and its index at a time (a STOW-RS
    request, a batch's ingestion commit, an erasure of derived rows)."""
    store_root.mkdir(parents=True, exist_ok=True)
    with open(store_root / LOCK_NAME, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def derived_files(lake: Path) -> list[Path]:
    """The index files of derived objects, oldest partition first."""
    table = lake.joinpath(*INSTANCES_PATH)
    if not table.is_dir():
        return []
    return sorted(
        file
        for folder in table.iterdir()
        if folder.is_dir() and folder.name.startswith(DERIVED_PREFIX)
        for file in folder.glob("*.parquet")
        if not file.name.startswith(".")
    )


def drop_subject_rows(lake: Path, store_root: Path, pseudonym: str) -> int:
    """Rewrite the derived index without the person's rows; returns how many went. A file left
    empty is removed; a rewritten one replaces the old atomically, so readers see either."""
    dropped = 0
    with store_lock(store_root):
        for file in derived_files(lake):
            frame = pl.read_parquet(file)
            kept = frame.filter(pl.col("subject_pseudonym").ne_missing(pseudonym))
            if kept.height == frame.height:
                continue
            dropped += frame.height - kept.height
            if kept.is_empty():
                file.unlink()
                continue
            partial = file.parent / f".{file.name}.{uuid.uuid4().hex}.partial"
            kept.write_parquet(partial)
            os.replace(partial, file)
    return dropped
