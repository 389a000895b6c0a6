"""WADO-RS through dicomweb-client and plain HTTP: instances, metadata, bulk data, frames,
rendered images, content negotiation, and what the app refuses (tokens, unknown studies)."""

from __future__ import annotations

import io

import polars as pl
import pydicom
import pytest
import requests
from PIL import Image

from dicomweb.media import EXPLICIT_LE, NATIVE_SYNTAXES
from tests.dicomweb.conftest import SAMPLE, Store, client


def _row(store: Store, condition: pl.Expr) -> dict:
    return store.instances.filter(condition).sort("sop_instance_uid").row(0, named=True)


def _path(row: dict) -> str:
    return (
        f"/studies/{row['study_instance_uid']}/series/{row['series_instance_uid']}"
        f"/instances/{row['sop_instance_uid']}"
    )


def _ids(row: dict) -> tuple[str, str, str]:
    return row["study_instance_uid"], row["series_instance_uid"], row["sop_instance_uid"]


@pytest.fixture(scope="module")
def ct(store: Store) -> dict:
    return _row(store, (pl.col("batch") == SAMPLE) & (pl.col("modality") == "CT"))


@pytest.fixture(scope="module")
def multiframe(store: Store) -> dict:
    return _row(
        store,
        (pl.col("number_of_frames") > 1)
        & pl.col("transfer_syntax_uid").is_in(list(NATIVE_SYNTAXES)),
    )


def test_a_study_comes_back_as_the_stored_files(store, operator, ct):
    study = store.instances.filter(pl.col("study_instance_uid") == ct["study_instance_uid"])
    datasets = operator.retrieve_study(ct["study_instance_uid"])
    assert sorted(d.SOPInstanceUID for d in datasets) == sorted(study["sop_instance_uid"])
    for dataset in datasets:
        stored = store.home.store / "dicom" / ct["study_instance_uid"]
        path = next(stored.rglob(f"{dataset.SOPInstanceUID}.dcm"))
        assert dataset.PixelData == pydicom.dcmread(path).PixelData


def test_multipart_parts_are_byte_for_byte_the_store(service, auth, store, ct):
    response = requests.get(
        service.dicomweb + _path(ct),
        headers={**auth, "Accept": 'multipart/related; type="application/dicom"'},
    )
    assert response.status_code == 200
    content_type = response.headers["content-type"]
    assert content_type.startswith('multipart/related; type="application/dicom"')
    boundary = content_type.split("boundary=")[1].split(";")[0]
    (part,) = [p for p in response.content.split(f"--{boundary}".encode()) if b"\r\n\r\n" in p]
    body = part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")
    assert body == (store.home.store / "dicom" / ct["store_path"]).read_bytes()


def test_another_transfer_syntax_is_refused_naming_it(service, auth, ct):
    asked = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    response = requests.get(service.dicomweb + _path(ct), headers={**auth, "Accept": asked})
    assert response.status_code == 406
    assert "1.2.840.10008.1.2.4.50" in response.json()[0]["00000902"]["Value"][0]
    star = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    assert requests.get(service.dicomweb + _path(ct), headers={**auth, "Accept": star}).ok


def test_metadata_points_to_bulk_data_that_can_be_retrieved(store, operator, ct):
    metadata = operator.retrieve_instance_metadata(*_ids(ct))
    assert metadata["00080018"]["Value"] == [ct["sop_instance_uid"]]
    assert not any(tag.startswith("0002") for tag in metadata)
    uri = metadata["7FE00010"]["BulkDataURI"]
    assert uri.endswith(f"{_path(ct)}/bulk/7FE00010")
    stored = pydicom.dcmread(store.home.store / "dicom" / ct["store_path"])
    assert operator.retrieve_bulkdata(uri) == [stored.PixelData]
    series = operator.retrieve_series_metadata(*_ids(ct)[:2])
    assert ct["sop_instance_uid"] in {m["00080018"]["Value"][0] for m in series}


def test_frames_in_every_form_dicomweb_client_sends(operator, multiframe):
    ids = _ids(multiframe)
    count = multiframe["number_of_frames"]
    default = operator.retrieve_instance_frames(*ids, [1, count])  # type="*/*"
    bare = operator.retrieve_instance_frames(*ids, [1, count], ("application/octet-stream",))
    star = operator.retrieve_instance_frames(*ids, [1, count], (("application/octet-stream", "*"),))
    native = operator.retrieve_instance_frames(
        *ids, [1, count], (("application/octet-stream", EXPLICIT_LE),)
    )
    assert default == bare == star == native
    size = multiframe["rows"] * multiframe["columns"] * multiframe["samples_per_pixel"]
    assert len(default) == 2 and all(
        len(f) == size * multiframe["bits_allocated"] // 8 for f in default
    )
    assert default[0] != default[1]


def test_compressed_frames_as_stored_and_refused_forms(service, auth, store):
    row = _row(store, pl.col("transfer_syntax_uid") == "1.2.840.10008.1.2.4.50")
    url = f"{service.dicomweb}{_path(row)}/frames/1"
    jpeg = requests.get(url, headers={**auth, "Accept": 'multipart/related; type="image/jpeg"'})
    assert jpeg.status_code == 200
    assert "transfer-syntax=1.2.840.10008.1.2.4.50" in jpeg.headers["content-type"]
    assert b"\xff\xd8" in jpeg.content  # a JPEG stream
    refused = requests.get(url, headers={**auth, "Accept": 'multipart/related; type="image/jp2"'})
    assert refused.status_code == 406
    assert "image/jp2" in refused.json()[0]["00000902"]["Value"][0]
    missing = requests.get(f"{service.dicomweb}{_path(row)}/frames/2", headers=auth)
    assert missing.status_code == 404
    malformed = requests.get(f"{service.dicomweb}{_path(row)}/frames/1;2", headers=auth)
    assert malformed.status_code == 400


