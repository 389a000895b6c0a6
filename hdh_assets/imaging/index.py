"""One index row per pseudonymised instance: what a DICOMweb QIDO-RS / WADO-RS layer needs."""

from __future__ import annotations

import datetime as dt

import polars as pl
from pydicom.dataset import Dataset

INDEX_SCHEMA = {
    "sop_instance_uid": pl.String,
    "series_instance_uid": pl.String,
    "study_instance_uid": pl.String,
    "subject_pseudonym": pl.String,
    "subject_kind": pl.String,
    "sop_class_uid": pl.String,
    "modality": pl.String,
    "transfer_syntax_uid": pl.String,
    "study_date": pl.Date,
    "series_date": pl.Date,
    "content_date": pl.Date,
    "study_time": pl.String,
    "series_number": pl.Int32,
    "instance_number": pl.Int32,
    "body_part_examined": pl.String,
    "patient_sex": pl.String,
    "patient_age": pl.String,
    "rows": pl.Int32,
    "columns": pl.Int32,
    "number_of_frames": pl.Int32,
    "samples_per_pixel": pl.Int32,
    "bits_allocated": pl.Int32,
    "photometric_interpretation": pl.String,
    "pixel_spacing": pl.List(pl.Float64),
    "slice_thickness": pl.Float64,
    "image_position_patient": pl.List(pl.Float64),
    "image_orientation_patient": pl.List(pl.Float64),
    "window_center": pl.Float64,
    "window_width": pl.Float64,
    "rescale_intercept": pl.Float64,
    "rescale_slope": pl.Float64,
    "file_bytes": pl.Int64,
    "sha256": pl.String,
    "store_path": pl.String,
}


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
        return dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None


def index_row(
    ds: Dataset, subject_kind: str, file_bytes: int, sha256: str, store_path: str
) -> dict:
    """The row of a pseudonymised dataset (never of an original: it would carry identifiers)."""
    return {
        "sop_instance_uid": _text(ds, "SOPInstanceUID"),
        "series_instance_uid": _text(ds, "SeriesInstanceUID"),
        "study_instance_uid": _text(ds, "StudyInstanceUID"),
        "subject_pseudonym": _text(ds, "PatientID"),
        "subject_kind": subject_kind,
        "sop_class_uid": _text(ds, "SOPClassUID"),
        "modality": _text(ds, "Modality"),
        "transfer_syntax_uid": str(ds.file_meta.TransferSyntaxUID),
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
        "number_of_frames": _int(ds, "NumberOfFrames") or (1 if "PixelData" in ds else None),
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
