"""Masks to DICOM SEG, and SEG to masks; storing through the DICOMweb service's STOW core.

A SEG made here is a binary highdicom Segmentation over the pseudonymised source images read from
the store, so its patient and study attributes are the stored (pseudonymised) ones. Two changes
make it pass the Annex E verification every derived object goes through: its UIDs, the Dimension
Organization UID included, are ``2.25.`` UIDs, and the Contribution Description highdicom writes
into the Contributing Equipment Sequence is removed. No Series Description is written (the basic
profile removes it): the viewer tells the two segmentations apart by their segment labels,
``<model> <n>`` (``reference <n>`` for the reference).

UIDs are derived from the project, the model, the source series and the delivered file's hash
(``2.25.<128 bits of SHA-256>``): the same delivery gives the same SEG UIDs on every run, so a
SEG already in the index is not made again, and a new version of a mask is a new series.

Storing uses :class:`dicomweb.stow.Stower` with the project's own access (the studies its grants
let it see): a SEG over a study the project may not see is refused as STOW would refuse it.
"""

from __future__ import annotations

import hashlib
import io
import time
import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl
import pydicom
from pydicom.dataset import Dataset

from dicomweb.access import project_studies
from dicomweb.headers import StoredFiles
from dicomweb.index import IndexSource, IndexView
from dicomweb.stow import Stower
from dicomweb.tokens import Claims
from hdh_assets.imaging.model_outputs.deliveries import (
    SEG_REFUSED,
    SERIES_MISMATCH,
    SHAPE_MISMATCH,
    UNREADABLE,
    UNSUPPORTED_FORMAT,
    Masks,
    SeriesGeometry,
    Unusable,
)
from resources.home import HdhHome

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
BOUNDARY = "hdh-model-outputs"
MANUFACTURER = "HDH platform"
SERIES_NUMBERS = {"reference": 900, "model": 901}
TISSUE = ("85756007", "SCT", "Tissue")  # SNOMED CT: category and type of every segment


def seed_of(project: str, model: str, series_uid: str, delivery_sha256: str) -> str:
    """What a delivery's SEG UIDs are derived from."""
    return "\x1f".join((project, model, series_uid, delivery_sha256))


def seg_instance_uid(seed: str) -> str:
    return derived_uid(seed, "instance")


def derived_uid(*parts: str) -> str:
    """A ``2.25.`` UID from the parts (128 bits of their SHA-256): stable across runs."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"2.25.{int(digest[:32], 16)}"


def _descriptions(masks: Masks, model: str, reference: bool) -> list:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    tissue = hd.sr.CodedConcept(*TISSUE)
    algorithm = (
        None
        if reference
        else hd.AlgorithmIdentificationSequence(
            name=model, family=codes.cid7162.ArtificialIntelligence, version="delivered"
        )
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=masks.labels.get(number) or f"{model} {number}",
            segmented_property_category=tissue,
            segmented_property_type=tissue,
            algorithm_type=(
                hd.seg.SegmentAlgorithmTypeValues.MANUAL
                if reference
                else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
            ),
            algorithm_identification=algorithm,
        )
        for number in masks.numbers
    ]


def conform(seg: Dataset, uid_seed: str) -> Dataset:
    """Make a highdicom SEG pass the Annex E verification (module docstring)."""
    for element in seg.iterall():
        if element.keyword == "DimensionOrganizationUID":
            element.value = derived_uid(uid_seed, "dimension-organization")
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDescription" in item:
            del item.ContributionDescription
    return seg


def build_seg(
    sources: list[Dataset], masks: Masks, *, project: str, model: str, delivery_sha256: str
) -> Dataset:
    """A binary SEG of ``masks`` (frames in the order of ``sources``) over ``sources``."""
    import highdicom as hd  # here: a second to import, which loading the code location skips

    reference = model == "reference"
    seed = seed_of(project, model, str(sources[0].SeriesInstanceUID), delivery_sha256)
    pixels = np.moveaxis(masks.arrays, 0, -1)  # (frames, rows, cols, segments)
    with warnings.catch_warnings():
        # A pseudonym as Patient's Name has one component, which highdicom warns about.
        warnings.simplefilter("ignore", UserWarning)
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=_descriptions(masks, model, reference),
            series_instance_uid=derived_uid(seed, "series"),
            series_number=SERIES_NUMBERS["reference" if reference else "model"],
            sop_instance_uid=seg_instance_uid(seed),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name="model outputs",
            software_versions="1",
            device_serial_number="1",
            omit_empty_frames=False,  # an empty prediction is a result too
        )
    return conform(seg, seed)


def seg_masks(dataset: Dataset, geometry: SeriesGeometry) -> Masks:
    """The segments of a delivered SEG over ``geometry``'s series, frames in its order."""
    import highdicom as hd

    if str(dataset.get("SOPClassUID", "")) != SEG_CLASS:
        raise Unusable(UNSUPPORTED_FORMAT, "a .dcm delivery must be a DICOM Segmentation")
    referenced = {
        str(item.get("SeriesInstanceUID", ""))
        for item in dataset.get("ReferencedSeriesSequence", [])
    }
    if referenced != {geometry.series_uid}:
        raise Unusable(SERIES_MISMATCH, "the SEG does not reference the series its file names")
    try:
        seg = hd.seg.Segmentation.from_dataset(dataset, copy=True)
        numbers = list(seg.segment_numbers)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            pixels = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=geometry.sop_uids,
                segment_numbers=numbers,
                combine_segments=False,
                assert_missing_frames_are_empty=True,
            )
    except Exception as error:
        raise Unusable(
            SHAPE_MISMATCH, f"the SEG's frames do not fit the series ({type(error).__name__})"
        ) from None
    if tuple(pixels.shape[:3]) != geometry.shape:
        raise Unusable(SHAPE_MISMATCH, "the SEG's frames do not fit the series")
    labels = {n: str(seg.get_segment_description(n).segment_label) for n in numbers}
    return Masks(numbers, np.moveaxis(pixels != 0, -1, 0), labels)


