"""One index row per pseudonymised instance: what a DICOMweb QIDO-RS / WADO-RS layer needs."""

from __future__ import annotations

import datetime as dt

import pandera.polars as pa
import polars as pl
from pydicom.dataset import Dataset

from hdh_assets.imaging.elements import da_date

_UID = r"^[0-9]+(\.[0-9]+)*$"
_PSEUDONYM = r"^[0-9a-f]{32}$"


def _col(dtype, description: str, nullable: bool = True, checks=None) -> pa.Column:
    return pa.Column(dtype, nullable=nullable, checks=checks, description=description)


# The published shape of imaging/dicom_instances: enough for QIDO-RS and WADO-RS later.
INDEX = pa.DataFrameSchema(
    {
        "sop_instance_uid": _col(
            pl.String,
            "pseudonymised SOP Instance UID (2.25.<keyed hash>)",
            False,
            [pa.Check.str_matches(_UID)],
        ),
        "series_instance_uid": _col(
            pl.String, "pseudonymised Series Instance UID", False, [pa.Check.str_matches(_UID)]
        ),
        "study_instance_uid": _col(
            pl.String, "pseudonymised Study Instance UID", False, [pa.Check.str_matches(_UID)]
        ),
        "subject_pseudonym": _col(
            pl.String,
            "keyed pseudonym of the patient (shared with clinical and claims data)",
            False,
            [pa.Check.str_matches(_PSEUDONYM)],
        ),
        "subject_kind": _col(
            pl.String,
            "national (from the NIR) or provider (provider-scoped)",
            False,
            [pa.Check.isin(["national", "provider"])],
        ),
        "sop_class_uid": _col(
            pl.String,
            "SOP Class UID (kind of object: CT image, SEG, RT Structure Set, SR, ...)",
            False,
        ),
        "modality": _col(pl.String, "modality (CT, MR, SEG, RTSTRUCT, SR, ...)"),
        "transfer_syntax_uid": _col(
            pl.String, "transfer syntax of the stored file (as delivered)", False
        ),
        "study_date": _col(pl.Date, "study date, shifted by the subject's offset"),
        "series_date": _col(pl.Date, "series date, shifted by the subject's offset"),
        "content_date": _col(pl.Date, "content date, shifted by the subject's offset"),
        "study_time": _col(pl.String, "study time of day (kept: times are not shifted)"),
        "series_number": _col(pl.Int32, "series number within the study"),
        "instance_number": _col(pl.Int32, "instance number within the series"),
        "body_part_examined": _col(pl.String, "body part examined"),
        "patient_sex": _col(
            pl.String, "patient sex, when the patient-characteristics option is on"
        ),
        "patient_age": _col(pl.String, "patient age at the study (DICOM AS), with the same option"),
        "rows": _col(pl.Int32, "image rows"),
        "columns": _col(pl.Int32, "image columns"),
        "number_of_frames": _col(pl.Int32, "frames in the instance (1 for single-frame images)"),
        "samples_per_pixel": _col(pl.Int32, "samples per pixel (1 grey, 3 colour)"),
        "bits_allocated": _col(pl.Int32, "bits allocated per sample"),
        "photometric_interpretation": _col(pl.String, "photometric interpretation"),
        "pixel_spacing": _col(pl.List(pl.Float64), "row and column spacing in mm"),
        "slice_thickness": _col(pl.Float64, "slice thickness in mm"),
        "image_position_patient": _col(pl.List(pl.Float64), "x, y, z of the first voxel, in mm"),
        "image_orientation_patient": _col(pl.List(pl.Float64), "row and column direction cosines"),
        "window_center": _col(pl.Float64, "first window centre"),
        "window_width": _col(pl.Float64, "first window width"),
        "rescale_intercept": _col(pl.Float64, "rescale intercept (HU for CT)"),
        "rescale_slope": _col(pl.Float64, "rescale slope"),
        "file_bytes": _col(pl.Int64, "size of the stored file", False, [pa.Check.gt(0)]),
        "sha256": _col(
            pl.String,
            "SHA-256 of the stored (pseudonymised) file",
            False,
            [pa.Check.str_length(64, 64)],
        ),
        "store_path": _col(
            pl.String, "path under HDH_HOME/store/dicom: <study>/<series>/<sop>.dcm", False
        ),
    },
    strict=True,
    name="DicomInstances",
)
INDEX_SCHEMA = {name: column.dtype.type for name, column in INDEX.columns.items()}


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value).strip() or None


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _first_float(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    try:
        if type(value).__name__ == "MultiValue" or isinstance(value, list):
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _floats(ds: Dataset, keyword: str) -> list[float] | None:
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    try:
        items = (
            value if type(value).__name__ == "MultiValue" or isinstance(value, list) else [value]
        )
        return [float(v) for v in items]
    except (TypeError, ValueError):
        return None


def _date(ds: Dataset, keyword: str) -> dt.date | None:
    text = _text(ds, keyword)
    if not text:
        return None
    try:
        return da_date(text)
    except ValueError:
        return None


def index_row(
    ds: Dataset,
    subject_kind: str,
    file_bytes: int,
    sha256: str,
    store_path: str,
    has_pixel_data: bool | None = None,
    transfer_syntax: str | None = None,
) -> dict:
    """The row of a pseudonymised dataset (never of an original: it would carry identifiers).
    ``ds`` is a pydicom dataset, or anything with its ``get`` (a header's values, which then
    say whether the file has pixel data and its transfer syntax)."""
    if has_pixel_data is None:
        has_pixel_data = "PixelData" in ds
    if transfer_syntax is None:
        transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
    return {
        "sop_instance_uid": _text(ds, "SOPInstanceUID"),
        "series_instance_uid": _text(ds, "SeriesInstanceUID"),
        "study_instance_uid": _text(ds, "StudyInstanceUID"),
        "subject_pseudonym": _text(ds, "PatientID"),
        "subject_kind": subject_kind,
        "sop_class_uid": _text(ds, "SOPClassUID"),
        "modality": _text(ds, "Modality"),
        "transfer_syntax_uid": transfer_syntax,
        "study_date": _date(ds, "StudyDate"),
        "series_date": _date(ds, "SeriesDate"),
        "content_date": _date(ds, "ContentDate"),
        "study_time": _text(ds, "StudyTime"),
        "series_number": _int(ds, "SeriesNumber"),
        "instance_number": _int(ds, "InstanceNumber"),
        "body_part_examined": _text(ds, "BodyPartExamined"),
        "patient_sex": _text(ds, "PatientSex"),
        "patient_age": _text(ds, "PatientAge"),
        "rows": _int(ds, "Rows"),
        "columns": _int(ds, "Columns"),
        "number_of_frames": _int(ds, "NumberOfFrames") or (1 if has_pixel_data else None),
        "samples_per_pixel": _int(ds, "SamplesPerPixel"),
        "bits_allocated": _int(ds, "BitsAllocated"),
        "photometric_interpretation": _text(ds, "PhotometricInterpretation"),
        "pixel_spacing": _floats(ds, "PixelSpacing"),
        "slice_thickness": _first_float(ds, "SliceThickness"),
        "image_position_patient": _floats(ds, "ImagePositionPatient"),
        "image_orientation_patient": _floats(ds, "ImageOrientationPatient"),
        "window_center": _first_float(ds, "WindowCenter"),
        "window_width": _first_float(ds, "WindowWidth"),
        "rescale_intercept": _first_float(ds, "RescaleIntercept"),
        "rescale_slope": _first_float(ds, "RescaleSlope"),
        "file_bytes": file_bytes,
        "sha256": sha256,
        "store_path": store_path,
    }
