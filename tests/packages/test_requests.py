"""Package requests: parsing, validation messages, the two sources, filing and request ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from package_manager.model import PackageRequest
from package_manager.requests import (
    REQUESTS_FOLDER,
    RequestError,
    file_request,
    load_request_file,
    load_requests,
    make_request,
    parse_requirement,
)

PROJECT = "diabetes-outcomes"
WHEN = "2026-01-05T10:00:00Z"


def _request(requirement: str = "pandas==2.2.3", **overrides) -> PackageRequest:
    arguments = {
        "ecosystem": "pypi",
        "reason": "data frames for the cohort tables",
        "requested_by": "amina.benali@univ-exemple.fr",
        "requested_at": WHEN,
    }
    return make_request(overrides.pop("project", PROJECT), requirement, **(arguments | overrides))


def _write_yaml(path: Path, document: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# --- parse_requirement ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ecosystem", "expected"),
    [
        ("pandas", "pypi", ("pandas", None)),
        ("pandas==2.2.3", "pypi", ("pandas", "2.2.3")),
        (" scikit-learn == 1.5.2 ", "pypi", ("scikit-learn", "1.5.2")),
        ("zope.interface==7.0", "pypi", ("zope.interface", "7.0")),
        ("torch==2.5.1+cpu", "pypi", ("torch", "2.5.1+cpu")),
        ("data.table", "cran", ("data.table", None)),
        ("survival==3.7-0", "cran", ("survival", "3.7-0")),
    ],
)
def test_a_name_and_an_optional_exact_version_are_parsed(
    text: str, ecosystem: str, expected: tuple[str, str | None]
) -> None:
    assert parse_requirement(text, ecosystem) == expected


@pytest.mark.parametrize(
    "text",
    ["pandas>=2", "pandas[sql]", "pandas; python_version>'3'", "-e .", "", "pan das", "pandas-"],
)
def test_a_pypi_requirement_that_is_not_one_name_is_refused_naming_it(text: str) -> None:
    with pytest.raises(RequestError, match="is not a pypi package name") as refused:
        parse_requirement(text, "pypi")
    assert repr(text) in str(refused.value)


@pytest.mark.parametrize("text", ["data_table", "2dplyr", "R", ".hidden", "dplyr-1"])
def test_a_cran_name_follows_cran_rules(text: str) -> None:
    with pytest.raises(RequestError, match="is not a cran package name"):
        parse_requirement(text, "cran")
    # the same text may well be a PyPI name: the rule is the ecosystem's
    if text not in (".hidden",):
        parse_requirement(text, "pypi")


@pytest.mark.parametrize("version", [">=1", "1.0 2.0", "1.0==2.0", "~1.0", "*", ".1"])
def test_a_version_that_is_not_exact_is_refused_naming_it(version: str) -> None:
    text = f"pandas=={version}"
    with pytest.raises(RequestError, match="is not an exact version") as refused:
        parse_requirement(text, "pypi")
    assert repr(version.strip()) in str(refused.value)


# --- make_request -----------------------------------------------------------------------------


def test_a_valid_request_is_trimmed_and_stamped() -> None:
    request = make_request(
        PROJECT,
        "Pandas==2.2.3",
        ecosystem="pypi",
        reason="  data frames \n",
        requested_by=" amina ",
    )
    assert (request.name, request.version) == ("Pandas", "2.2.3")
    assert (request.reason, request.requested_by) == ("data frames", "amina")
    assert request.requested_at.endswith("Z") and "T" in request.requested_at
    assert request.requirement == "Pandas==2.2.3"
    assert _request("survival==3.7-0", ecosystem="cran").requirement == "survival (3.7-0)"
    assert _request("pandas").requirement == "pandas"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ecosystem": "npm"}, r"ecosystem 'npm' is not one of pypi, cran"),
        ({"ecosystem": "PyPI"}, r"ecosystem 'PyPI' is not one of"),
        ({"project": "Diabetes_Outcomes"}, r"project 'Diabetes_Outcomes' is not a project id"),
        ({"project": ""}, r"project '' is not a project id"),
        ({"project": "-leading"}, r"project '-leading' is not a project id"),
        ({"reason": ""}, r"a request for 'pandas==2\.2\.3' needs a reason"),
        ({"reason": "   \n"}, r"needs a reason"),
        ({"requested_by": " "}, r"a request for 'pandas==2\.2\.3' needs the member who asks"),
    ],
)
def test_each_refusal_names_the_input_and_the_reason(overrides: dict, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        _request(**overrides)


def test_a_project_id_with_a_trailing_newline_is_refused() -> None:
    """The request id becomes a file name and a partition key: no line break (a regular
    expression's ``$`` would accept one before the end)."""
    with pytest.raises(RequestError, match="is not a project id"):
        _request(project=PROJECT + "\n")


def test_the_request_id_is_stable_readable_and_canonical() -> None:
    first = _request("Scikit_Learn==1.5.2")
    again = _request(
        "scikit-learn==1.5.2",
        reason="another reason",
        requested_by="lucas.petit@univ-exemple.fr",
        requested_at="2026-02-01T00:00:00Z",
    )
    assert first.request_id == again.request_id == f"{PROJECT}--pypi--scikit-learn--1.5.2"
    assert _request("pandas").request_id == f"{PROJECT}--pypi--pandas--latest"
    # CRAN names are exact: case matters there
    assert (
        _request("Matrix", ecosystem="cran").request_id
        != _request("matrix", ecosystem="cran").request_id
    )
    # one id per project, ecosystem, name and version
    ids = {
        _request("pandas==2.2.3").request_id,
        _request("pandas==2.2.2").request_id,
        _request("pandas==2.2.3", project="cardio-imaging").request_id,
        _request("pandas").request_id,
    }
    assert len(ids) == 4


def test_a_request_round_trips_through_json() -> None:
    request = _request("survival==3.7-0", ecosystem="cran")
    data = json.loads(json.dumps(request.to_json()))
    assert data["request_id"] == request.request_id
    assert PackageRequest.from_json(data) == request


# --- request files of the specs folder --------------------------------------------------------


def test_a_request_file_gives_one_request_per_entry(tmp_path: Path) -> None:
    path = _write_yaml(
        tmp_path / "analysis.yaml",
        {
            "project": PROJECT,
            "requests": [
                {"package": "lifelines==0.29.0", "reason": "survival", "requested_by": "amina"},
                {
                    "package": "survival",
                    "ecosystem": "cran",
                    "reason": "survival in R",
                    "requested_by": "lucas",
                    "requested_at": WHEN,
                },
            ],
        },
    )
    first, second = load_request_file(path)
    assert (first.ecosystem, first.name, first.version) == ("pypi", "lifelines", "0.29.0")
    assert (second.ecosystem, second.name, second.version) == ("cran", "survival", None)
    assert second.requested_at == WHEN
    assert {first.project, second.project} == {PROJECT}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"reason": "x", "requested_by": "a"}, r"request 2 needs 'package: NAME\[==VERSION\]'"),
        ("pandas", r"request 2 needs 'package: NAME\[==VERSION\]'"),
        ({"package": "pandas>=2", "reason": "x", "requested_by": "a"}, r"request 2: .*pandas>=2"),
        ({"package": "pandas", "requested_by": "a"}, r"request 2: .*needs a reason"),
        ({"package": "pandas", "reason": "x"}, r"request 2: .*needs the member who asks"),
        (
            {"package": "pandas", "ecosystem": "conda", "reason": "x", "requested_by": "a"},
            r"request 2: ecosystem 'conda'",
        ),
    ],
)
def test_a_bad_entry_is_reported_with_the_path_and_its_number(
    tmp_path: Path, entry: object, message: str
) -> None:
    good = {"package": "pandas", "reason": "tables", "requested_by": "amina"}
    path = _write_yaml(tmp_path / "bad.yaml", {"project": PROJECT, "requests": [good, entry]})
    with pytest.raises(RequestError, match=message) as refused:
        load_request_file(path)
    assert str(refused.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    "text",
    ["project: x\nrequests: pandas\n", "- pandas\n", "project: [unclosed\n", ""],
)
def test_a_file_of_the_wrong_shape_is_reported_with_its_path(tmp_path: Path, text: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(RequestError) as refused:
        load_request_file(path)
    assert str(refused.value).startswith(f"{path}: ")


def test_a_file_without_its_project_names_the_missing_project(tmp_path: Path) -> None:
    path = _write_yaml(
        tmp_path / "noproject.yaml",
        {"requests": [{"package": "pandas", "reason": "x", "requested_by": "a"}]},
    )
    with pytest.raises(RequestError, match=r"request 1: project '' is not a project id"):
        load_request_file(path)


# --- both sources together --------------------------------------------------------------------


def _specs_with_requests(tmp_path: Path) -> Path:
    specs = tmp_path / "specs"
    folder = specs / REQUESTS_FOLDER
    _write_yaml(
        folder / "a-good.yaml",
        {
            "project": PROJECT,
            "requests": [{"package": "pandas==2.2.3", "reason": "tables", "requested_by": "a"}],
        },
    )
    _write_yaml(
        folder / "b-bad.yaml",
        {
            "project": PROJECT,
            "requests": [
                {"package": "numpy", "reason": "arrays", "requested_by": "a"},
                {"package": "numpy>=2", "reason": "arrays", "requested_by": "a"},
            ],
        },
    )
    _write_yaml(
        folder / "c-good.yml",
        {
            "project": "cardio-imaging",
            "requests": [
                {"package": "survival", "ecosystem": "cran", "reason": "km", "requested_by": "b"}
            ],
        },
    )
    (folder / "notes.txt").write_text("not a request file")
    return specs


def test_a_bad_file_is_reported_and_the_other_files_still_load(tmp_path: Path) -> None:
    specs = _specs_with_requests(tmp_path)
    filed = tmp_path / "filed"
    file_request(_request("polars==1.9.0"), filed)
    (filed / "broken.json").write_text("{not json")
    (filed / "incomplete.json").write_text(json.dumps({"project": PROJECT, "name": "x"}))

    loaded = load_requests(specs, filed)

    assert sorted(loaded.requests) == [
        "cardio-imaging--cran--survival--latest",
        f"{PROJECT}--pypi--pandas--2.2.3",
        f"{PROJECT}--pypi--polars--1.9.0",
    ]
    # the whole bad file is refused (its good first entry too), with its path and entry number
    assert not any("numpy" in rid for rid in loaded.requests)
    assert len(loaded.errors) == 3
    bad = specs / REQUESTS_FOLDER / "b-bad.yaml"
    assert any(e.startswith(f"{bad}: request 2: ") and "numpy>=2" in e for e in loaded.errors)
    assert any(e.startswith(f"{filed / 'broken.json'}: not a filed request") for e in loaded.errors)
    assert any(str(filed / "incomplete.json") in e for e in loaded.errors)
    # reported, and left where it is
    assert bad.exists() and (filed / "broken.json").exists()


def test_a_filed_request_that_is_not_an_object_is_reported_not_fatal(tmp_path: Path) -> None:
    """A filed request that is JSON but not an object (a list, a string, null) is reported
    with its path; the others still load."""
    filed = tmp_path / "filed"
    file_request(_request("polars==1.9.0"), filed)
    (filed / "odd.json").write_text("[]")
    loaded = load_requests(None, filed)
    assert list(loaded.requests) == [f"{PROJECT}--pypi--polars--1.9.0"]
    assert len(loaded.errors) == 1 and str(filed / "odd.json") in loaded.errors[0]


def test_a_request_file_that_is_not_utf8_is_reported_not_fatal(tmp_path: Path) -> None:
    """A request file that is not UTF-8 is reported with its path; the others still load."""
    specs = _specs_with_requests(tmp_path)
    latin1 = "project: diabetes-outcomes\nrequests:\n  - package: pandas\n    reason: caf\xe9\n"
    (specs / REQUESTS_FOLDER / "latin1.yaml").write_bytes(latin1.encode("latin-1"))
    loaded = load_requests(specs, tmp_path / "filed")
    assert f"{PROJECT}--pypi--pandas--2.2.3" in loaded.requests
    assert any(str(specs / REQUESTS_FOLDER / "latin1.yaml") in e for e in loaded.errors)


def test_the_specs_folder_wins_over_a_filed_request_with_the_same_id(tmp_path: Path) -> None:
    specs = _specs_with_requests(tmp_path)
    filed = tmp_path / "filed"
    file_request(_request("pandas==2.2.3", reason="filed by hand"), filed)
    loaded = load_requests(specs, filed)
    assert loaded.requests[f"{PROJECT}--pypi--pandas--2.2.3"].reason == "tables"


def test_no_specs_folder_and_no_filed_folder_load_nothing(tmp_path: Path) -> None:
    loaded = load_requests(None, tmp_path / "absent")
    assert loaded.requests == {} and loaded.errors == []
    loaded = load_requests(tmp_path / "no-specs", tmp_path / "absent")
    assert loaded.requests == {} and loaded.errors == []


# --- filing -----------------------------------------------------------------------------------


def test_filing_twice_is_idempotent(tmp_path: Path) -> None:
    filed = tmp_path / "filed"
    request = _request("pandas==2.2.3")
    path = file_request(request, filed)
    assert path == filed / f"{request.request_id}.json"
    content = path.read_bytes()

    again = file_request(request, filed)
    # the same request asked again (another reason, another member) changes nothing either
    third = file_request(_request("Pandas==2.2.3", reason="other", requested_by="lucas"), filed)

    assert again == third == path
    assert path.read_bytes() == content
    assert sorted(p.name for p in filed.iterdir()) == [path.name]  # no temporary left behind
    loaded = load_requests(None, filed)
    assert loaded.errors == []
    assert loaded.requests == {request.request_id: request}
