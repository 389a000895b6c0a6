"""A store for the viewer tests, built with the DICOMweb tests' fixtures (no Dagster, no Spark):
the synthetic sample's DICOM batch, plus a SEG made with highdicom over one CT/MR series of the
landing batch and ingested as a second batch, so it is pseudonymised to the stored series's
UIDs exactly as a delivered SEG would be. One project is granted a few studies."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import polars as pl
import pydicom
import pytest

from resources.home import HdhHome
from tests.dicomweb.conftest import SAMPLE, TOKEN_KEY, ingest  # noqa: F401 (re-exported)
from tests.dicomweb.test_access import grant

PROJECT = "viewer-study"
SEG_BATCH = "seg"


@dataclass
class ViewerStore:
    home: HdhHome
    index: pl.DataFrame  # every stored instance, both batches
    granted: list[str]  # the project's studies
    study: str  # a CT/MR study with a volume of slices, granted
    series: str
    seg_series: str


def landing_series(batch: Path) -> dict[str, list[Path]]:
    """The CT/MR files of the landing batch by original series UID."""
    series: dict[str, list[Path]] = {}
    for path in sorted(batch.rglob("*")):
        if not path.is_file():
            continue
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue  # the sample's broken files
        if dataset.get("Modality") in ("CT", "MR") and "ImagePositionPatient" in dataset:
            series.setdefault(dataset.SeriesInstanceUID, []).append(path)
    return series


def make_seg(files: list[Path], folder: Path) -> None:
    """A binary SEG: a disc over the middle third of the slices."""
    images = []
    for path in files:
        try:
            dataset = pydicom.dcmread(path)
            dataset.pixel_array  # noqa: B018 (decodable)
        except Exception:
            continue
        images.append(dataset)
    images.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    rows, columns = images[0].Rows, images[0].Columns
    mask = np.zeros((len(images), rows, columns), dtype=bool)
    yy, xx = np.mgrid[:rows, :columns]
    disc = (yy - rows / 2) ** 2 + (xx - columns / 2) ** 2 < (min(rows, columns) / 5) ** 2
    third = len(images) // 3
    mask[third : len(images) - third or len(images)] = disc
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Test lesion",
        segmented_property_category=hd.sr.CodedConcept(
            "49755003", "SCT", "Morphologically Altered Structure"
        ),
        segmented_property_type=hd.sr.CodedConcept("108369006", "SCT", "Neoplasm"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="HDH tests",
        manufacturer_model_name="viewer conftest",
        software_versions="1",
        device_serial_number="1",
        series_description="Test SEG",
    )
    folder.mkdir(parents=True, exist_ok=True)
    seg.save_as(folder / "seg.dcm")


@pytest.fixture(scope="session")
def viewer_store(tmp_path_factory: pytest.TempPathFactory, sample_root: Path) -> ViewerStore:
    root = tmp_path_factory.mktemp("viewer")
    home = HdhHome(root / "hdh").ensure()
    (batch,) = (sample_root / "landing" / "dicom").iterdir()
    volumes = landing_series(batch)
    original = max(volumes, key=lambda uid: len(volumes[uid]))  # the most slices
    make_seg(volumes[original], root / "seg-landing")
    indexes = ingest(home, {SAMPLE: batch, SEG_BATCH: root / "seg-landing"})
    index = pl.concat(list(indexes.values()), how="vertical")
    (seg_row,) = indexes[SEG_BATCH].to_dicts()
    study, seg_series = seg_row["study_instance_uid"], seg_row["series_instance_uid"]
    referenced = index.filter(
        (pl.col("study_instance_uid") == study) & pl.col("modality").is_in(["CT", "MR"])
    )
    series = referenced.group_by("series_instance_uid").len().sort("len")[-1, 0]
    studies = index.select("study_instance_uid", "subject_pseudonym").unique()
    others = sorted(set(studies["study_instance_uid"]) - {study})[:2]
    granted = studies.filter(pl.col("study_instance_uid").is_in([study, *others]))
    grant(home, PROJECT, "imaging_clinical_linkage", granted, "subject_pseudonym")
    return ViewerStore(
        home, index, sorted(granted["study_instance_uid"]), study, series, seg_series
    )
