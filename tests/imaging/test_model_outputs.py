"""Model outputs as assets: delivered masks become SEGs over the pseudonymised series, stored and
indexed through the STOW checks, and are measured against the project's reference masks.

The store is the synthetic sample's DICOM batch ingested with the DICOMweb tests' helper (no
Spark); a project is granted four studies. Hand values: two 20 x 20 boxes over two slices,
shifted by one slice, overlap on one slice (Dice 1/2) and every surface voxel lies on the other
surface or one slice away (HD95 = the slice spacing).
"""

from __future__ import annotations

import gzip
import io
import json
import math
import shutil
import subprocess

import dagster as dg
import nibabel as nib
import numpy as np
import polars as pl
import pydicom
import pytest
from starlette.testclient import TestClient

from dicomweb.app import create_app
from dicomweb.tokens import Tokens
from hdh_assets.definitions import build_resources
from hdh_assets.imaging.model_outputs.agreement import agreement, dice, hd95
from hdh_assets.imaging.model_outputs.assets import (
    AGREEMENT,
    DICE_CHECK,
    NO_DELIVERY,
    QUARANTINE,
    RECONCILE_CHECK,
    REFERENCE_CHECK,
    REPORTED_CHECK,
    SEGMENTATIONS,
)
from hdh_assets.imaging.model_outputs.assets import assets as model_output_assets
from hdh_assets.imaging.model_outputs.deliveries import (
    BAD_DTYPE,
    GEOMETRY_MISMATCH,
    SHAPE_MISMATCH,
    Unusable,
    masks_from_array,
    read_nifti,
    series_geometry,
)
from hdh_assets.imaging.model_outputs.segmentation import (
    SegStore,
    build_seg,
    seg_masks,
    to_bytes,
)
from resources.home import HdhHome
from resources.imaging import DicomIngestionResource
from tests.conftest import identity_needles
from tests.dicomweb.conftest import SAMPLE, TOKEN_KEY, ingest
from tests.dicomweb.test_access import grant

PROJECT = "seg-review"
BOX = (slice(10, 30), slice(10, 30))


# -- pure cores ----------------------------------------------------------------------------------
def _cube(shape, start, side) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + side) for s in start)] = True
    return mask


def test_dice_and_hd95_of_two_shifted_cubes_equal_the_hand_values():
    spacing = (2.0, 0.5, 0.7)  # frames, rows, columns (mm)
    reference = _cube((30, 30, 30), (5, 5, 5), 10)
    # Shifted by k columns: the overlap is 10 x 10 x (10 - k) voxels, Dice (10 - k) / 10.
    for k in (1, 2, 4):
        shifted = _cube((30, 30, 30), (5, 5, 5 + k), 10)
        assert dice(shifted, reference) == pytest.approx((10 - k) / 10)
    # Shifted by one voxel along one axis, every surface voxel is on the other surface or one
    # voxel away along that axis (more than 5% of them): HD95 is that axis' spacing.
    for axis, step in enumerate(spacing):
        start = [5, 5, 5]
        start[axis] += 1
        assert hd95(_cube((30, 30, 30), start, 10), reference, spacing) == pytest.approx(step)
    found = agreement(_cube((30, 30, 30), (5, 5, 6), 10), reference, spacing)
    assert found.predicted_ml == found.reference_ml == pytest.approx(1000 * 0.7 / 1000)
    assert found.volume_difference_ml == 0 and found.relative_volume_difference == 0


def test_empty_masks_have_defined_values():
    spacing = (1.0, 1.0, 1.0)
    empty = np.zeros((4, 8, 8), dtype=bool)
    full = _cube((4, 8, 8), (1, 2, 2), 3)
    both = agreement(empty, empty, spacing)
    assert (both.dice, both.hd95_mm, both.relative_volume_difference) == (1.0, 0.0, None)
    missed = agreement(empty, full, spacing)
    assert missed.dice == 0 and math.isnan(missed.hd95_mm)
    assert missed.volume_difference_ml == pytest.approx(-27 / 1000)
    assert missed.relative_volume_difference == pytest.approx(-1)
    extra = agreement(full, empty, spacing)
    assert (
        extra.dice == 0 and math.isnan(extra.hd95_mm) and extra.relative_volume_difference is None
    )


