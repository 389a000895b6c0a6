"""STOW-RS of derived objects: a highdicom SEG over a stored CT series is stored with
dicomweb-client, found by QIDO and retrieved byte for byte by WADO; what is refused comes back
with its FailureReason and is kept in quarantine with a sidecar naming the reason."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import threading
from copy import deepcopy

import highdicom as hd
import numpy as np
import polars as pl
import pydicom
import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomweb.app import create_app
from dicomweb.stow import CANNOT_UNDERSTAND, SOP_CLASS_NOT_SUPPORTED, quarantine_note
from resources.home import HdhHome
from tests.dicomweb.conftest import SAMPLE, Store, client
from tests.dicomweb.servers import start_service
from tests.dicomweb.test_access import grant

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
BOUNDARY = "stow-test-boundary"


@pytest.fixture(scope="module")
def home(store: Store, tmp_path_factory) -> HdhHome:
    """A home of its own (STOW writes to it) with the sample batch of the shared store."""
    home = HdhHome(tmp_path_factory.mktemp("stow") / "hdh").ensure()
    partition = "imaging/dicom_instances/batch=" + SAMPLE
    shutil.copytree(store.home.lake / partition, home.lake / partition)
    for path in store.indexes[SAMPLE]["store_path"]:
        target = home.store / "dicom" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store.home.store / "dicom" / path, target)
    return home


@pytest.fixture(scope="module")
def studies(store: Store) -> pl.DataFrame:
    """CT studies of the sample, one row per study, with the person they belong to."""
    ct = store.indexes[SAMPLE].filter(pl.col("modality") == "CT")
    return ct.select("study_instance_uid", "subject_pseudonym").unique().sort("study_instance_uid")


@pytest.fixture(scope="module")
def service(home, tokens, studies):
    # Two projects, each granted one study of a different person
    people = studies.unique("subject_pseudonym", keep="first").sort("study_instance_uid")
    grant(home, "project-a", "imaging_clinical_linkage", people[0:1], "subject_pseudonym")
    grant(home, "project-b", "imaging_clinical_linkage", people[1:2], "subject_pseudonym")
    running = start_service(create_app(home, tokens))
    yield running
    running.stop()


def _sources(home: HdhHome, store: Store, study: str) -> list[Dataset]:
    rows = (
        store.indexes[SAMPLE]
        .filter((pl.col("study_instance_uid") == study) & (pl.col("modality") == "CT"))
        .sort("series_instance_uid", "instance_number")
    )
    series = rows["series_instance_uid"][0]
    paths = rows.filter(pl.col("series_instance_uid") == series)["store_path"][:3]
    return [pydicom.dcmread(home.store / "dicom" / p) for p in paths]


def make_seg(sources: list[Dataset]) -> Dataset:
    """A binary SEG of a square over the sources, made conformant the way a de-identifying
    viewer would: remapped (2.25) UIDs, no Contribution Description."""
    first = sources[0]
    mask = np.zeros((len(sources), first.Rows, first.Columns), dtype=bool)
    mask[:, 2:6, 2:6] = True
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="lesion",
        segmented_property_category=hd.sr.CodedConcept(
            "49755003", "SCT", "Morphologically abnormal structure"
        ),
        segmented_property_type=hd.sr.CodedConcept("108369006", "SCT", "Neoplasm"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    with pytest.warns(UserWarning):  # the pseudonym as PatientName has one component
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=mask,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=generate_uid(prefix=None),
            series_number=99,
            sop_instance_uid=generate_uid(prefix=None),
            instance_number=1,
            manufacturer="HDH",
            manufacturer_model_name="test",
            software_versions="1",
            device_serial_number="1",
        )
    remapped: dict[str, str] = {}
    for element in seg.iterall():
        if element.keyword == "DimensionOrganizationUID":
            element.value = remapped.setdefault(str(element.value), generate_uid(prefix=None))
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDescription" in item:
            del item.ContributionDescription
    return seg


def variant(seg: Dataset) -> Dataset:
    """A deep copy of ``seg`` as another instance (new SOP Instance UID)."""
    copy = deepcopy(seg)
    copy.SOPInstanceUID = generate_uid(prefix=None)
    copy.file_meta.MediaStorageSOPInstanceUID = copy.SOPInstanceUID
    return copy


def _bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset)
    return buffer.getvalue()


def _post(service, token: str, parts: list[bytes], study: str | None = None):
    body = b"".join(
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
        for p in parts
    )
    body += f"--{BOUNDARY}--\r\n".encode()
    url = service.dicomweb + "/studies" + (f"/{study}" if study else "")
    return requests.post(
        url,
        data=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        },
    )


def _failed(response) -> list[dict]:
    return response.json()["00081198"]["Value"]


def _assert_refused(home, response, data: bytes, failure: int, code: str, status=409):
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/dicom+json")
    (item,) = _failed(response)
    assert item["00081197"]["Value"] == [failure]
    assert code in item["00000902"]["Value"][0]
    note = quarantine_note(home, data)
    assert note is not None and note["reason"] == code
    stem = hashlib.sha256(data).hexdigest()
    (kept,) = home.quarantine.glob(f"dicomweb/*/{stem}.dcm")
    assert kept.read_bytes() == data
    assert note["failure_reason"] == f"0x{failure:04X}"
    return item, note


@pytest.fixture(scope="module")
def seg_a(home, store, studies, service) -> Dataset:
    """A SEG over the study project A may see."""
    people = studies.unique("subject_pseudonym", keep="first").sort("study_instance_uid")
    return make_seg(_sources(home, store, people["study_instance_uid"][0]))


def test_a_seg_is_stored_found_by_qido_and_retrieved_byte_for_byte(home, service, tokens, seg_a):
    operator = client(service.dicomweb, tokens.issue(None, 3600))
    study = str(seg_a.StudyInstanceUID)
    result = operator.store_instances([seg_a])
    (stored,) = result.ReferencedSOPSequence
    assert stored.ReferencedSOPInstanceUID == seg_a.SOPInstanceUID
    assert stored.ReferencedSOPClassUID == SEG_CLASS
    assert stored.RetrieveURL.endswith(f"/instances/{seg_a.SOPInstanceUID}")
    assert "FailedSOPSequence" not in result
    series = operator.search_for_series(study)
    found = {s["0020000E"]["Value"][0]: s["00080060"]["Value"][0] for s in series}
    assert found[str(seg_a.SeriesInstanceUID)] == "SEG"
    # WADO returns the very bytes stored, and the file sits where ingestion would put it
    path = home.store / "dicom" / study / str(seg_a.SeriesInstanceUID)
    stored_file = path / f"{seg_a.SOPInstanceUID}.dcm"
    response = requests.get(
        f"{service.dicomweb}/studies/{study}/series/{seg_a.SeriesInstanceUID}"
        f"/instances/{seg_a.SOPInstanceUID}",
        headers={
            "Authorization": f"Bearer {tokens.issue(None, 3600)}",
            "Accept": 'multipart/related; type="application/dicom"',
        },
    )
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0]
    (part,) = [p for p in response.content.split(f"--{boundary}".encode()) if b"\r\n\r\n" in p]
    assert part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") == stored_file.read_bytes()
    assert stored_file.read_bytes() == _bytes(seg_a)
    retrieved = operator.retrieve_instance(
        study, str(seg_a.SeriesInstanceUID), str(seg_a.SOPInstanceUID)
    )
    assert retrieved.SOPClassUID == SEG_CLASS
    derived = list((home.lake / "imaging" / "dicom_instances").glob("batch=derived-*/*.parquet"))
    assert derived and not list(home.quarantine.glob("dicomweb/*/*.json"))
    # A project seeing the study stores too, through the study's own path
    project = client(service.dicomweb, tokens.issue("project-a", 3600))
    second = variant(seg_a)
    assert project.store_instances([second], study).ReferencedSOPSequence


def test_an_image_sop_class_is_refused(home, service, tokens, store, studies):
    ct = _sources(home, store, studies["study_instance_uid"][0])[0]
    ct.SOPInstanceUID = generate_uid(prefix=None)
    ct.file_meta.MediaStorageSOPInstanceUID = ct.SOPInstanceUID
    data = _bytes(ct)
    response = _post(service, tokens.issue(None, 3600), [data])
    item, _ = _assert_refused(
        home, response, data, SOP_CLASS_NOT_SUPPORTED, "sop_class_not_supported"
    )
    assert item["00081155"]["Value"] == [ct.SOPInstanceUID]


def test_a_seg_referencing_an_unknown_series_is_refused(home, service, tokens, seg_a):
    seg = variant(seg_a)
    seg.ReferencedSeriesSequence[0].SeriesInstanceUID = generate_uid(prefix=None)
    data = _bytes(seg)
    response = _post(service, tokens.issue(None, 3600), [data])
    _assert_refused(home, response, data, CANNOT_UNDERSTAND, "unresolved_reference")


def test_a_seg_on_a_study_another_project_sees_is_refused(home, service, tokens, seg_a):
    seg = variant(seg_a)
    data = _bytes(seg)
    response = _post(service, tokens.issue("project-b", 3600), [data])
    _, note = _assert_refused(home, response, data, CANNOT_UNDERSTAND, "unresolved_reference")
    assert note["caller"] == "project project-b"
    # the same object from project A is stored: the refusal was about the caller
    accepted = _post(service, tokens.issue("project-a", 3600), [data])
    assert accepted.status_code == 200, accepted.text


def test_a_seg_with_another_patient_identity_is_refused(home, service, tokens, seg_a):
    seg = variant(seg_a)
    seg.PatientName = "DUPONT^JEANNE"
    seg.PatientID = "1850775123456"
    data = _bytes(seg)
    response = _post(service, tokens.issue(None, 3600), [data])
    _, note = _assert_refused(home, response, data, CANNOT_UNDERSTAND, "patient_mismatch")
    text = response.text + json.dumps(note)
    assert "DUPONT" not in text and "1850775123456" not in text
    assert "PatientID" in note["message"] and "PatientName" in note["message"]


def test_identifying_attributes_are_refused_without_echoing_them(home, service, tokens, seg_a):
    seg = variant(seg_a)
    seg.PatientAddress = "12 rue des Lilas, Lyon"
    seg.add_new(0x00090010, "LO", "ACME VIEWER")
    data = _bytes(seg)
    response = _post(service, tokens.issue(None, 3600), [data])
    _, note = _assert_refused(home, response, data, CANNOT_UNDERSTAND, "identifying_attributes")
    text = response.text + json.dumps(note)
    assert "Lilas" not in text and "ACME" not in text
    assert "PatientAddress" in note["message"] and "private" in note["message"]


def test_concurrent_requests_store_each_instance_once(home, service, tokens, seg_a):
    token = tokens.issue(None, 3600)
    segs = [variant(seg_a) for _ in range(4)]
    payloads = [_bytes(s) for s in segs] + [_bytes(segs[0])]  # the first one twice
    statuses: list[int] = []

    def post(data: bytes) -> None:
        statuses.append(_post(service, token, [data]).status_code)

    threads = [threading.Thread(target=post, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 5
    index = pl.read_parquet(home.lake / "imaging" / "dicom_instances" / "**" / "*.parquet")
    for seg in segs:
        assert index.filter(pl.col("sop_instance_uid") == seg.SOPInstanceUID).height == 1
    assert not list((home.lake / "imaging" / "dicom_instances").rglob("*.partial"))


def test_a_mixed_request_answers_202_with_both_sequences(home, service, tokens, seg_a):
    good = variant(seg_a)
    bad = variant(good)
    bad.PatientName = "DUPONT^JEANNE"
    response = _post(service, tokens.issue(None, 3600), [_bytes(good), _bytes(bad)])
    assert response.status_code == 202
    (stored,) = response.json()["00081199"]["Value"]
    assert stored["00081155"]["Value"] == [good.SOPInstanceUID]
    (failed,) = _failed(response)
    assert failed["00081155"]["Value"] == [bad.SOPInstanceUID]
    assert failed["00081197"]["Value"] == [CANNOT_UNDERSTAND]
    assert quarantine_note(home, _bytes(bad))["reason"] == "patient_mismatch"


def test_a_part_not_dicom_or_of_another_study_than_the_path_is_refused(
    home, service, tokens, seg_a, studies
):
    token = tokens.issue(None, 3600)
    garbage = b"not a DICOM file"
    _assert_refused(
        home, _post(service, token, [garbage]), garbage, CANNOT_UNDERSTAND, "unreadable"
    )
    other = next(s for s in studies["study_instance_uid"] if s != seg_a.StudyInstanceUID)
    data = _bytes(variant(seg_a))
    response = _post(service, token, [data], study=other)
    _assert_refused(home, response, data, CANNOT_UNDERSTAND, "study_mismatch")
    assert response.json()["00081190"]["Value"][0].endswith(f"/studies/{other}")


def test_other_media_types_and_tokens_are_refused(service, tokens):
    token = tokens.issue(None, 3600)
    url = service.dicomweb + "/studies"
    for content_type in ("application/dicom", 'multipart/related; type="application/dicom+json"'):
        response = requests.post(
            url,
            data=b"{}",
            headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
        )
        assert response.status_code == 415
    assert requests.post(url, data=b"").status_code == 401


def test_an_erasure_removes_the_person_s_derived_objects_and_their_index_rows(
    home, service, tokens, store, studies
):
    """Derived partitions are written outside any run, so the erasure rewrites them itself."""
    from hdh_assets.gdpr.service import remove_derived_rows, remove_store_copies
    from hdh_assets.imaging.derived import derived_files

    people = studies.unique("subject_pseudonym", keep="first").sort("study_instance_uid")
    erased, kept = people.row(2, named=True), people.row(3, named=True)
    segs = {
        row["subject_pseudonym"]: make_seg(_sources(home, store, row["study_instance_uid"]))
        for row in (erased, kept)
    }
    operator_token = tokens.issue(None, 3600)
    for seg in segs.values():
        assert _post(service, operator_token, [_bytes(seg)]).status_code == 200
    seg = segs[erased["subject_pseudonym"]]
    seg_file = home.store / "dicom" / str(seg.StudyInstanceUID) / str(seg.SeriesInstanceUID)
    seg_file = seg_file / f"{seg.SOPInstanceUID}.dcm"
    assert seg_file.exists()

    removed = remove_store_copies(home, erased["subject_pseudonym"])
    dropped = remove_derived_rows(home, erased["subject_pseudonym"])

    assert dropped == 1 and not seg_file.exists()
    assert any(path.endswith(f"{seg.SOPInstanceUID}.dcm") for path in removed)
    rows = pl.concat([pl.read_parquet(f) for f in derived_files(home.lake)])
    assert erased["subject_pseudonym"] not in set(rows["subject_pseudonym"])
    assert kept["subject_pseudonym"] in set(rows["subject_pseudonym"])  # the other stays
    # Without any exclusion recorded, the service no longer lists the erased SEG
    operator = client(service.dicomweb, operator_token)
    listed = {
        s["0020000E"]["Value"][0] for s in operator.search_for_series(erased["study_instance_uid"])
    }
    assert str(seg.SeriesInstanceUID) not in listed
    other = segs[kept["subject_pseudonym"]]
    listed = {
        s["0020000E"]["Value"][0] for s in operator.search_for_series(kept["study_instance_uid"])
    }
    assert str(other.SeriesInstanceUID) in listed
