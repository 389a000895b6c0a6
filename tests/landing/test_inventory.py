"""Format sniffing and batch readiness, checked against pydicom's own test files."""

import os
import time
from pathlib import Path

import pydicom.data
import pytest

from hdh_assets.landing.batches import list_batches, ready_batches
from hdh_assets.landing.inventory import inventory_batch, sniff_format

PYDICOM_FILES = [Path(p) for p in pydicom.data.get_testdata_files() if Path(p).is_file()]


def test_pydicom_files_with_a_preamble_are_dicom_and_others_are_not():
    assert len(PYDICOM_FILES) > 150
    for path in PYDICOM_FILES:
        data = path.read_bytes()
        fmt = sniff_format(data[:132], path.name)
        if len(data) >= 132 and data[128:132] == b"DICM":
            assert fmt == "dicom", path.name
        else:
            assert fmt != "dicom", path.name


@pytest.mark.parametrize(
    ("head", "name", "expected"),
    [
        (b"", "x.dcm", "empty"),
        (b"PK\x03\x04rest", "study.zip", "zip"),
        (b"\x1f\x8b\x08", "study.tar.gz", "tar.gz"),
        (b"\x1f\x8b\x08", "Patient.ndjson.gz", "gzip"),
        (b"PAR1\x15", "events.parquet", "parquet"),
        (b'{"resourceType":"Patient"}', "Patient.ndjson", "ndjson"),
        (b'  {"resourceType":"Bundle"}', "b.json", "json"),
        (b"Export du PACS", "README.dcm", "other"),
    ],
)
def test_sniffing_reads_content_not_extensions(head, name, expected):
    assert sniff_format(head, name) == expected


def test_inventory_never_records_paths(tmp_path):
    batch = tmp_path / "b1"
    (batch / "DUPONT_Jean").mkdir(parents=True)
    (batch / "DUPONT_Jean" / "IM1.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)
    (batch / "notes.txt").write_text("hello")
    (batch / "_READY").write_text("")
    frame = inventory_batch("b1", batch)
    assert frame.height == 2
    assert sorted(frame["format"].to_list()) == ["dicom", "other"]
    assert sorted(frame["depth"].to_list()) == [0, 1]
    assert "DUPONT" not in frame.write_csv()


def test_batches_are_ready_by_marker_or_quiet_period(tmp_path):
    (tmp_path / "marked").mkdir()
    (tmp_path / "marked" / "_READY").write_text("")
    (tmp_path / "quiet").mkdir()
    old = time.time() - 3600
    (tmp_path / "quiet" / "a.dcm").write_text("x")
    for path in (tmp_path / "quiet" / "a.dcm", tmp_path / "quiet"):
        os.utime(path, (old, old))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "a.dcm").write_text("x")
    (tmp_path / ".incoming.partial").mkdir()
    states = {b.name: (b.ready, b.reason) for b in list_batches(tmp_path, quiet_seconds=300)}
    assert states["marked"] == (True, "marker")
    assert states["quiet"] == (True, "quiet")
    assert states["busy"][0] is False
    assert ".incoming.partial" not in states
    assert [b.name for b in ready_batches(tmp_path, 300)] == ["marked", "quiet"]