def test_masks_are_split_into_segments_and_bad_ones_named_without_identifiers():
    shape = (3, 4, 5)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[0, 0, 0], labels[1, 1, 1] = 1, 3
    masks = masks_from_array(labels, shape)  # a label map: segments 1, 2 and 3
    assert masks.numbers == [1, 2, 3] and masks.arrays.sum(axis=(1, 2, 3)).tolist() == [1, 0, 1]
    stacked = masks_from_array(np.ones((2, *shape), dtype=bool), shape)
    assert stacked.numbers == [1, 2]
    assert masks_from_array(np.ones(shape, dtype=bool), shape).numbers == [1]
    with pytest.raises(Unusable) as wrong:
        masks_from_array(np.zeros((3, 4, 6), dtype=bool), shape)
    assert wrong.value.reason == SHAPE_MISMATCH
    assert "(3, 4, 6)" in wrong.value.message and "(3, 4, 5)" in wrong.value.message
    with pytest.raises(Unusable) as float_mask:
        masks_from_array(np.zeros(shape, dtype=np.float32), shape)
    assert float_mask.value.reason == BAD_DTYPE


# -- a platform with the sample ------------------------------------------------------------------
@pytest.fixture(scope="module")
def platform(tmp_path_factory, sample_root):
    """The sample ingested; the project granted the studies of four of five volume series."""
    home = HdhHome(tmp_path_factory.mktemp("model-outputs") / "hdh").ensure()
    (batch,) = (sample_root / "landing" / "dicom").iterdir()
    index = ingest(home, {SAMPLE: batch})[SAMPLE]
    volumes = (
        index.filter(pl.col("modality") == "CT")
        .group_by("series_instance_uid", "study_instance_uid", "subject_pseudonym")
        .len()
        .filter(pl.col("len") >= 3)
        .sort("series_instance_uid")
    )
    chosen = volumes.unique("study_instance_uid", keep="first").sort("series_instance_uid")[:5]
    assert chosen.height == 5
    granted = chosen[:4].select("study_instance_uid", "subject_pseudonym")
    grant(home, PROJECT, "imaging_clinical_linkage", granted, "subject_pseudonym")
    return home, index, list(chosen["series_instance_uid"])


def _geometry(home: HdhHome, series: str):
    store = SegStore(home, DicomIngestionResource().profile(), "http://dicomweb.test/dicom-web")
    return store, series_geometry(store.view().instances, series)


def test_a_seg_made_from_masks_reads_back_as_the_same_masks(platform):
    home, index, series = platform
    store, geometry = _geometry(home, series[0])
    labels = np.zeros(geometry.shape, dtype=np.uint8)
    labels[0][BOX] = 1
    labels[2, 40:50, 40:50] = 2
    masks = masks_from_array(labels, geometry.shape)
    seg = build_seg(
        store.sources(geometry), masks, project=PROJECT, model="unet", delivery_sha256="0" * 64
    )
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [series[0]]
    assert str(seg.SOPInstanceUID).startswith("2.25.") and "ContributionDescription" not in str(
        seg.ContributingEquipmentSequence
    )
    # Mask frames follow the slices from the lowest position up (the axial normal here is +z).
    heights = {
        r["sop_instance_uid"]: r["image_position_patient"][2]
        for r in index.filter(pl.col("series_instance_uid") == series[0]).iter_rows(named=True)
    }
    assert [heights[uid] for uid in geometry.sop_uids] == sorted(heights.values())
    again = seg_masks(pydicom.dcmread(io.BytesIO(to_bytes(seg))), geometry)
    assert again.numbers == [1, 2] and np.array_equal(again.arrays, masks.arrays)
    assert again.labels == {1: "unet 1", 2: "unet 2"}


def test_a_seg_made_here_has_no_dciodvfy_error(platform, tmp_path):
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools: make system-deps)")
    home, _, series = platform
    store, geometry = _geometry(home, series[0])
    mask = np.zeros(geometry.shape, dtype=np.uint8)
    mask[(slice(0, 2), *BOX)] = 1
    for model in ("unet", "reference"):  # automatic (with its algorithm) and manual
        seg = build_seg(
            store.sources(geometry),
            masks_from_array(mask, geometry.shape),
            project=PROJECT,
            model=model,
            delivery_sha256="2" * 64,
        )
        path = tmp_path / f"{model}.dcm"
        path.write_bytes(to_bytes(seg))
        found = subprocess.run(
            [dciodvfy, "-new", str(path)], capture_output=True, text=True, timeout=60
        )
        errors = [
            line for line in (found.stdout + found.stderr).splitlines() if line.startswith("Error")
        ]
        assert not errors, errors


