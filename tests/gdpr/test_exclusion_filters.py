"""Exclusion at the ingestion boundary: rows naming the person, and rows hanging off their
resources without naming them, are dropped; everybody else's are kept."""

from __future__ import annotations

import polars as pl

from hdh_assets.clinical.assets import without_excluded_people
from resources.lake.frames import drop_values


def test_clinical_tables_lose_the_person_and_what_hangs_off_their_resources():
    tables = {
        "patients": pl.LazyFrame({"id": ["pa", "pb"], "subject_pseudonym": ["A", "B"]}),
        "observations": pl.LazyFrame(
            {"id": ["o1", "o2", "o3"], "subject_pseudonym": ["A", "B", None]}
        ),
        "observation_components": pl.LazyFrame(
            {"observation_id": ["o1", "o2"], "code": ["x", "y"]}
        ),
        "codings": pl.LazyFrame({"resource_id": ["pa", "o1", "o2", "pb"], "code": list("1234")}),
    }
    kept = {k: v.collect() for k, v in without_excluded_people(tables, frozenset({"A"})).items()}
    assert kept["patients"]["id"].to_list() == ["pb"]
    assert kept["observations"]["id"].to_list() == ["o2", "o3"]  # a null subject is not A
    assert kept["observation_components"]["observation_id"].to_list() == ["o2"]
    assert kept["codings"]["resource_id"].to_list() == ["o2", "pb"]
    same = without_excluded_people(tables, frozenset())
    assert same is tables


def test_the_lake_filter_keeps_nulls_and_other_people():
    frame = pl.DataFrame({"subject_pseudonym": ["A", None, "B", "A"], "n": [1, 2, 3, 4]})
    assert drop_values(frame, "subject_pseudonym", frozenset({"A"}))["n"].to_list() == [2, 3]
    lazy = drop_values(frame.lazy(), "subject_pseudonym", frozenset({"A", "B"}))
    assert lazy.collect()["n"].to_list() == [2]
