"""Is this file a usable DICOM instance? Decided before any ``force=True``.

A file is DICOM when it has the 128-byte preamble and ``DICM``, or when its first bytes are a
plausible data element of group 0002 or 0008 (a dataset written without File Meta); only then is
it parsed leniently. Messages never quote values read from the file: they reach the lake and logs.
"""

from __future__ import annotations

import enum
import io
import struct
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
ENCAPSULATED_SYNTAX_PREFIXES = ("1.2.840.10008.1.2.4", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.8")


class Reason(enum.StrEnum):
    """Why a file was quarantined; stable codes for reports and checks."""

    EMPTY = "empty"
    NOT_DICOM = "not_dicom"
    UNREADABLE = "unreadable"
    TRUNCATED = "truncated"
    MISSING_REQUIRED_UIDS = "missing_required_uids"
    BURNED_IN_ANNOTATION = "burned_in_annotation"
    DIRECTORY_ONLY = "dicomdir"
    BAD_ARCHIVE = "bad_archive"
    UID_CONFLICT = "uid_conflict"
    PSEUDONYMISATION_FAILED = "pseudonymisation_failed"
    IDENTIFIER_LEAK = "identifier_leak"  # an identifying value of the original is in the output
    NONCONFORMING_OUTPUT = "nonconforming_output"  # the output breaks Table E.1-1
    INVALID_UID = "invalid_uid"  # a study, series or instance UID that cannot name a stored file


@dataclass(frozen=True)
class Classified:
    dataset: Dataset | None
    reason: Reason | None = None
    message: str = ""
    has_file_meta: bool = True

    @property
    def ok(self) -> bool:
        return self.reason is None


def _quarantine(reason: Reason, message: str) -> Classified:
    return Classified(None, reason, message)


_VRS = {
    b"AE",
    b"AS",
    b"AT",
    b"CS",
    b"DA",
    b"DS",
    b"DT",
    b"FL",
    b"FD",
    b"IS",
    b"LO",
    b"LT",
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"PN",
    b"SH",
    b"SL",
    b"SQ",
    b"SS",
    b"ST",
    b"SV",
    b"TM",
    b"UC",
    b"UI",
    b"UL",
    b"UN",
    b"UR",
    b"US",
    b"UT",
    b"UV",
}


def looks_like_bare_dataset(head: bytes) -> bool:
    """A dataset without preamble starts with a small tag of group 0002 or 0008, either explicit
    VR (two letters of a known VR) or implicit VR (a 4-byte length that fits the file)."""
    if len(head) < 8:
        return False
    for order in ("<", ">"):
        group, element = struct.unpack(order + "HH", head[:4])
        if group not in (0x0002, 0x0008) or element > 0x0FFF:
            continue
        if head[4:6] in _VRS:
            return True
        (length,) = struct.unpack(order + "I", head[4:8])
        if length < 1024 and order == "<":
            return True
    return False


def classify_bytes(data: bytes) -> Classified:
    """Read ``data`` as one DICOM instance, or say why it is not one."""
    if not data:
        return _quarantine(Reason.EMPTY, "the file is empty")
    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    if not has_preamble and not looks_like_bare_dataset(data[:132]):
        return _quarantine(
            Reason.NOT_DICOM, "no DICM preamble and no DICOM data element at the start"
        )
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble)
        for _ in ds.iterall():  # parse every element now, not when a later step touches it
            pass
    except (EOFError, struct.error) as error:
        return _quarantine(
            Reason.TRUNCATED, f"the file ends inside a data element ({type(error).__name__})"
        )
    except InvalidDicomError:
        return _quarantine(Reason.UNREADABLE, "the DICOM header cannot be parsed")
    except Exception as error:  # pydicom raises many types on corrupt input
        return _quarantine(Reason.UNREADABLE, f"parsing failed ({type(error).__name__})")
    meta = getattr(ds, "file_meta", None)
    media_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    refused = NO_ELEMENT if not len(ds) else refusal(ds, media_class, native_pixel_bytes(ds))
    if refused:
        return _quarantine(*refused)
    return Classified(ds, has_file_meta=has_preamble)


NO_ELEMENT = (Reason.NOT_DICOM, "no data element could be read")


def refusal(ds, media_sop_class: str, pixel_bytes: int | None) -> tuple[Reason, str] | None:
    """Why a parsed instance is not ingested, if it is not: ``pixel_bytes`` is the length of its
    native pixel data (None when there is none or it is encapsulated). ``ds`` is a pydicom
    dataset or a header's values (``get`` and ``in`` by keyword), and not empty."""
    if media_sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return (
            Reason.DIRECTORY_ONLY,
            "a DICOMDIR index: the instances it lists are ingested from their own files",
        )
    missing = [name for name in REQUIRED_UIDS if not str(ds.get(name, "") or "").strip()]
    if missing:
        return Reason.MISSING_REQUIRED_UIDS, f"missing {', '.join(missing)}"
    truncated = _pixel_data_shortfall(ds, pixel_bytes)
    if truncated:
        return Reason.TRUNCATED, truncated
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        return (
            Reason.BURNED_IN_ANNOTATION,
            "BurnedInAnnotation is YES and the platform does not clean pixel data",
        )
    return None


def native_pixel_bytes(ds: Dataset) -> int | None:
    """The length of a parsed dataset's native pixel data (None if none or encapsulated)."""
    if "PixelData" not in ds:
        return None
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if syntax.startswith(ENCAPSULATED_SYNTAX_PREFIXES):
        return None
    return len(ds.PixelData or b"")


def _pixel_data_shortfall(ds, actual: int | None) -> str:
    """A native (uncompressed) pixel data element shorter than its frames need."""
    if actual is None:
        return ""
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        expected = (
            int(ds.get("Rows"))
            * int(ds.get("Columns"))
            * int(ds.get("SamplesPerPixel", 1))
            * frames
            * int(ds.get("BitsAllocated"))
            // 8
        )
    except (TypeError, ValueError):  # an attribute missing (None) or not a number
        return ""
    if actual < expected:
        return f"pixel data holds {actual} of the {expected} bytes its {frames} frame(s) need"
    return ""