def _nifti(mask: np.ndarray, rows: pl.DataFrame, shift_mm: float = 0.0) -> bytes:
    """A NIfTI mask as dcm2niix writes one, built from the index rows of its series: voxel axes
    (column, row, slice), rows flipped, affine in RAS; ``shift_mm`` moves it along the slices."""
    rows = rows.sort(pl.col("image_position_patient").list.get(2))
    first = rows.row(0, named=True)
    along_row, along_column = np.array(first["image_orientation_patient"]).reshape(2, 3)
    normal = np.cross(along_row, along_column)
    row_mm, column_mm = first["pixel_spacing"]
    positions = np.array(rows["image_position_patient"].to_list())
    slice_mm = float(np.linalg.norm(positions[1] - positions[0]))
    data = np.transpose(mask, (2, 1, 0, *range(3, mask.ndim)))[:, ::-1]
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = (
        along_row * column_mm,
        -along_column * row_mm,
        normal * slice_mm,
    )
    lps[:3, 3] = positions[0] + (mask.shape[1] - 1) * along_column * row_mm + shift_mm * normal
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return gzip.compress(
        nib.Nifti1Image(np.ascontiguousarray(data).astype(np.uint8), ras).to_bytes()
    )


def test_a_nifti_mask_is_placed_on_the_series_by_its_affine(platform):
    home, index, series = platform
    _, geometry = _geometry(home, series[0])
    rows = index.filter(pl.col("series_instance_uid") == series[0])
    mask = np.zeros(geometry.shape, dtype=np.uint8)
    mask[0, 5:9, 20:30] = 1  # asymmetric: a wrong flip or transpose would move it
    mask[2, 40:41, 3:4] = 2
    assert np.array_equal(read_nifti(_nifti(mask, rows), geometry), mask)
    stacked = np.stack([mask == 1, mask == 2]).astype(np.uint8)
    assert np.array_equal(read_nifti(_nifti(np.moveaxis(stacked, 0, -1), rows), geometry), stacked)
    with pytest.raises(Unusable) as moved:
        read_nifti(_nifti(mask, rows, shift_mm=geometry.spacing_mm[0]), geometry)
    assert moved.value.reason == GEOMETRY_MISMATCH


# -- the assets ----------------------------------------------------------------------------------
def _deliver(home: HdhHome, model: str, name: str, data: bytes | np.ndarray) -> None:
    folder = home.landing_for("model_outputs") / PROJECT / model
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, np.ndarray):
        np.save(folder / name, data)
    else:
        (folder / name).write_bytes(data)


def _materialize(home: HdhHome, instance) -> dg.ExecuteInProcessResult:
    return dg.materialize(model_output_assets, resources=build_resources(home), instance=instance)


def _metadata(result, key):
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return event.event_specific_data.materialization.metadata


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_nothing_delivered_is_a_no_op(hdh_home):
    with dg.instance_for_test() as instance:
        result = _materialize(hdh_home, instance)
    assert result.success
    for key in (SEGMENTATIONS, QUARANTINE, AGREEMENT):
        assert _metadata(result, key)["status"].value == NO_DELIVERY
    assert all(_checks(result).values())
    assert not list(hdh_home.store.rglob("*.dcm"))