@pytest.mark.parametrize(
    ("media", "magic"), [("image/png", b"\x89PNG"), ("image/jpeg", b"\xff\xd8")]
)
def test_rendered_frames_are_windowed_images(service, auth, ct, multiframe, media, magic):
    for row, suffix in (
        (ct, "/rendered"),
        (multiframe, f"/frames/{multiframe['number_of_frames']}/rendered"),
    ):
        response = requests.get(
            service.dicomweb + _path(row) + suffix, headers={**auth, "Accept": media}
        )
        assert response.status_code == 200 and response.headers["content-type"] == media
        assert response.content.startswith(magic)
        image = Image.open(io.BytesIO(response.content))
        assert image.size == (row["columns"], row["rows"])
    windowed = requests.get(
        f"{service.dicomweb}{_path(ct)}/rendered",
        params={"window": "40,400,linear", "viewport": "32,32", "accept": "image/png"},
        headers=auth,
    )
    assert windowed.status_code == 200
    assert Image.open(io.BytesIO(windowed.content)).size == (32, 32)
    gif = requests.get(
        service.dicomweb + _path(ct) + "/rendered", headers={**auth, "Accept": "image/gif"}
    )
    assert gif.status_code == 406 and "image/gif" in gif.text


def test_qido_answers_dicom_json_and_refuses_xml(service, auth):
    ok = requests.get(
        f"{service.dicomweb}/studies", headers={**auth, "Accept": "application/dicom+json"}
    )
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("application/dicom+json")
    xml = 'multipart/related; type="application/dicom+xml"'
    refused = requests.get(f"{service.dicomweb}/studies", headers={**auth, "Accept": xml})
    assert refused.status_code == 406 and "application/dicom+xml" in refused.text
    capped = requests.get(f"{service.dicomweb}/instances", params={"limit": "5000"}, headers=auth)
    assert capped.headers["warning"].startswith("299 hdh-dicomweb:")
    bad = requests.get(
        f"{service.dicomweb}/studies", params={"fuzzymatching": "true"}, headers=auth
    )
    assert bad.status_code == 400 and "fuzzymatching" in bad.json()[0]["00000902"]["Value"][0]


def test_no_token_a_forged_one_or_an_expired_one_is_a_401(service, tokens, ct):
    url = f"{service.dicomweb}/studies"
    assert requests.get(url).status_code == 401
    assert requests.get(url).headers["www-authenticate"] == "Bearer"
    payload, _ = tokens.issue(None, 60).split(".")
    assert requests.get(url, headers={"Authorization": f"Bearer {payload}.AAAA"}).status_code == 401
    expired = tokens.issue(None, 1, now=0)
    assert requests.get(url, headers={"Authorization": f"Bearer {expired}"}).status_code == 401
    assert requests.get(service.dicomweb + _path(ct)).status_code == 401


def test_unknown_and_invisible_studies_answer_alike(service, auth, tokens, ct):
    unknown = requests.get(f"{service.dicomweb}/studies/1.2.3.4/metadata", headers=auth)
    assert unknown.status_code == 404
    assert unknown.json()[0]["00000902"]["Value"] == ["study not found"]
    stranger = {"Authorization": f"Bearer {tokens.issue('no-such-project', 60)}"}
    for path in (_path(ct), f"{_path(ct)}/metadata", f"/studies/{ct['study_instance_uid']}/series"):
        invisible = requests.get(service.dicomweb + path, headers=stranger)
        assert (invisible.status_code, invisible.json()) == (404, unknown.json())
    assert requests.get(f"{service.dicomweb}/studies", headers=stranger).json() == []
    other_series = f"/studies/{ct['study_instance_uid']}/series/1.2.3/metadata"
    assert requests.get(service.dicomweb + other_series, headers=auth).status_code == 404


def test_health_counts_requests_per_route_kind_for_operators(service, auth, tokens):
    requests.get(f"{service.dicomweb}/studies", headers=auth)
    requests.get(f"{service.dicomweb}/studies/1.2.3/metadata", headers=auth)
    health = requests.get(f"{service.dicomweb}/health", headers=auth)
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["studies"] > 0
    assert body["requests"]["qido"]["2xx"] >= 1 and body["requests"]["metadata"]["4xx"] >= 1
    project = {"Authorization": f"Bearer {tokens.issue('cardio-imaging', 60)}"}
    assert requests.get(f"{service.dicomweb}/health", headers=project).status_code == 403


def test_dicomweb_client_round_trip_of_a_search(operator, store):
    studies = operator.search_for_studies(search_filters={"ModalitiesInStudy": "SEG"})
    expected = set(store.instances.filter(pl.col("modality") == "SEG")["study_instance_uid"])
    assert {s["0020000D"]["Value"][0] for s in studies} == expected != set()
    anonymous = client(operator.base_url, None)
    with pytest.raises(requests.HTTPError) as refused:
        anonymous.search_for_studies()
    assert refused.value.response.status_code == 401
