"""The same instance delivered in another transfer syntax is a counted duplicate; the same SOP
Instance UID with other attributes or other pixel values stays a conflict."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from hdh_assets.imaging.encodings import Comparison, compare_instances
from hdh_assets.imaging.ingest import (
    DUPLICATE,
    INGESTED,
    QUARANTINED,
    SAME_INSTANCE_OTHER_ENCODING,
    IngestSettings,
    ingest_batch,
)

KEY = bytes(range(50, 82))


def _settings(root: Path) -> IngestSettings:
    return IngestSettings(KEY, root / "store", root / "quarantine", workers=1)


def _variants(folder: Path) -> dict[str, Path]:
    """CT_small as delivered, re-encoded three ways, and two real changes, one file each."""
    source = pydicom.data.get_testdata_file("CT_small.dcm")
    folder.mkdir(parents=True, exist_ok=True)
    written = {}

    def save(name: str, change=None, syntax=None) -> None:
        ds = pydicom.dcmread(source)
        if change:
            change(ds)
        if syntax == RLELossless:
            ds.compress(RLELossless, generate_instance_uid=False)
        elif syntax == ImplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        written[name] = path

    save("a_explicit.dcm")
    save("b_implicit.dcm", syntax=ImplicitVRLittleEndian)
    save("c_rle.dcm", syntax=RLELossless)

    def one_pixel(ds) -> None:
        pixels = ds.pixel_array.copy()
        pixels[10, 10] += 1
        ds.PixelData = pixels.tobytes()

    def thicker(ds) -> None:
        ds.SliceThickness = float(ds.SliceThickness) + 1

    save("d_one_pixel_rle.dcm", one_pixel, RLELossless)
    save("e_thicker_implicit.dcm", thicker, ImplicitVRLittleEndian)
    return written


def test_other_encodings_of_one_instance_are_duplicates_and_changes_conflicts(tmp_path):
    batch = tmp_path / "landing" / "b"
    _variants(batch)
    result = ingest_batch("b", batch, _settings(tmp_path))
    states = {o.name: (o.state, o.reason) for o in result.outcomes}
    assert states["a_explicit.dcm"] == (INGESTED, None)
    assert states["b_implicit.dcm"] == (DUPLICATE, SAME_INSTANCE_OTHER_ENCODING)
    assert states["c_rle.dcm"] == (DUPLICATE, SAME_INSTANCE_OTHER_ENCODING)
    assert states["d_one_pixel_rle.dcm"] == (QUARANTINED, "uid_conflict")
    assert states["e_thicker_implicit.dcm"] == (QUARANTINED, "uid_conflict")
    messages = {o.name: o.message for o in result.outcomes}
    assert messages["d_one_pixel_rle.dcm"].endswith("pixel values differ")
    assert messages["e_thicker_implicit.dcm"].endswith("1 attribute(s) differ once decoded")
    summary = result.summary()
    assert summary["same_instance_other_encoding"] == 2 and summary["duplicates"] == 2
    assert len(list((tmp_path / "store").rglob("*.dcm"))) == 1


def test_a_later_batch_in_another_encoding_counts_duplicates(tmp_path):
    files = _variants(tmp_path / "variants")
    first, second = tmp_path / "landing" / "first", tmp_path / "landing" / "second"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    files["a_explicit.dcm"].rename(first / "ct.dcm")
    files["c_rle.dcm"].rename(second / "ct.dcm")
    settings = _settings(tmp_path)
    stored = ingest_batch("first", first, settings)
    taken = {o.sop_instance_uid: o.row["sha256"] for o in stored.outcomes if o.row}
    later = ingest_batch("second", second, settings, taken_elsewhere=taken)
    (outcome,) = later.outcomes
    assert (outcome.state, outcome.reason) == (DUPLICATE, SAME_INSTANCE_OTHER_ENCODING)
    stored_files = list((tmp_path / "store").rglob("*.dcm"))
    assert len(stored_files) == 1
    assert pydicom.dcmread(stored_files[0]).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


@pytest.mark.parametrize(
    ("other", "verdict"),
    [("b_implicit.dcm", Comparison.SAME), ("d_one_pixel_rle.dcm", Comparison.DIFFERENT)],
)
def test_the_comparison_decodes_what_it_needs(tmp_path, other, verdict):
    files = _variants(tmp_path)
    stored = files["a_explicit.dcm"].read_bytes()
    assert compare_instances(stored, files[other].read_bytes())[0] is verdict
    assert compare_instances(stored, stored)[0] is Comparison.DIFFERENT  # same syntax: bytes rule