@pytest.mark.slow
def test_deliveries_are_stored_as_segs_and_measured_against_the_reference(
    platform, identities, monkeypatch
):
    home, index, series = platform
    monkeypatch.setenv("HDH_VIEWER_URL", "https://viewer.test")
    _, geometry = _geometry(home, series[0])
    shape = geometry.shape
    assert shape[0] == 3
    # Series 0: a model's box over slices 0-1; the reference's over slices 1-2, plus a second
    # segment the model missed.
    predicted = np.zeros(shape, dtype=bool)
    predicted[(slice(0, 2), *BOX)] = True
    reference = np.zeros((2, *shape), dtype=np.uint8)
    reference[(0, slice(1, 3), *BOX)] = 1
    reference[1, 0, 40:50, 40:50] = 1
    _deliver(home, "unet", f"{series[0]}.npy", predicted)
    _deliver(home, "reference", f"{series[0]}.npy", reference)
    rows = index.filter(pl.col("series_instance_uid") == series[0])
    _deliver(home, "nnunet", f"{series[0]}.nii.gz", _nifti(predicted.astype(np.uint8), rows))
    # Series 1: a prediction without reference; series 2: a mask of the wrong shape; series 3:
    # a reference delivered as a SEG (stored as delivered), predicted exactly; series 4: a study
    # the project is not granted; and a series nobody holds.
    _deliver(home, "unet", f"{series[1]}.npy", predicted)
    _deliver(home, "unet", f"{series[2]}.npy", np.zeros((shape[0], shape[1], 7), dtype=bool))
    store, other = _geometry(home, series[3])
    delivered_seg = to_bytes(
        build_seg(
            store.sources(other),
            masks_from_array(predicted, other.shape),
            project="annotation-tool",
            model="expert",
            delivery_sha256="1" * 64,
        )
    )
    _deliver(home, "reference", f"{series[3]}.dcm", delivered_seg)
    _deliver(home, "unet", f"{series[3]}.npy", predicted)
    _deliver(home, "unet", f"{series[4]}.npy", predicted)
    _deliver(home, "unet", "2.25.12345.npy", predicted)
    _deliver(home, "unet", "notes.txt", b"not read")
    outside = home.root / "elsewhere.npy"
    np.save(outside, predicted)
    (home.landing_for("model_outputs") / PROJECT / "unet" / f"{series[1]}1.npy").symlink_to(outside)

    with dg.instance_for_test() as instance:
        result = _materialize(home, instance)
        assert result.success
        again = _materialize(home, instance)  # the same deliveries: nothing stored twice
    assert again.success

    segs = pl.read_parquet(home.lake / "imaging" / "model_segmentations")
    assert sorted(segs.select("model", "series_instance_uid").iter_rows()) == sorted(
        [
            ("unet", series[0]),
            ("nnunet", series[0]),
            ("reference", series[0]),
            ("unet", series[1]),
            ("unet", series[3]),
            ("reference", series[3]),
        ]
    )
    assert set(segs["status"]) == {"already_stored"}  # the table of the second run
    assert _metadata(result, SEGMENTATIONS)["stored"].value == 6
    quarantine = pl.read_parquet(home.lake / "imaging" / "model_output_quarantine")
    assert set(quarantine["reason"]) == {
        "shape_mismatch",
        "series_not_granted",
        "unknown_series",
        "unsupported_format",
        "unreadable",  # a link is never followed
    }
    (wrong,) = quarantine.filter(pl.col("reason") == "shape_mismatch").to_dicts()
    assert f"{(shape[0], shape[1], 7)}" in wrong["message"] and "2.25" not in wrong["message"]
    assert not any("2.25" in m for m in quarantine["message"])
    note = home.quarantine / "model_outputs" / PROJECT / f"{wrong['file_sha256']}.json"
    assert json.loads(note.read_text())["reason"] == "shape_mismatch"
    checks = _checks(result)
    assert checks[RECONCILE_CHECK] and checks[REPORTED_CHECK] and checks[DICE_CHECK]
    assert checks[REFERENCE_CHECK] is False  # series 1 has no reference: reported, and warned

    # Stored and indexed: QIDO lists both SEG series in the study, for the project's token.
    study = geometry.study_uid
    seg_rows = segs.filter(pl.col("series_instance_uid") == series[0])
    tokens = Tokens(TOKEN_KEY)
    with TestClient(create_app(home, tokens)) as client:
        found = client.get(
            f"/dicom-web/studies/{study}/series",
            params={"Modality": "SEG"},
            headers={"Authorization": f"Bearer {tokens.issue(PROJECT, 60)}"},
        )
    assert found.status_code == 200
    listed = {item["0020000E"]["Value"][0] for item in found.json()}
    assert listed == set(seg_rows["seg_series_instance_uid"])
    derived = pl.read_parquet(
        str(home.lake / "imaging" / "dicom_instances" / "batch=derived-*" / "*.parquet")
    )
    assert derived.height == 6  # the second run added nothing
    (as_delivered,) = segs.filter(pl.col("delivery_format") == "dicom_seg").to_dicts()
    assert as_delivered["segment_labels"] == ["expert 1"]
    stored_path = f"{as_delivered['study_instance_uid']}/{as_delivered['seg_series_instance_uid']}"
    stored_file = f"{stored_path}/{as_delivered['seg_sop_instance_uid']}.dcm"
    assert (home.store / "dicom" / stored_file).read_bytes() == delivered_seg
    for row in seg_rows.iter_rows(named=True):
        path = home.store / "dicom" / study / row["seg_series_instance_uid"]
        stored = pydicom.dcmread(path / f"{row['seg_sop_instance_uid']}.dcm")
        assert [s.SeriesInstanceUID for s in stored.ReferencedSeriesSequence] == [series[0]]
        assert (
            stored.PatientID
            == index.filter(pl.col("study_instance_uid") == study)["subject_pseudonym"].first()
        )

    # The metrics equal the hand values.
    table = pl.read_parquet(home.lake / "imaging" / "model_agreement")
    positions = sorted(
        p[2]
        for p in index.filter(pl.col("series_instance_uid") == series[0])["image_position_patient"]
    )
    slice_mm = positions[1] - positions[0]
    assert slice_mm > 0 and positions[2] - positions[1] == pytest.approx(slice_mm)
    row_mm, column_mm = geometry.spacing_mm[1:]
    voxel_ml = slice_mm * row_mm * column_mm / 1000
    first_series = table.filter(pl.col("series_instance_uid") == series[0])
    one, two = first_series.filter(pl.col("model") == "unet").sort("segment_number").to_dicts()
    assert one["status"] == "compared" and one["dice"] == pytest.approx(0.5)
    assert one["hd95_mm"] == pytest.approx(slice_mm)
    assert one["predicted_ml"] == one["reference_ml"] == pytest.approx(800 * voxel_ml)
    assert one["volume_difference_ml"] == pytest.approx(0)
    assert two["dice"] == 0 and two["hd95_mm"] is None and two["predicted_empty"]
    assert two["volume_difference_ml"] == pytest.approx(-100 * voxel_ml)
    assert two["relative_volume_difference"] == pytest.approx(-1)
    (alone,) = table.filter(pl.col("series_instance_uid") == series[1]).to_dicts()
    assert alone["status"] == "no_reference" and alone["dice"] is None
    (exact,) = table.filter(pl.col("series_instance_uid") == series[3]).to_dicts()
    assert (exact["dice"], exact["hd95_mm"], exact["volume_difference_ml"]) == (1.0, 0.0, 0.0)
    # The same mask delivered as NIfTI gives the same values.
    nifti = first_series.filter(pl.col("model") == "nnunet").sort("segment_number")
    assert nifti.drop("model", "seg_sop_instance_uid").equals(
        first_series.filter(pl.col("model") == "unet").drop("model", "seg_sop_instance_uid")
    )
    metadata = _metadata(result, AGREEMENT)
    assert metadata["mean_dice_per_model"].value == {
        f"{PROJECT}/nnunet": pytest.approx(0.25),
        f"{PROJECT}/unet": pytest.approx(0.5),
    }
    assert f"https://viewer.test/viewer?StudyInstanceUIDs={study}" in metadata["review"].value

    # No synthetic identity in any output: tables, notes, stored SEGs, metadata.
    needles = identity_needles(identities)
    texts = [
        json.dumps(segs.to_dicts(), default=str),
        json.dumps(table.to_dicts(), default=str),
        json.dumps(quarantine.to_dicts()),
        *(p.read_text() for p in (home.quarantine / "model_outputs").rglob("*.json")),
        *(
            str(v.value)
            for key in (SEGMENTATIONS, AGREEMENT)
            for v in _metadata(result, key).values()
        ),
    ]
    seg_bytes = [(home.store / "dicom" / p).read_bytes() for p in derived["store_path"]]
    for needle in needles:
        assert not any(needle in text for text in texts), "an identifier reached an output"
        assert not any(needle.encode() in data for data in seg_bytes), "an identifier in a SEG"
