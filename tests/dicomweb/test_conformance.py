"""Our DICOMweb answers against Orthanc's, attribute by attribute, on the same stored files.

Orthanc holds the files of the store (the ingested synthetic sample and pydicom's corpus); both
servers are asked the same QIDO searches at the three levels, the metadata of every series and
the frames of every instance with pixel data. Differences kept on purpose are listed, with
their reasons, in ``dicomweb/conformance.py``; anything else fails. Each comparison asserts it
compared something, per data set and level.
"""

from __future__ import annotations

import hashlib

import polars as pl
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from dicomweb.conformance import Comparison
from dicomweb.media import COMPRESSED_MEDIA, EXPLICIT_BE, EXPLICIT_LE
from tests.dicomweb.conftest import CORPUS, SAMPLE, Store
from tests.dicomweb.servers import MISSING, Orthanc, missing_orthanc, start_orthanc

pytestmark = pytest.mark.orthanc
LEVELS = {
    "study": ("studies", "0020000D", "study_instance_uid"),
    "series": ("series", "0020000E", "series_instance_uid"),
    "instance": ("instances", "00080018", "sop_instance_uid"),
}
INCLUDED = {  # attributes outside the defaults, read from headers by both servers
    "study": "StudyDescription,00101010",
    "series": "SeriesDescription,BodyPartExamined",
    "instance": "00180050,ImageType,00280004",
}


