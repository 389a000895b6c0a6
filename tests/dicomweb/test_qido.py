"""QIDO-RS matching, includefield, paging and refusals, on the index view (no server)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from dicomweb.attributes import Level, returned
from dicomweb.errors import DicomWebError
from dicomweb.headers import StoredFiles
from dicomweb.index import IndexSource
from dicomweb.qido import TRUNCATED_WARNING, Searcher, parse_query
from tests.dicomweb.conftest import Store

BASE = "http://dicomweb.test/dicom-web"


@pytest.fixture(scope="module")
def searcher(store: Store) -> Searcher:
    view = IndexSource(store.home).current()
    return Searcher(view, StoredFiles(store.home.store / "dicom"), BASE)


def uids(searcher: Searcher, level: Level, params: list[tuple[str, str]], **kwargs) -> list[str]:
    tag = {"study": "0020000D", "series": "0020000E", "instance": "00080018"}[level.value]
    result = searcher.search(parse_query(params, level), **kwargs)
    return [item[tag]["Value"][0] for item in result.items]


def studies_where(store: Store, condition: pl.Expr) -> set[str]:
    return set(store.instances.filter(condition)["study_instance_uid"])


def test_every_study_is_listed_once_with_the_attributes_the_standard_requires(store, searcher):
    result = searcher.search(parse_query([], Level.STUDY))
    assert len(result.items) == store.instances["study_instance_uid"].n_unique()
    required = {a.tag for a in returned(Level.STUDY) if not a.only_if_present}
    for item in result.items:
        assert required <= set(item)
        uid = item["0020000D"]["Value"][0]
        mine = store.instances.filter(pl.col("study_instance_uid") == uid)
        assert item["00201208"]["Value"] == [mine.height]
        assert item["00201206"]["Value"] == [mine["series_instance_uid"].n_unique()]
        assert item["00081190"]["Value"] == [f"{BASE}/studies/{uid}"]
        assert item["00100020"]["Value"] == [mine["subject_pseudonym"][0]]


def test_non_image_series_are_listed_like_any_other(searcher):
    modalities = {
        item["00080060"]["Value"][0]
        for item in searcher.search(parse_query([], Level.SERIES)).items
        if "Value" in item["00080060"]
    }
    assert {"SEG", "SR", "RTSTRUCT", "RTPLAN", "CT", "MR"} <= modalities


def test_single_values_wildcards_and_names(store, searcher):
    pseudonym = store.indexes["sample"]["subject_pseudonym"][0]
    expected = studies_where(store, pl.col("subject_pseudonym") == pseudonym)
    assert set(uids(searcher, Level.STUDY, [("PatientID", pseudonym)])) == expected
    assert set(uids(searcher, Level.STUDY, [("00100020", pseudonym)])) == expected
    assert set(uids(searcher, Level.STUDY, [("PatientID", pseudonym[:6] + "*")])) >= expected
    assert set(uids(searcher, Level.STUDY, [("PatientID", "?" + pseudonym[1:])])) == expected
    # PatientName holds the pseudonym too (read from the headers); names match in any case
    assert set(uids(searcher, Level.STUDY, [("PatientName", pseudonym.upper())])) == expected
    assert uids(searcher, Level.STUDY, [("PatientID", "nobody")]) == []
    everyone = uids(searcher, Level.STUDY, [])
    assert uids(searcher, Level.STUDY, [("PatientID", "*")]) == everyone
    assert uids(searcher, Level.STUDY, [("AccessionNumber", "")]) == everyone


def test_date_ranges_closed_and_open(store, searcher):
    low, high = dt.date(2023, 6, 1), dt.date(2024, 5, 31)
    cases = {
        "20230601-20240531": pl.col("study_date").is_between(low, high),
        "20230601-": pl.col("study_date") >= low,
        "-20240531": pl.col("study_date") <= high,
        "20230601": pl.col("study_date") == low,
    }
    for text, condition in cases.items():
        assert set(uids(searcher, Level.STUDY, [("StudyDate", text)])) == studies_where(
            store, condition
        ), text
    assert studies_where(store, cases["20230601-20240531"])  # the range selects something


def test_time_ranges_compare_times_not_text(searcher):
    everything = set(uids(searcher, Level.STUDY, [("StudyTime", "000000-235959.999999")]))
    morning = set(uids(searcher, Level.STUDY, [("StudyTime", "-1200")]))
    afternoon = set(uids(searcher, Level.STUDY, [("StudyTime", "120000.000001-")]))
    assert morning and afternoon and morning | afternoon == everything
    assert not morning & afternoon


def test_uid_lists_comma_separated_or_repeated(store, searcher):
    first, second, *_ = sorted(store.instances["study_instance_uid"].unique())
    assert set(uids(searcher, Level.STUDY, [("StudyInstanceUID", f"{first},{second}")])) == {
        first,
        second,
    }
    repeated = [("StudyInstanceUID", first), ("0020000D", second)]
    assert set(uids(searcher, Level.STUDY, repeated)) == {first, second}


def test_modalities_in_study_matches_any_of_the_study(store, searcher):
    with_mr = studies_where(store, pl.col("modality") == "MR")
    with_ct = studies_where(store, pl.col("modality") == "CT")
    with_c_ = studies_where(store, pl.col("modality").str.contains("^C.$"))
    assert set(uids(searcher, Level.STUDY, [("ModalitiesInStudy", "MR")])) == with_mr
    assert set(uids(searcher, Level.STUDY, [("ModalitiesInStudy", "CT,MR")])) == with_mr | with_ct
    assert set(uids(searcher, Level.STUDY, [("ModalitiesInStudy", "C?")])) == with_c_ > with_ct


def test_series_and_instances_are_scoped_to_their_study(store, searcher):
    study = store.indexes["sample"]["study_instance_uid"][0]
    mine = store.instances.filter(pl.col("study_instance_uid") == study)
    scope = {"StudyInstanceUID": study}
    assert set(uids(searcher, Level.SERIES, [], scope=scope)) == set(mine["series_instance_uid"])
    assert set(uids(searcher, Level.INSTANCE, [], scope=scope)) == set(mine["sop_instance_uid"])
    numbered = uids(searcher, Level.INSTANCE, [("InstanceNumber", "1")], scope=scope)
    assert set(numbered) == set(mine.filter(pl.col("instance_number") == 1)["sop_instance_uid"])


def test_limit_and_offset_page_through_the_same_order(searcher):
    everything = uids(searcher, Level.INSTANCE, [])
    pages = [
        uids(searcher, Level.INSTANCE, [("limit", "25"), ("offset", str(start))])
        for start in range(0, len(everything), 25)
    ]
    assert [uid for page in pages for uid in page] == everything


def test_a_huge_limit_is_capped_and_says_so(searcher):
    capped = searcher.search(parse_query([("limit", "100000")], Level.INSTANCE), max_results=50)
    assert len(capped.items) == 50
    assert capped.warning == TRUNCATED_WARNING
    assert capped.warning.startswith('299 hdh-dicomweb: "')
    unlimited = searcher.search(parse_query([], Level.INSTANCE), max_results=50)
    assert len(unlimited.items) == 50 and unlimited.warning == TRUNCATED_WARNING
    small = searcher.search(parse_query([("limit", "10")], Level.INSTANCE), max_results=50)
    assert len(small.items) == 10 and small.warning is None


def test_includefield_by_tag_keyword_and_all(searcher):
    plain = searcher.search(parse_query([("limit", "1")], Level.INSTANCE)).items[0]
    assert "00180050" not in plain and "00080008" not in plain
    included = searcher.search(
        parse_query([("limit", "1"), ("includefield", "00180050,ImageType")], Level.INSTANCE)
    ).items[0]
    assert included["00180050"]["vr"] == "DS" and included["00080008"]["vr"] == "CS"
    everything = searcher.search(
        parse_query([("limit", "1"), ("includefield", "all")], Level.INSTANCE)
    ).items[0]
    assert {"00200032", "00200037", "00280004"} <= set(everything)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ([("fuzzymatching", "true")], "fuzzymatching"),
        ([("PatientWeight", "70")], "PatientWeight"),
        ([("NotAKeyword", "x")], "NotAKeyword"),
        ([("_", "1700000000")], "_"),
        ([("StudyInstanceUID", "1.2.*")], "StudyInstanceUID"),
        ([("StudyDate", "2024-01-01")], "StudyDate"),
        ([("StudyDate", "20240101-20240131-")], "StudyDate"),
        ([("SeriesNumber", "one")], "SeriesNumber"),
        ([("PatientID", "a"), ("PatientID", "b")], "PatientID"),
        ([("limit", "ten")], "limit"),
        ([("limit", "0")], "limit"),
        ([("offset", "-1")], "offset"),
        ([("includefield", "NoSuchThing")], "NoSuchThing"),
        ([("00400275.00400009", "X")], "00400275.00400009"),
    ],
)
def test_what_is_not_supported_is_refused_naming_it(params, named):
    with pytest.raises(DicomWebError) as refused:
        parse_query(params, Level.STUDY)
    assert refused.value.status == 400
    assert named in refused.value.message


def test_fuzzymatching_false_is_accepted():
    assert parse_query([("fuzzymatching", "false")], Level.STUDY).filters == []
