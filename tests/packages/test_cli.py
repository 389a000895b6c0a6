"""``hdh packages``: bad input refused with a clear message, and the read-only commands over a
store populated directly (no resolution, no vetting run, no Dagster)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from hdh_cli.main import cli
from package_manager import service
from package_manager.model import Closure
from package_manager.requests import REQUESTS_FOLDER, file_request
from package_manager.store import RequestVetting
from resources.home import HdhHome
from tests.packages.test_approval import OTHER, PROJECT, request, resolved, save


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["packages", *args])


@pytest.fixture
def populated(hdh_home: HdhHome, specs: Path) -> dict:
    """Filed and spec-folder requests in every state, stored as the vetting runs would."""
    store = service.package_store(hdh_home)
    filed = store.filed_requests
    approved = request("hdh-tabular")
    waiting = request("reqests")
    refused = request("hdh-does-not-exist")
    pending = request("hdh-plot==0.3")
    theirs = request("hdhsurv", project=OTHER, ecosystem="cran")
    for each in (approved, waiting, refused, pending, theirs):
        file_request(each, filed)
    save(
        store,
        approved,
        [(resolved("hdh-tabular", requested=True), "passed"), (resolved("hdh-core"), "passed")],
    )
    save(store, waiting, [(resolved("reqests", requested=True), "needs_review")])
    store.save_closure(Closure(refused.request_id, "pypi", (), "uv", "", "", "not found"))
    store.save_vetting(RequestVetting(refused.request_id, "refused", (), "not found on upstream"))
    save(
        store,
        theirs,
        [(resolved("hdhsurv", ecosystem="cran", requested=True), "passed")],
    )
    # one more request from the specs folder (reviewed like the specs)
    (specs / REQUESTS_FOLDER).mkdir()
    (specs / REQUESTS_FOLDER / "diabetes.yaml").write_text(
        yaml.safe_dump(
            {
                "project": PROJECT,
                "requests": [
                    {"package": "lifelines", "reason": "survival", "requested_by": "lucas"}
                ],
            }
        )
    )
    ids = {
        "approved": approved.request_id,
        "waiting": waiting.request_id,
        "refused": refused.request_id,
        "pending": pending.request_id,
        "theirs": theirs.request_id,
        "spec": f"{PROJECT}--pypi--lifelines--latest",
    }
    return {"home": hdh_home, "store": store, "ids": ids}


# --- hdh packages request: refused before anything runs --------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pandas>=2"], "'pandas>=2' is not a pypi package name"),
        (["pandas==>=2"], "'pandas==>=2': '>=2' is not an exact version"),
        (["data_table", "--ecosystem", "cran"], "'data_table' is not a cran package name"),
        (["pandas", "--reason", "   "], "a request for 'pandas' needs a reason"),
    ],
)
def test_request_refuses_bad_input_with_a_clear_message(
    hdh_home: HdhHome, specs: Path, args: list[str], message: str
) -> None:
    requirement, *options = args
    if "--reason" not in options:
        options += ["--reason", "survival models"]
    result = run("request", PROJECT, requirement, *options, "--by", "amina")
    assert result.exit_code == 1, result.output
    assert f"Error: {message}" in result.output
    assert "Traceback" not in result.output
    assert not service.package_store(hdh_home).filed_requests.exists()  # nothing filed


def test_request_refuses_a_project_that_is_not_a_project_id(hdh_home: HdhHome, specs: Path):
    result = run("request", "Diabetes Outcomes", "pandas", "--reason", "tables", "--by", "a")
    assert result.exit_code == 1
    assert "Error: project 'Diabetes Outcomes' is not a project id" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pandas"], "Missing option '--reason'"),
        (["pandas", "--reason", "x", "--ecosystem", "npm"], "Invalid value for '--ecosystem'"),
        ([], "Missing argument 'NAME[==VERSION]'"),
    ],
)
def test_request_usage_errors_exit_with_2(
    hdh_home: HdhHome, specs: Path, args: list[str], message: str
) -> None:
    result = run("request", PROJECT, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert not service.package_store(hdh_home).filed_requests.exists()


def test_request_help_names_its_options(hdh_home: HdhHome) -> None:
    result = run("request", "--help")
    assert result.exit_code == 0
    for option in ("--ecosystem", "--reason", "--by", "--json", "NAME[==VERSION]"):
        assert option in result.output


# --- hdh packages list ------------------------------------------------------------------------


def test_list_json_has_one_row_per_closure_member(populated: dict) -> None:
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["packages"]
    ids = populated["ids"]
    got = {(r["request_id"], r["name"], r["status"]) for r in rows}
    assert got == {
        (ids["approved"], "hdh-tabular", "approved"),
        (ids["approved"], "hdh-core", "approved"),
        (ids["waiting"], "reqests", "needs_review"),
        (ids["refused"], "hdh-does-not-exist", "refused"),
        (ids["pending"], "hdh-plot", "pending"),
        (ids["theirs"], "hdhsurv", "approved"),
        (ids["spec"], "lifelines", "pending"),
    }
    by_name = {r["name"]: r for r in rows}
    assert by_name["reqests"]["reasons"] == ["reqests: needs_review"]
    assert by_name["hdh-does-not-exist"]["reasons"] == ["not found on upstream"]
    assert by_name["hdh-plot"] == {
        "project": PROJECT,
        "ecosystem": "pypi",
        "request_id": ids["pending"],
        "name": "hdh-plot",
        "version": "0.3",
        "status": "pending",
        "reasons": ["not vetted yet"],
    }
    assert by_name["hdh-tabular"]["requested"] is True
    assert by_name["hdh-core"]["requested"] is False
    assert by_name["hdhsurv"]["project"] == OTHER and by_name["hdhsurv"]["ecosystem"] == "cran"


def test_list_filters_by_project_and_status(populated: dict) -> None:
    mine = json.loads(run("list", "--json", "--project", OTHER).output)["packages"]
    assert [(r["name"], r["project"]) for r in mine] == [("hdhsurv", OTHER)]
    approved = json.loads(
        run("list", "--json", "--project", PROJECT, "--status", "approved").output
    )["packages"]
    assert sorted(r["name"] for r in approved) == ["hdh-core", "hdh-tabular"]
    pending = json.loads(run("list", "--json", "--status", "pending").output)["packages"]
    assert sorted(r["name"] for r in pending) == ["hdh-plot", "lifelines"]
    bad = run("list", "--status", "maybe")
    assert bad.exit_code == 2 and "Invalid value for '--status'" in bad.output


def test_list_prints_a_table(populated: dict) -> None:
    result = run("list", "--project", PROJECT)
    assert result.exit_code == 0, result.output
    for word in ("hdh-tabular", "reqests", "hdh-plot", "lifelines"):
        assert word in result.output
    assert "hdhsurv" not in result.output


def test_list_with_nothing_requested_is_empty(hdh_home: HdhHome, specs: Path) -> None:
    result = run("list", "--json")
    assert result.exit_code == 0
    assert json.loads(result.output) == {"packages": []}


# --- hdh packages show ------------------------------------------------------------------------


def test_show_json_holds_the_request_its_closure_and_every_check(populated: dict) -> None:
    request_id = populated["ids"]["approved"]
    result = run("show", request_id, "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["request"]["request_id"] == request_id
    assert shown["request"]["reason"] == "needed for the analysis"
    assert [p["name"] for p in shown["closure"]["packages"]] == ["hdh-tabular", "hdh-core"]
    assert shown["vetting"]["status"] == "approved"
    for member in shown["vetting"]["verdicts"]:
        assert {c["check"] for c in member["checks"]} == set(service.CHECKS)
        assert len(member["package"]["sha256"]) == 64


def test_show_a_request_not_vetted_yet(populated: dict) -> None:
    request_id = populated["ids"]["spec"]
    shown = json.loads(run("show", request_id, "--json").output)
    assert shown["request"]["name"] == "lifelines"
    assert shown["closure"] is None and shown["vetting"] is None
    text = run("show", request_id)
    assert text.exit_code == 0 and "not vetted yet" in text.output


def test_show_prints_the_members_and_their_checks(populated: dict) -> None:
    result = run("show", populated["ids"]["waiting"])
    assert result.exit_code == 0, result.output
    assert "needs_review" in result.output
    assert "licence: needs_review reqests: needs_review" in result.output


def test_show_an_unknown_request_fails_clearly(populated: dict) -> None:
    result = run("show", f"{PROJECT}--pypi--nothing--latest", "--json")
    assert result.exit_code == 1
    assert f"no package request '{PROJECT}--pypi--nothing--latest'" in result.output
    assert "Traceback" not in result.output


# --- hdh packages approve / refuse ------------------------------------------------------------


@pytest.mark.parametrize("command", ["approve", "refuse"])
def test_a_decision_on_an_unknown_package_fails_clearly(populated: dict, command: str) -> None:
    result = run(command, "hdh-never-requested", "1.0.0", "--reason", "looked at it", "--by", "r")
    assert result.exit_code == 1
    assert "Error: no vetted pypi package hdh-never-requested 1.0.0: nothing to decide on" in (
        result.output
    )
    # a vetted name at another version, or in the other ecosystem, is unknown too
    assert run(command, "reqests", "2.0.0", "--reason", "x").exit_code == 1
    other = run(command, "reqests", "1.0.0", "--reason", "x", "--ecosystem", "cran")
    assert other.exit_code == 1 and "no vetted cran package reqests 1.0.0" in other.output
    assert populated["store"].decisions.entries() == []


def test_a_decision_without_a_reason_is_refused(populated: dict) -> None:
    missing = run("approve", "reqests", "1.0.0")
    assert missing.exit_code == 2 and "Missing option '--reason'" in missing.output
    blank = run("approve", "reqests", "1.0.0", "--reason", "  ", "--by", "referent")
    assert blank.exit_code == 1
    assert "Error: a decision on reqests 1.0.0 needs a reason" in blank.output
    assert populated["store"].decisions.entries() == []