@pytest.fixture(scope="module")
def orthanc(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Orthanc:
    missing = missing_orthanc()
    if missing:
        pytest.fail(MISSING.format(", ".join(missing)), pytrace=False)
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        files = store.files()
        assert server.upload(files) == len(files), "Orthanc refused some of the stored files"
        yield server
    finally:
        server.stop()


def _by_uid(items: list[dict], tag: str) -> dict[str, dict]:
    return {item[tag]["Value"][0]: item for item in items}


@pytest.mark.parametrize("level", list(LEVELS))
@pytest.mark.parametrize("include", [False, True], ids=["defaults", "includefield"])
def test_qido_answers_match_orthanc(store, service, auth, orthanc, level, include):
    path, tag, column = LEVELS[level]
    params = {"includefield": INCLUDED[level]} if include else {}
    ours = requests.get(f"{service.dicomweb}/{path}", params=params, headers=auth)
    theirs = requests.get(f"{orthanc.dicomweb}/{path}", params=params)
    assert ours.status_code == theirs.status_code == 200
    assert ours.headers["content-type"].startswith("application/dicom+json")
    mine, reference = _by_uid(ours.json(), tag), _by_uid(theirs.json(), tag)
    assert set(mine) == set(reference)
    for batch in (SAMPLE, CORPUS):
        uids = set(store.indexes[batch][column])
        comparison = Comparison()
        for uid in sorted(uids):
            comparison.add(f"qido-{level}", uid, mine[uid], reference[uid])
        print(f"qido {level} {batch} {'+'.join(params) or 'defaults'}: {comparison}")
        assert not comparison.mismatches, "\n".join(comparison.mismatches[:20])
        assert comparison.entities == len(uids) > 0
        assert comparison.attributes >= comparison.entities * 5, (batch, comparison)


@pytest.mark.parametrize(
    "query",
    [
        {"ModalitiesInStudy": "MR"},
        {"StudyDate": "20230101-20231231"},
        {"StudyDate": "-20000101"},
        {"limit": "5", "offset": "3"},
        {"Modality": "SEG"},
        {"00080060": "SR"},
        {"SeriesNumber": "1"},
    ],
    ids=lambda q: "&".join(f"{k}={v}" for k, v in q.items()),
)
def test_filtered_searches_select_what_orthanc_selects(service, auth, orthanc, query):
    level = "studies" if "ModalitiesInStudy" in query or "StudyDate" in query else "series"
    tag = "0020000D" if level == "studies" else "0020000E"
    ours = requests.get(f"{service.dicomweb}/{level}", params=query, headers=auth)
    theirs = requests.get(f"{orthanc.dicomweb}/{level}", params=query)
    assert ours.status_code == theirs.status_code == 200, ours.text
    if "limit" in query:  # the two orders differ: pages are compared by size only
        assert len(ours.json()) == len(theirs.json()) == 5
        return
    mine, reference = _by_uid(ours.json(), tag), _by_uid(theirs.json(), tag)
    assert mine
    if "StudyDate" in query:
        # Orthanc also lists studies without a date under a date range (its empty text sorts
        # first); a study without a date has no date in the range, so ours does not.
        assert set(mine) <= set(reference)
        assert all(
            "Value" not in reference[u].get("00080020", {}) for u in set(reference) - set(mine)
        )
    else:
        assert set(mine) == set(reference)


def test_metadata_matches_orthanc(store, service, auth, orthanc):
    series = store.instances.select("study_instance_uid", "series_instance_uid", "batch").unique()
    compared = {SAMPLE: Comparison(), CORPUS: Comparison()}
    for study, uid, batch in series.sort("series_instance_uid").iter_rows():
        path = f"/studies/{study}/series/{uid}/metadata"
        ours = requests.get(service.dicomweb + path, headers=auth)
        theirs = requests.get(orthanc.dicomweb + path)
        assert ours.status_code == theirs.status_code == 200, path
        mine, reference = _by_uid(ours.json(), "00080018"), _by_uid(theirs.json(), "00080018")
        assert set(mine) == set(reference)
        for sop in sorted(mine):
            compared[batch].add("metadata", sop, mine[sop], reference[sop])
    for batch, comparison in compared.items():
        print(f"metadata {batch}: {comparison}")
        assert not comparison.mismatches, "\n".join(comparison.mismatches[:20])
        assert comparison.entities == store.indexes[batch].height > 0
        assert comparison.attributes > comparison.entities * 20, (batch, comparison)


def _parts(response: requests.Response) -> list[bytes]:
    """The bodies of a multipart/related answer."""
    assert response.status_code == 200, response.text[:200]
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    chunks = response.content.split(f"--{boundary}".encode())[1:-1]
    return [c.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") for c in chunks]


def test_pixel_data_bulk_values_are_the_bytes_orthanc_returns(store, service, auth, orthanc):
    """The BulkDataURI each server gives for native pixel data returns the same bytes."""
    native = store.instances.filter(
        pl.col("transfer_syntax_uid").is_in([EXPLICIT_LE, "1.2.840.10008.1.2"])
        & pl.col("rows").is_not_null()
    )
    compared = {SAMPLE: 0, CORPUS: 0}
    for row in native.iter_rows(named=True):
        path = (
            f"/studies/{row['study_instance_uid']}/series/{row['series_instance_uid']}"
            f"/instances/{row['sop_instance_uid']}/metadata"
        )
        uris = [
            requests.get(base + path, headers=headers).json()[0]["7FE00010"]["BulkDataURI"]
            for base, headers in ((service.dicomweb, auth), (orthanc.dicomweb, {}))
        ]
        ours = _parts(requests.get(uris[0], headers=auth))
        theirs = _parts(requests.get(uris[1], timeout=30))
        assert ours == theirs and len(ours) == 1, row["sop_instance_uid"]
        compared[row["batch"]] += 1
    print(f"pixel data bulk values compared: {compared}")
    assert compared[SAMPLE] > 0 and compared[CORPUS] > 0


def _digests(frames: list[bytes]) -> list[str]:
    return [f"{len(f)}:{hashlib.sha256(f).hexdigest()}" for f in frames]


def _frames(client: DICOMwebClient, row: dict, numbers: list[int], media_types=None):
    return _digests(
        client.retrieve_instance_frames(
            row["study_instance_uid"],
            row["series_instance_uid"],
            row["sop_instance_uid"],
            numbers,
            media_types=media_types,
        )
    )


def test_frames_are_the_bytes_orthanc_returns(store, operator, orthanc):
    reference = DICOMwebClient(orthanc.dicomweb)
    star = (("application/octet-stream", "*"),)
    compared = {SAMPLE: 0, CORPUS: 0}
    compressed = 0
    with_pixels = store.instances.filter(
        pl.col("rows").is_not_null() & pl.col("number_of_frames").is_not_null()
    )
    for row in with_pixels.iter_rows(named=True):
        count = row["number_of_frames"]
        numbers = [1] if count == 1 else [1, count]
        syntax = row["transfer_syntax_uid"]
        ours = _frames(operator, row, numbers, star)
        # dicomweb-client's default Accept (type="*/*") and the bare octet-stream form too
        if syntax not in COMPRESSED_MEDIA:
            assert _frames(operator, row, numbers) == ours
            assert _frames(operator, row, numbers, ("application/octet-stream",)) == ours
        form = (("application/octet-stream", EXPLICIT_LE),) if syntax == EXPLICIT_BE else star
        assert ours == _frames(reference, row, numbers, form), row["sop_instance_uid"]
        if syntax in COMPRESSED_MEDIA:  # the stored frames, asked by their own media type
            stored = ((COMPRESSED_MEDIA[syntax], syntax),)
            assert _frames(operator, row, numbers, stored) == ours
            assert _frames(reference, row, numbers, stored) == ours
            compressed += 1
        compared[row["batch"]] += len(numbers)
    print(f"frames compared: {compared}, of compressed instances: {compressed}")
    assert compared[SAMPLE] > 0 and compared[CORPUS] > 0 and compressed > 0, compared


def test_decoded_frames_match_orthanc_where_both_decode(store, operator, orthanc):
    """Compressed frames asked as Explicit VR Little Endian: equal bytes where both servers
    have a decoder (JPEG baseline with colour conversion, RLE); sizes elsewhere."""
    reference = DICOMwebClient(orthanc.dicomweb)
    native = (("application/octet-stream", EXPLICIT_LE),)
    equal = 0
    rows = store.instances.filter(pl.col("transfer_syntax_uid").is_in(list(COMPRESSED_MEDIA)))
    for row in rows.iter_rows(named=True):
        try:
            ours = _frames(operator, row, [1], native)
        except requests.HTTPError as error:  # no decoder here: 406, and it says which syntax
            assert error.response.status_code == 406
            assert row["transfer_syntax_uid"] in error.response.text
            continue
        try:
            theirs = _frames(reference, row, [1], native)
        except requests.HTTPError:  # Orthanc has no JPEG 2000 decoder
            assert row["transfer_syntax_uid"].startswith("1.2.840.10008.1.2.4.9")
            expected = row["rows"] * row["columns"] * row["samples_per_pixel"]
            assert int(ours[0].split(":")[0]) == expected * row["bits_allocated"] // 8
            continue
        assert ours == theirs, row["transfer_syntax_uid"]
        equal += 1
    print(f"decoded frames equal to Orthanc's: {equal}")
    assert equal > 0