def read_dicom(data: bytes) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except Exception:
        raise Unusable(UNREADABLE, "not a DICOM file") from None


def to_bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class StoredSeg:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    frames: int
    segments: int
    status: str  # stored, already_stored


class SegStore:
    """Stores SEG objects for a project through the STOW core, and reads the index."""

    def __init__(self, home: HdhHome, profile, base_url: str):
        self.home = home
        self.index = IndexSource(home)
        self.files = StoredFiles(home.store / "dicom")
        self.stower = Stower(home, self.index, self.files, profile)
        self.base_url = base_url

    def view(self) -> IndexView:
        return self.index.current()

    def visible(self, project: str, view: IndexView | None = None) -> frozenset[str]:
        """The studies the project's grants let it see."""
        grants = self.home.workspaces / project / "grants"
        return project_studies(grants, view or self.view())

    def sources(self, geometry: SeriesGeometry) -> list[Dataset]:
        found = [self.files.dataset(path) for path in geometry.store_paths]
        if any(d is None for d in found):
            raise Unusable(UNREADABLE, "a source image of the series is no longer stored")
        return found

    def stored(self, sop_instance_uid: str, segments: int) -> StoredSeg | None:
        """The SEG already in the index under this SOP Instance UID, if any."""
        rows = self.view().instances.filter(pl.col("SOPInstanceUID") == sop_instance_uid)
        if rows.is_empty():
            return None
        row = rows.row(0, named=True)
        return StoredSeg(
            row["study_instance_uid"],
            row["series_instance_uid"],
            sop_instance_uid,
            int(row["number_of_frames"] or 1),
            segments,
            "already_stored",
        )

    def store(self, dataset: Dataset, project: str, data: bytes | None = None) -> StoredSeg:
        """Store one SEG as the project would through STOW (``data``: its bytes as delivered,
        stored unchanged); :class:`Unusable` when refused."""
        frames = int(dataset.get("NumberOfFrames", 1))
        segments = len(dataset.get("SegmentSequence", []))
        uids = (
            str(dataset.StudyInstanceUID),
            str(dataset.SeriesInstanceUID),
            str(dataset.SOPInstanceUID),
        )
        earlier = self.stored(uids[2], segments)
        if earlier is not None:
            return earlier
        data = data if data is not None else to_bytes(dataset)
        body = (
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + data
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
        view = self.view()
        claims = Claims(project, False, int(time.time()) + 60)
        outcome = self.stower.store(
            body,
            f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
            claims,
            view,
            self.visible(project, view),
            self.base_url,
        )
        if outcome.refused:
            refusal = outcome.refused[0].refusal
            raise Unusable(SEG_REFUSED, f"STOW refused it: {refusal.code}: {refusal.message}")
        return StoredSeg(*uids, frames, segments, "stored")
