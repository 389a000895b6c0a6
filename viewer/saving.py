"""What the viewer's server does to the objects a viewer saves, before the DICOMweb service
checks them.

OHIF writes a segmentation with three things the Annex E basic profile forbids in the
pseudonymised store: the report name the user typed as Series Description, dcmjs's "NOT FOR
CLINICAL USE" as Image Comments (both free text, which the profile removes, since a person may
type anything there), and no Patient Identity Removed. No viewer setting avoids them. The
viewer's server is the platform's own client, so it de-identifies what its viewer made the way
ingestion does: the free text goes, Patient Identity Removed says YES. Everything else is left
to the service, whose checks are unchanged: a name typed into a segment label, a reference to
another project's study, an image posted as a segmentation are still refused and quarantined.
"""

from __future__ import annotations

import io
import secrets

import pydicom
from pydicom.errors import InvalidDicomError

from dicomweb.stow import boundary_of, split_parts

FREE_TEXT = ("SeriesDescription", "ImageComments")


def clean_object(data: bytes) -> bytes:
    """One saved object without the viewer's free text; what is no DICOM is left as it is (the
    service refuses it, naming why)."""
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, ValueError, EOFError, OSError):
        return data
    for keyword in FREE_TEXT:
        if keyword in dataset:
            del dataset[keyword]
    dataset.PatientIdentityRemoved = "YES"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def clean_body(body: bytes, content_type: str | None) -> tuple[bytes, str]:
    """A STOW-RS body with every part cleaned, and its new Content-Type. Raises the service's
    own ``DicomWebError`` (415, 400) for a body it would refuse anyway."""
    parts = split_parts(body, boundary_of(content_type))
    boundary = f"hdh-viewer-{secrets.token_hex(12)}"
    out = io.BytesIO()
    for part in parts:
        out.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        out.write(clean_object(part))
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    media = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return out.getvalue(), media
