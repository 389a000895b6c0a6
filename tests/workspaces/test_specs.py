"""Project specs and approvals: the examples load, and each kind of mistake names file, field, reason."""

from __future__ import annotations

import datetime as dt
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from hdh_assets.workspaces.specs import (
    SpecError,
    check_grants,
    format_bytes,
    format_cpu,
    is_expired,
    load_approvals,
    load_spec,
    load_specs,
    load_specs_report,
    parse_quantity,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "workspaces"


def base_spec(pid: str = "demo") -> dict[str, Any]:
    return {
        "id": pid,
        "title": "Demo",
        "authorisation": "CESREES-2025-0042",
        "members": [{"user": "owner@example.org", "role": "owner"}],
        "grants": [{"product": "diabetes_patients", "version": "1.0.0"}],
        "expires": "2027-01-31",
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the example layout: ``approvals.yaml`` and ``projects/``."""
    shutil.copy(EXAMPLES / "approvals.yaml", tmp_path / "approvals.yaml")
    (tmp_path / "projects").mkdir()
    return tmp_path


def write(root: Path, name: str, document: Any) -> Path:
    path = root / "projects" / name
    text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
    path.write_text(text)
    return path


def refusal(root: Path, name: str, document: Any) -> str:
    """The message of the SpecError that loading the folder with this one file raises."""
    write(root, name, document)
    with pytest.raises(SpecError) as caught:
        load_specs(root / "projects")
    return str(caught.value)


# --- the examples ---------------------------------------------------------------------------


def test_the_example_specs_load_with_their_approvals() -> None:
    specs = load_specs(EXAMPLES / "projects")
    assert sorted(specs) == ["cardio-imaging", "diabetes-outcomes"]
    diabetes = specs["diabetes-outcomes"]
    assert diabetes.applications.enabled() == ("jupyterlab", "rstudio")
    assert [g.product for g in diabetes.grants] == [
        "diabetes_patients",
        "hba1c_trajectory",
        "care_consumption_per_month",
    ]
    assert diabetes.namespace == "hdh-ws-diabetes-outcomes"
    assert diabetes.source.endswith("workspaces/projects/diabetes-outcomes.yaml")


def test_defaults_fill_what_a_spec_leaves_out(root: Path) -> None:
    write(root, "demo.yaml", base_spec())
    spec = load_specs(root / "projects")["demo"]
    assert (spec.compute.cpu, spec.compute.memory, spec.compute.storage) == ("2", "8Gi", "50Gi")
    assert spec.applications.enabled() == ("jupyterlab",)
    assert spec.packages.python == [] and spec.packages.r == []


def test_the_digest_follows_the_content_only(root: Path) -> None:
    first = load_spec(write(root, "demo.yaml", base_spec()))
    again = load_spec(write(root, "demo.yaml", base_spec()))
    changed = load_spec(write(root, "demo.yaml", {**base_spec(), "title": "Other"}))
    assert first.digest == again.digest != changed.digest


# --- each kind of mistake -------------------------------------------------------------------


def test_an_id_that_is_not_a_dns_label(root: Path) -> None:
    message = refusal(root, "Bad_Id.yaml", base_spec("Bad_Id"))
    assert f"{root}/projects/Bad_Id.yaml: id: 'Bad_Id' is not a DNS label" in message


def test_an_id_longer_than_a_namespace_allows(root: Path) -> None:
    pid = "a" * 49
    message = refusal(root, f"{pid}.yaml", base_spec(pid))
    assert f"{pid}.yaml: id: " in message and "at most 48 characters" in message


def test_an_id_that_differs_from_the_file_name(root: Path) -> None:
    message = refusal(root, "demo.yaml", base_spec("other"))
    assert (
        message == f"{root}/projects/demo.yaml: id: must equal the file name 'demo' (found 'other')"
    )


def test_a_team_without_an_owner(root: Path) -> None:
    spec = {**base_spec(), "members": [{"user": "a@example.org", "role": "analyst"}]}
    message = refusal(root, "demo.yaml", spec)
    assert message == f"{root}/projects/demo.yaml: members: at least one member must be an owner"


def test_an_unknown_role(root: Path) -> None:
    spec = {**base_spec(), "members": [{"user": "a@example.org", "role": "admin"}]}
    message = refusal(root, "demo.yaml", spec)
    assert (
        f"{root}/projects/demo.yaml: members[0].role: must be one of owner, analyst, viewer"
        in message
    )


def test_a_member_listed_twice_or_not_a_user(root: Path) -> None:
    members = [
        {"user": "a@example.org", "role": "owner"},
        {"user": "A@example.org", "role": "viewer"},
    ]
    assert "members: a@example.org listed more than once" in refusal(
        root, "demo.yaml", {**base_spec(), "members": members}
    )
    bad_user = [{"user": "not an address", "role": "owner"}]
    assert (
        "members[0].user: 'not an address' is neither an e-mail address nor a username"
        in refusal(root, "demo.yaml", {**base_spec(), "members": bad_user})
    )


@pytest.mark.parametrize(
    ("compute", "field", "reason"),
    [
        ({"memory": "8GB"}, "compute.memory", "'8GB' is not a Kubernetes quantity"),
        ({"cpu": "two"}, "compute.cpu", "'two' is not a Kubernetes quantity"),
        ({"cpu": 128}, "compute.cpu", "128 is outside the allowed range 250m to 64"),
        ({"storage": "100Mi"}, "compute.storage", "100Mi is outside the allowed range 1Gi to 10Ti"),
    ],
)
def test_a_bad_quantity(root: Path, compute: dict, field: str, reason: str) -> None:
    message = refusal(root, "demo.yaml", {**base_spec(), "compute": compute})
    assert f"demo.yaml: {field}: {reason}" in message


def test_quantities_as_kubernetes_reads_them() -> None:
    assert parse_quantity("500m") == Decimal("0.5")
    assert parse_quantity("8Gi") == 8 * 2**30
    assert parse_quantity("1.5G") == 1_500_000_000
    assert parse_quantity("2e3") == 2000
    assert format_cpu(Decimal("4.2")) == "4200m" and format_cpu(Decimal(3)) == "3"
    assert (
        format_bytes(Decimal(16640 * 2**20)) == "16640Mi" and format_bytes(Decimal(1000)) == "1000"
    )
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity("-1Gi")


def test_a_grant_version_that_is_not_a_release_version(root: Path) -> None:
    spec = {**base_spec(), "grants": [{"product": "diabetes_patients", "version": "1.0"}]}
    message = refusal(root, "demo.yaml", spec)
    assert (
        "demo.yaml: grants[0].version: '1.0' is not a release version MAJOR.MINOR.PATCH" in message
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"gpu": 1}, "gpu"),
        ({"compute": {"cpu": "2", "gpus": 1}}, "compute.gpus"),
        (
            {"members": [{"user": "a@example.org", "role": "owner", "admin": True}]},
            "members[0].admin",
        ),
    ],
)
def test_an_unknown_field(root: Path, change: dict, field: str) -> None:
    message = refusal(root, "demo.yaml", {**base_spec(), **change})
    assert f"{root}/projects/demo.yaml: {field}: unknown field" in message


def test_a_missing_field(root: Path) -> None:
    spec = base_spec()
    del spec["expires"]
    assert refusal(root, "demo.yaml", spec).endswith(
        "demo.yaml: expires: required field is missing"
    )


def test_packages_the_image_builder_would_refuse_are_refused_with_their_index(root: Path) -> None:
    spec = {**base_spec(), "packages": {"python": ["pandas", "evil @ https://x.example/e.whl"]}}
    message = refusal(root, "demo.yaml", spec)
    assert (
        "demo.yaml: packages.python[1]: Python package 'evil @ https://x.example/e.whl' refused"
        in message
    )
    spec = {**base_spec(), "packages": {"r": ["survival", "1bad"]}}
    assert "demo.yaml: packages.r[1]: R package '1bad' refused" in refusal(root, "demo.yaml", spec)
    spec = {**base_spec(), "packages": {"python": ["numpy", "NumPy>=2"]}}
    assert "packages.python[1]: 'numpy' is listed twice" in refusal(root, "demo.yaml", spec)


def test_a_workspace_without_any_application(root: Path) -> None:
    spec = {**base_spec(), "applications": {"jupyterlab": False}}
    assert "demo.yaml: applications: enable at least one of jupyterlab, rstudio" in refusal(
        root, "demo.yaml", spec
    )


def test_a_gitlab_link_must_be_https(root: Path) -> None:
    spec = {**base_spec(), "applications": {"gitlab": "http://gitlab.example/x"}}
    assert "applications.gitlab: 'http://gitlab.example/x' is not an https:// URL" in refusal(
        root, "demo.yaml", spec
    )


def test_invalid_yaml_names_the_line(root: Path) -> None:
    message = refusal(root, "demo.yaml", "id: demo\nmembers: [\n  - oops\n")
    assert message.startswith(f"{root}/projects/demo.yaml: <document>: invalid YAML at line ")


def test_a_document_that_is_not_a_mapping(root: Path) -> None:
    message = refusal(root, "demo.yaml", "- just\n- a list\n")
    assert message == f"{root}/projects/demo.yaml: <document>: must be a mapping of fields"


def test_two_files_declaring_one_id(root: Path) -> None:
    write(root, "demo.yaml", base_spec())
    message = refusal(root, "demo.yml", base_spec())
    assert f"{root}/projects/demo.yml: id: another file" in message


# --- approvals ------------------------------------------------------------------------------


def test_an_unapproved_product_is_refused(root: Path) -> None:
    grants = [
        {"product": "diabetes_patients", "version": "1.0.0"},
        {"product": "imaging_clinical_linkage", "version": "1.0.0"},
    ]
    message = refusal(root, "demo.yaml", {**base_spec(), "grants": grants})
    assert message == (
        f"{root}/projects/demo.yaml: grants[1].product: 'imaging_clinical_linkage' is not "
        "approved by authorisation 'CESREES-2025-0042'"
    )


def test_a_version_outside_the_approved_range_or_list_is_refused(root: Path) -> None:
    grants = [
        {"product": "hba1c_trajectory", "version": "2.0.0"},  # ">=1.0.0,<2.0.0"
        {"product": "diabetes_patients", "version": "1.0.1"},  # exactly 1.0.0
        {"product": "care_consumption_per_month", "version": "1.0.0"},  # [1.0.0]: approved
    ]
    message = refusal(root, "demo.yaml", {**base_spec(), "grants": grants})
    assert message.splitlines() == [
        f"{root}/projects/demo.yaml: grants[0].version: hba1c_trajectory 2.0.0 is not approved "
        "by authorisation 'CESREES-2025-0042' (>=1.0.0,<2.0.0)",
        f"{root}/projects/demo.yaml: grants[1].version: diabetes_patients 1.0.1 is not approved "
        "by authorisation 'CESREES-2025-0042' (1.0.0)",
    ]


def test_an_authorisation_missing_from_the_approvals_grants_nothing(root: Path) -> None:
    message = refusal(root, "demo.yaml", {**base_spec(), "authorisation": "CNIL-DR-1999-1"})
    assert message == (
        f"{root}/projects/demo.yaml: authorisation: 'CNIL-DR-1999-1' is not in "
        f"{root}/approvals.yaml: no data may be granted"
    )


def test_a_workspace_may_not_outlive_its_authorisation(root: Path) -> None:
    message = refusal(root, "demo.yaml", {**base_spec(), "expires": "2029-01-01"})
    assert message == (
        f"{root}/projects/demo.yaml: expires: 2029-01-01 is after the end of authorisation "
        "'CESREES-2025-0042' (2028-06-30)"
    )


def test_without_an_approvals_file_no_data_is_granted(root: Path) -> None:
    (root / "approvals.yaml").unlink()
    write(root, "demo.yaml", base_spec())
    nothing = {**base_spec("nothing"), "grants": []}
    write(root, "nothing.yaml", nothing)
    specs, errors = load_specs_report(root / "projects")
    assert list(specs) == ["nothing"]
    assert [str(e) for e in errors] == [
        f"{root}/projects/demo.yaml: authorisation: 'CESREES-2025-0042' is not in "
        f"{root}/approvals.yaml: no data may be granted"
    ]


def test_check_grants_on_a_spec_loaded_alone(root: Path) -> None:
    approvals = load_approvals(root / "approvals.yaml")
    good = load_spec(write(root, "demo.yaml", base_spec()))
    check_grants(good, approvals)
    bad = {**base_spec(), "grants": [{"product": "chronic_medication_cohort", "version": "1.0.0"}]}
    with pytest.raises(SpecError, match=r"demo\.yaml: grants\[0\]\.product: "):
        check_grants(load_spec(write(root, "demo.yaml", bad)), approvals)


@pytest.mark.parametrize(
    ("document", "field", "reason"),
    [
        (
            {"X-1": {"products": {"p": ">>1"}}},
            "X-1.products",
            "p: '>>1' is neither a version nor a version range",
        ),
        ({"X-1": {"products": {"p": ["1.0"]}}}, "X-1.products", "'1.0' is not a release version"),
        ({"X-1": {"products": {}}}, "X-1.products", "at least 1 item"),
        ({"X-1": {"products": {"p": "*"}, "scope": "all"}}, "X-1.scope", "unknown field"),
        ({"X-1": "everything"}, "X-1", "valid dictionary"),
    ],
)
def test_a_broken_approvals_file_names_the_entry(
    tmp_path: Path, document: dict, field: str, reason: str
) -> None:
    path = tmp_path / "approvals.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(SpecError) as caught:
        load_approvals(path)
    assert str(caught.value).startswith(f"{path}: {field}: ")
    assert reason in str(caught.value)


# --- keep going with the valid ones ---------------------------------------------------------


def test_the_report_keeps_the_valid_specs_and_lists_each_refused_file(root: Path) -> None:
    write(root, "good.yaml", base_spec("good"))
    write(
        root,
        "bad-role.yaml",
        {**base_spec("bad-role"), "members": [{"user": "u1", "role": "boss"}]},
    )
    write(root, "broken.yaml", "id: [\n")
    specs, errors = load_specs_report(root / "projects")
    assert list(specs) == ["good"]
    assert sorted(Path(f).name for e in errors for f in e.files) == ["bad-role.yaml", "broken.yaml"]
    with pytest.raises(SpecError) as caught:
        load_specs(root / "projects")
    assert len(caught.value.issues) == 2  # one error for the folder, listing both files


def test_expiry_is_inclusive_of_the_last_day() -> None:
    spec = load_specs(EXAMPLES / "projects")["cardio-imaging"]
    assert spec.expires == dt.date(2027, 6, 30)
    assert not is_expired(spec, dt.date(2027, 6, 30))
    assert is_expired(spec, dt.date(2027, 7, 1))
