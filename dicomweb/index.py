"""The view of the imaging index a DICOMweb caller may see, read from the lake.

Searches are served from ``imaging/dicom_instances`` (one row per stored instance), never by
scanning the store: a study listing is one scan of that table, grouped by study. The series and
studies are grouped here from the same rows rather than read from ``imaging/dicom_series`` and
``imaging/dicom_studies``: those are rebuilt by automation after each batch, so between a batch
and its aggregates they would count instances the service cannot serve yet (or no longer holds),
and QIDO counts must agree with what WADO returns.

People in ``gdpr/exclusions`` (objection, erasure) are dropped here even though the lake's
writers drop them too: an exclusion is recorded before the re-materialisations that remove the
person's rows, and the service must not serve them in between.

The view is rebuilt when a file of either table changes (the lake replaces folders atomically,
so a new version has new files); otherwise every request reuses the frames in memory.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import polars as pl

from hdh_assets.gdpr.exclusions import EXCLUSIONS_PATH, excluded_pseudonyms
from resources.home import HdhHome
from resources.lake.frames import read_polars
from resources.lake.tables import Lake

INSTANCES_PATH = ("imaging", "dicom_instances")
# Index columns under the DICOM keyword each one answers for; the frames keep the index's own
# columns too (store path, transfer syntax, geometry) for WADO.
KEYWORD_COLUMNS = {
    "StudyInstanceUID": "study_instance_uid",
    "SeriesInstanceUID": "series_instance_uid",
    "SOPInstanceUID": "sop_instance_uid",
    "SOPClassUID": "sop_class_uid",
    "Modality": "modality",
    "PatientID": "subject_pseudonym",
    "PatientSex": "patient_sex",
    "StudyTime": "study_time",
    "SeriesNumber": "series_number",
    "InstanceNumber": "instance_number",
    "Rows": "rows",
    "Columns": "columns",
    "BitsAllocated": "bits_allocated",
    "NumberOfFrames": "number_of_frames",
}
INSTANCE_ORDER = ["StudyInstanceUID", "SeriesNumber", "SeriesInstanceUID", "InstanceNumber"]
STUDY_COLUMNS = ["StudyDate", "StudyTime", "PatientID", "PatientSex"]
REPRESENTATIVE = ["store_path", "sha256"]  # the file a study's or series' header is read from


def _empty_instances() -> pl.DataFrame:
    from hdh_assets.imaging.index import INDEX_SCHEMA

    return pl.DataFrame(schema=INDEX_SCHEMA)


def _with_keywords(instances: pl.DataFrame) -> pl.DataFrame:
    return instances.with_columns(
        *(pl.col(column).alias(keyword) for keyword, column in KEYWORD_COLUMNS.items()),
        pl.col("study_date").dt.strftime("%Y%m%d").alias("StudyDate"),
    ).sort([*INSTANCE_ORDER, "SOPInstanceUID"], nulls_last=True)


@dataclass(frozen=True)
class IndexView:
    """Visible instances, and the series and studies grouped from them (cached per view)."""

    instances: pl.DataFrame
    excluded: frozenset[str]

    @classmethod
    def from_instances(cls, instances: pl.DataFrame, excluded: frozenset[str]) -> IndexView:
        kept = instances.filter(~pl.col("subject_pseudonym").is_in(sorted(excluded)))
        return cls(_with_keywords(kept), excluded)

    @cached_property
    def studies(self) -> pl.DataFrame:
        return (
            self.instances.group_by("StudyInstanceUID", maintain_order=True)
            .agg(
                pl.col("StudyDate").drop_nulls().min(),
                pl.col("StudyTime").drop_nulls().first(),
                pl.col("PatientID").first(),
                pl.col("PatientSex").drop_nulls().first(),
                pl.col("Modality").drop_nulls().unique().sort().alias("ModalitiesInStudy"),
                pl.col("SeriesInstanceUID").n_unique().alias("NumberOfStudyRelatedSeries"),
                pl.len().alias("NumberOfStudyRelatedInstances"),
                *(pl.col(c).first() for c in REPRESENTATIVE),
            )
            .sort("StudyDate", "StudyTime", "StudyInstanceUID", nulls_last=True)
        )

    @cached_property
    def series(self) -> pl.DataFrame:
        grouped = self.instances.group_by("SeriesInstanceUID", maintain_order=True).agg(
            pl.col("StudyInstanceUID").first(),
            pl.col("Modality").drop_nulls().first(),
            pl.col("SeriesNumber").drop_nulls().first(),
            pl.len().alias("NumberOfSeriesRelatedInstances"),
            *(pl.col(c).first() for c in REPRESENTATIVE),
        )
        studies = self.studies.select("StudyInstanceUID", *STUDY_COLUMNS)
        return grouped.join(studies, on="StudyInstanceUID", how="left").sort(
            "StudyInstanceUID", "SeriesNumber", "SeriesInstanceUID", nulls_last=True
        )

    def study_uids(self) -> set[str]:
        return set(self.studies["StudyInstanceUID"])

    def studies_of_subjects(self, subjects: set[str]) -> set[str]:
        found = self.studies.filter(pl.col("PatientID").is_in(sorted(subjects)))
        return set(found["StudyInstanceUID"])


def _signature(folders: list[Path]) -> tuple:
    """What identifies a version of the tables: each data file with its size and time."""
    entries = []
    for folder in folders:
        if not folder.exists():
            continue
        for path in folder.rglob("*.parquet"):
            relative = path.relative_to(folder).parts
            if any(part.startswith((".", "_")) for part in relative):
                continue
            stat = path.stat()
            entries.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(entries))


class IndexSource:
    """The current :class:`IndexView` of a platform home, reloaded when the lake changes."""

    def __init__(self, home: HdhHome):
        self.home = home
        self._lock = threading.Lock()
        self._signature: tuple | None = None
        self._view: IndexView | None = None

    def _folders(self) -> list[Path]:
        return [self.home.lake.joinpath(*INSTANCES_PATH), self.home.lake.joinpath(*EXCLUSIONS_PATH)]

    def current(self) -> IndexView:
        signature = _signature(self._folders())
        with self._lock:
            if self._view is None or signature != self._signature:
                self._view = self._load()
                self._signature = signature
            return self._view

    def _load(self) -> IndexView:
        table = Lake(self.home.lake).table(INSTANCES_PATH)
        lake_folder = self.home.lake.joinpath(*INSTANCES_PATH)
        try:
            partitions = [
                (table.path / child.name, {})
                for child in sorted(lake_folder.iterdir())
                if child.is_dir() and not child.name.startswith((".", "_"))
            ]
            instances = read_polars(partitions or [(table.path, {})], table.parquet_files)
            instances = instances.collect()
        except FileNotFoundError:  # nothing ingested yet
            instances = _empty_instances()
        return IndexView.from_instances(instances, excluded_pseudonyms(self.home.lake))
