"""Header-level rewriting: the same de-identified header as the pydicom path, the pixel bytes
copied unchanged, and every transfer syntax of the standard ingested, whether pydicom knows it
or not."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info

from hdh_assets.imaging import ingest
from hdh_assets.imaging.archives import LandedFile
from hdh_assets.imaging.elements import NotWalkable, read_header
from hdh_assets.imaging.index import index_row
from hdh_assets.imaging.ingest import HEADER, INGESTED, PYDICOM, IngestSettings, process_file

KEY = bytes(range(7, 39))
PYDICOM_FILES = sorted(Path(p) for p in pydicom.data.get_testdata_files() if Path(p).is_file())
# Added to the standard in 2024 (JPEG XL, deflated image frames), unknown to pydicom's table.
NEW_SYNTAXES = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
}
STANDARD_SYNTAXES = {
    uid: entry[0] for uid, entry in UID_dictionary.items() if entry[1] == "Transfer Syntax"
} | NEW_SYNTAXES
NATIVE = {  # syntaxes whose pixel data is native, with a pydicom file written in each
    "1.2.840.10008.1.2": "MR_small_implicit.dcm",
    "1.2.840.10008.1.2.1": "CT_small.dcm",
    "1.2.840.10008.1.2.2": "MR_small_bigendian.dcm",
    "1.2.840.10008.1.2.1.99": "image_dfl.dcm",
    "1.2.840.10008.1.2.4.95": "image_dfl.dcm",  # JPIP Referenced Deflate: a deflated dataset
    "1.2.840.10008.1.2.4.205": "image_dfl.dcm",  # JPIP HTJ2K Referenced Deflate
    "1.2.840.10008.1.20": "MR_small_implicit.dcm",  # Papyrus 3: implicit VR little endian
}
INFLATED = {  # written inflated, under the syntax that names the same dataset inflated
    "1.2.840.10008.1.2.1.99": "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.4.95": "1.2.840.10008.1.2.4.94",
    "1.2.840.10008.1.2.4.205": "1.2.840.10008.1.2.4.204",
}
ENCAPSULATED_SOURCE = "JPEG2000.dcm"  # fragments are copied, never decoded: any codec will do


def _settings(root: Path) -> IngestSettings:
    return IngestSettings(KEY, root / "store", root / "quarantine", workers=1)


def _flat(ds, prefix: str = "") -> dict:
    """Every element of a dataset by path, group lengths left out (the rewrite drops them)."""
    out = {}
    for element in ds:
        key = f"{prefix}{element.tag}"
        if element.tag.element == 0:
            continue
        if element.VR == "SQ":
            out[key] = len(element.value)
            for number, item in enumerate(element.value):
                out.update(_flat(item, f"{key}[{number}]"))
        else:
            value = element.value
            out[key] = bytes(value) if isinstance(value, bytes | bytearray) else value
    return out


def _pixel_bytes(data: bytes) -> bytes:
    header = read_header(data)
    pixel = header.pixel_element()
    return header.data[pixel.start : pixel.end] if pixel is not None else b""


@pytest.fixture(scope="module")
def both_paths(tmp_path_factory) -> list[tuple[Path, object, object]]:
    """Each pydicom test file through ingestion (header first) and through the pydicom path."""
    root = tmp_path_factory.mktemp("paths")
    settings = _settings(root)
    results = []
    for number, path in enumerate(PYDICOM_FILES):
        staging = root / "staging" / str(number)
        (staging / "chosen").mkdir(parents=True)
        chosen = process_file(LandedFile(path.name, path), settings, staging / "chosen")
        reference = ingest._process_with_pydicom(
            path.name, path.read_bytes(), "", settings, staging
        )
        results.append((path, chosen, reference))
    return results


def test_every_file_the_pydicom_path_accepts_is_still_accepted(both_paths):
    lost = [p.name for p, chosen, ref in both_paths if ref.state == INGESTED != chosen.state]
    assert not lost
    by_header = [chosen for _, chosen, _ in both_paths if chosen.parser == HEADER]
    assert len(by_header) > 140  # the header path is the one that runs, not the fallback
    assert {c.parser for _, c, _ in both_paths} == {HEADER, PYDICOM}


def test_a_refused_file_is_refused_for_the_same_reason(both_paths):
    differ = [
        (p.name, chosen.reason, ref.reason)
        for p, chosen, ref in both_paths
        if chosen.parser == HEADER and ref.state != INGESTED and chosen.reason != ref.reason
    ]
    assert not differ
    assert sum(c.parser == HEADER and c.state != INGESTED for _, c, _ in both_paths) >= 10


def test_the_header_path_writes_what_the_pydicom_path_writes(both_paths):
    """Element for element once parsed (the bytes differ: kept values are copied as they were
    encoded), with the same index row, and the pixel data copied byte for byte."""
    compared = 0
    for path, chosen, reference in both_paths:
        if chosen.parser != HEADER or chosen.state != INGESTED:
            continue
        new = Path(chosen.staged).read_bytes()
        old = Path(reference.staged).read_bytes()
        parsed_new, parsed_old = (pydicom.dcmread(io.BytesIO(b)) for b in (new, old))
        differences = {
            key
            for key in _flat(parsed_new).keys() | _flat(parsed_old).keys()
            if _flat(parsed_new).get(key) != _flat(parsed_old).get(key)
        }
        assert not differences, (path.name, sorted(differences)[:5])
        assert parsed_new.file_meta.TransferSyntaxUID == parsed_old.file_meta.TransferSyntaxUID
        unhashed = {"sha256", "file_bytes"}
        assert {k: v for k, v in chosen.row.items() if k not in unhashed} == {
            k: v for k, v in reference.row.items() if k not in unhashed
        }
        original = path.read_bytes()
        if read_header(original).pixel_element() is not None:
            assert _pixel_bytes(new) == _pixel_bytes(original), path.name
        compared += 1
    assert compared > 100


def test_the_walk_finds_the_elements_pydicom_finds():
    walked = 0
    for path in PYDICOM_FILES:
        data = path.read_bytes()
        try:
            header = read_header(data)
            parsed = pydicom.dcmread(io.BytesIO(data))
        except NotWalkable:
            continue
        except Exception:  # broken files: the fallback's classification covers them
            continue
        assert [e.tag for e in header.elements] == [int(e.tag) for e in parsed], path.name
        walked += 1
    assert walked > 140


def _relabelled(source: bytes, syntax: str) -> bytes:
    """The same dataset bytes under File Meta that names ``syntax`` (written by pydicom)."""
    header = read_header(source)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = header.meta[0x00020002]
    meta.MediaStorageSOPInstanceUID = header.meta[0x00020003]
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = "1.2.3.4"
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + buffer.getvalue() + source[header.dataset_start :]


@pytest.mark.parametrize("syntax", sorted(STANDARD_SYNTAXES), ids=STANDARD_SYNTAXES.get)
def test_every_transfer_syntax_is_ingested_with_its_pixel_bytes_unchanged(syntax, tmp_path):
    source_path = pydicom.data.get_testdata_file(NATIVE.get(syntax, ENCAPSULATED_SOURCE))
    source = Path(source_path).read_bytes()
    own = pydicom.dcmread(source_path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    delivered = source if own == syntax else _relabelled(source, syntax)
    landed = tmp_path / "landed.dcm"
    landed.write_bytes(delivered)
    staging = tmp_path / "staging"
    staging.mkdir()
    outcome = process_file(LandedFile("landed.dcm", landed), _settings(tmp_path), staging)
    assert outcome.state == INGESTED, (outcome.reason, outcome.message)
    assert outcome.parser == HEADER
    written = Path(outcome.staged).read_bytes()
    reread = pydicom.dcmread(io.BytesIO(written))  # pydicom reads it, known syntax or not
    assert reread.file_meta.TransferSyntaxUID == INFLATED.get(syntax, syntax)
    assert outcome.row["transfer_syntax_uid"] == INFLATED.get(syntax, syntax)
    assert reread.PatientIdentityRemoved == "YES"
    assert reread.SOPInstanceUID.startswith("2.25.")
    if syntax in INFLATED:  # written inflated: the pixel values are the same
        assert reread.PixelData == pydicom.dcmread(source_path).PixelData
    else:
        assert _pixel_bytes(written) == _pixel_bytes(delivered)
        assert reread.PixelData == pydicom.dcmread(io.BytesIO(delivered)).PixelData


def test_the_index_row_of_a_header_is_the_row_pydicom_would_give(tmp_path):
    """The row is built from the walked header's raw elements: pydicom converts them lazily."""
    path = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    staging = tmp_path / "s"
    staging.mkdir()
    outcome = process_file(LandedFile(path.name, path), _settings(tmp_path), staging)
    written = Path(outcome.staged).read_bytes()
    full = pydicom.dcmread(io.BytesIO(written))
    expected = index_row(full, outcome.row["subject_kind"], len(written), "", "")
    assert {k: v for k, v in outcome.row.items() if k not in ("sha256", "store_path")} == {
        k: v for k, v in expected.items() if k not in ("sha256", "store_path")
    }
    assert outcome.row["number_of_frames"] == 1 and outcome.row["rows"] == 128


def test_every_ingested_file_keeps_its_pixel_bytes(both_paths):
    """Whichever path read it, a stored file's pixel data is the delivered file's, byte for
    byte (pydicom reads both; a deflated file's pixel data is compared inflated)."""
    compared = 0
    for path, chosen, _ in both_paths:
        if chosen.state != INGESTED:
            continue
        delivered = pydicom.dcmread(path, force=True)
        if "PixelData" not in delivered:
            continue
        stored = pydicom.dcmread(chosen.staged)
        assert stored.PixelData == delivered.PixelData, path.name
        compared += 1
    assert compared > 80
