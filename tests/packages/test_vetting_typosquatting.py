"""Look-alike names of popular or already-approved packages go to review; popular names pass."""

from __future__ import annotations

import pytest

from package_manager.vetting.typosquatting import (
    CRAN_POPULAR_FILE,
    check_typosquatting,
    damerau_levenshtein,
    guarddog_top_pypi_path,
    popular_names,
    skeleton,
)


def test_popular_lists_come_from_guarddog_and_the_platform() -> None:
    pypi = popular_names("pypi")
    assert guarddog_top_pypi_path().is_file()
    assert len(pypi) > 1000  # guarddog's bundled list of top PyPI projects
    assert {"requests", "numpy", "python-dateutil", "typing-extensions"} <= pypi
    cran = popular_names("cran")
    assert CRAN_POPULAR_FILE.read_text().startswith("#")
    assert 140 <= len(cran) <= 250
    assert {"ggplot2", "dplyr", "data.table", "Rcpp", "tidyr"} <= cran


def test_damerau_levenshtein() -> None:
    assert damerau_levenshtein("requests", "reqeusts", 2) == 1  # a swap is one edit
    assert damerau_levenshtein("numpy", "numpyy", 2) == 1
    assert damerau_levenshtein("numpy", "nunpi", 2) == 2
    assert damerau_levenshtein("pandas", "flask", 1) == 2  # beyond the limit: limit + 1


def test_skeleton_folds_separators_and_look_alikes() -> None:
    assert skeleton("python-dateutil") == skeleton("pythondateutil")
    assert skeleton("nurnpy") == skeleton("numpy")
    assert skeleton("d0cker") == skeleton("docker")
    assert skeleton("c1ick") == skeleton("click")


@pytest.mark.parametrize(
    ("ecosystem", "name", "similar"),
    [
        ("pypi", "reqeusts", "requests"),
        ("pypi", "requestss", "requests"),
        ("pypi", "pythondateutil", "python-dateutil"),
        ("pypi", "nurnpy", "numpy"),
        ("pypi", "Python_Dateutils", "python-dateutil"),
        ("cran", "ggplot3", "ggplot2"),
        ("cran", "dp1yr", "dplyr"),
        ("cran", "rcpp", "Rcpp"),  # CRAN names are exact: a case change is a look-alike
        ("cran", "datatable", "data.table"),
    ],
)
def test_look_alikes_need_review(ecosystem: str, name: str, similar: str) -> None:
    result = check_typosquatting(ecosystem, name, popular_names(ecosystem), [], 1)
    assert result.status == "needs_review", result
    assert similar in {s["name"] for s in result.evidence["similar"]}


@pytest.mark.parametrize(
    ("ecosystem", "name"),
    [
        ("pypi", "requests"),
        ("pypi", "Requests"),  # PEP 503: the same project
        ("pypi", "python_dateutil"),
        ("pypi", "dagster"),
        ("pypi", "hdh-cohort-builder"),
        ("cran", "ggplot2"),
        ("cran", "data.table"),
        ("cran", "hdhcohorts"),
    ],
)
def test_popular_and_distinct_names_pass(ecosystem: str, name: str) -> None:
    result = check_typosquatting(ecosystem, name, popular_names(ecosystem), [], 1)
    assert result.status == "passed", result


def test_already_approved_names_count_like_popular_ones() -> None:
    approved = ["hdh-cohort-builder"]
    near = check_typosquatting("pypi", "hdh-cohort-buider", popular_names("pypi"), approved, 1)
    assert near.status == "needs_review"
    assert near.evidence["similar"] == [
        {"name": "hdh-cohort-builder", "why": "edit distance 1", "list": "approved"}
    ]
    itself = check_typosquatting("pypi", "HDH_Cohort_Builder", popular_names("pypi"), approved, 1)
    assert itself.status == "passed"


def test_distance_follows_the_policy() -> None:
    assert check_typosquatting("cran", "gplot22", popular_names("cran"), [], 1).status == "passed"
    assert check_typosquatting("cran", "gplot22", popular_names("cran"), [], 2).status == (
        "needs_review"
    )
