"""The viewer's server removes the viewer's free text from what it saves, and nothing else."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomweb.errors import DicomWebError
from dicomweb.stow import boundary_of, split_parts
from viewer.saving import FREE_TEXT, clean_body, clean_object


def _saved_by_a_viewer(name: str) -> bytes:
    """A file as OHIF writes its segmentations: a typed report name and dcmjs's comment."""
    dataset = pydicom.dcmread(get_testdata_file(name))
    dataset.SeriesDescription = "Jean Dupont liver"  # anything a person may type
    dataset.ImageComments = "NOT FOR CLINICAL USE"
    if "PatientIdentityRemoved" in dataset:
        del dataset.PatientIdentityRemoved
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm"])
def test_only_the_free_text_goes_and_identity_removed_is_declared(name):
    original = pydicom.dcmread(io.BytesIO(_saved_by_a_viewer(name)))
    cleaned = pydicom.dcmread(io.BytesIO(clean_object(_saved_by_a_viewer(name))))
    assert all(keyword not in cleaned for keyword in FREE_TEXT)
    assert cleaned.PatientIdentityRemoved == "YES"
    assert b"Jean Dupont" not in clean_object(_saved_by_a_viewer(name))
    kept = {e.tag for e in original} - {original[k].tag for k in FREE_TEXT}
    assert {e.tag for e in cleaned} - {cleaned["PatientIdentityRemoved"].tag} == kept
    for tag in kept:  # every other value, pixel data (compressed or not) included, unchanged
        assert cleaned[tag].value == original[tag].value, tag
    assert cleaned.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID


def test_a_body_keeps_its_parts_in_order_and_what_is_no_dicom_as_it_is():
    parts = [
        _saved_by_a_viewer("CT_small.dcm"),
        b"not a DICOM file",
        _saved_by_a_viewer("MR_small_RLE.dcm"),
    ]
    boundary = "from-the-browser"
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
            for p in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    sent_type = f'multipart/related; type="application/dicom"; boundary={boundary}'

    cleaned, media = clean_body(body, sent_type)

    out = split_parts(cleaned, boundary_of(media))
    assert len(out) == 3 and out[1] == b"not a DICOM file"
    assert [pydicom.dcmread(io.BytesIO(p)).SOPInstanceUID for p in (out[0], out[2])] == [
        pydicom.dcmread(io.BytesIO(p)).SOPInstanceUID for p in (parts[0], parts[2])
    ]
    assert all(b"Jean Dupont" not in p for p in out)


def test_a_body_the_service_would_refuse_is_refused_the_same_way():
    with pytest.raises(DicomWebError) as refused:
        clean_body(b"--x\r\n\r\n--x--", "multipart/related; type=application/json; boundary=x")
    assert refused.value.status == 415
