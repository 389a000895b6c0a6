"""Groups to roles and projects, and the settings they are read with (pure, no provider)."""

from __future__ import annotations

import pytest

from auth.roles import (
    DATA_REFERENT,
    DPO,
    OPERATOR,
    Access,
    GroupsClaimError,
    access_for,
    groups_from_claims,
    projects_for,
    roles_for,
)
from auth.settings import OidcClient, OidcSettings, OidcSettingsError

DEFAULTS = OidcSettings()


def test_role_groups_map_to_roles() -> None:
    groups = ["dpo", "data-referent", "operator", "staff", "dpo-assistants"]
    assert roles_for(groups, DEFAULTS) == {DPO, DATA_REFERENT, OPERATOR}
    assert roles_for(["staff"], DEFAULTS) == frozenset()


def test_project_groups_map_to_projects() -> None:
    groups = [
        "project:cardio-imaging:member",
        "project:diabetes-outcomes:member",
        "project:cardio-imaging:owner",  # another suffix: not a membership
        "project::member",  # no id
        "project:Not_A_Label:member",  # not a project id
        "project:a:b:member",  # not a project id either
        "xproject:cardio-imaging:member",
    ]
    assert projects_for(groups, DEFAULTS) == {"cardio-imaging", "diabetes-outcomes"}


def test_configured_group_names_are_used() -> None:
    settings = OidcSettings(
        dpo_group="hdh-dpo", referent_group="hdh-ref", project_group="/projects/{project}"
    )
    assert roles_for(["hdh-dpo", "dpo"], settings) == {DPO}
    assert projects_for(["/projects/cardio-imaging", "projects/x"], settings) == {"cardio-imaging"}


def test_groups_claim_shapes() -> None:
    assert groups_from_claims({}) == ()
    assert groups_from_claims({"groups": ["/dpo", "operator"]}) == ("dpo", "operator")
    assert groups_from_claims({"roles": ["dpo"]}, claim="roles") == ("dpo",)
    for bad in ("dpo", [1, 2], {"dpo": True}):
        with pytest.raises(GroupsClaimError, match="list of strings"):
            groups_from_claims({"groups": bad})


def test_access_from_claims() -> None:
    claims = {"sub": "x", "groups": ["/data-referent", "project:cardio-imaging:member"]}
    access = access_for(claims, DEFAULTS)
    assert access == Access(frozenset({DATA_REFERENT}), frozenset({"cardio-imaging"}))
    assert access.has_role(DATA_REFERENT) and not access.has_role(DPO)
    assert access.member_of("cardio-imaging") and not access.member_of("diabetes-outcomes")
    assert access_for({"sub": "x"}, DEFAULTS) == Access(frozenset(), frozenset())


def test_settings_defaults_from_an_empty_environment() -> None:
    settings = OidcSettings.from_env({})
    assert settings == DEFAULTS
    assert settings.development and settings.issuer is None
    assert settings.groups_claim == "groups" and settings.clock_skew_seconds == 60
    assert (
        settings.client("viewer") == OidcClient("hdh-viewer") and settings.client("viewer").public
    )
    assert settings.project_group_for("cardio-imaging") == "project:cardio-imaging:member"


def test_settings_from_the_environment() -> None:
    settings = OidcSettings.from_env(
        {
            "HDH_OIDC_ISSUER": "https://sso.example/realms/hdh",
            "HDH_OIDC_GROUPS_CLAIM": "roles",
            "HDH_OIDC_DPO_GROUP": "g-dpo",
            "HDH_OIDC_PORTAL_CLIENT_ID": "portal",
            "HDH_OIDC_PORTAL_CLIENT_SECRET": "s3cret",
            "HDH_OIDC_VIEWER_CLIENT_SECRET": " ",  # blank is unset
            "HDH_OIDC_DICOMWEB_AUDIENCE": "https://dicom.example/dicom-web",
            "HDH_OIDC_CLOCK_SKEW_SECONDS": "30",
        }
    )
    assert not settings.development and settings.issuer == "https://sso.example/realms/hdh"
    assert settings.groups_claim == "roles" and settings.dpo_group == "g-dpo"
    portal = settings.client("portal")
    assert portal.client_id == "portal" and not portal.public
    assert "s3cret" not in repr(settings)
    assert settings.client("viewer").public
    assert settings.dicomweb_audience == "https://dicom.example/dicom-web"
    assert settings.clock_skew_seconds == 30


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("HDH_OIDC_CLOCK_SKEW_SECONDS", "a minute", "whole number"),
        ("HDH_OIDC_CLOCK_SKEW_SECONDS", "-1", "negative"),
        ("HDH_OIDC_PROJECT_GROUP", "project-member", "{project}"),
        ("HDH_OIDC_ISSUER", "sso.example", "http"),
        ("HDH_OIDC_SCOPES", "profile email", "openid"),
    ],
)
def test_settings_refuse_unusable_values(variable: str, value: str, message: str) -> None:
    with pytest.raises(OidcSettingsError, match=message):
        OidcSettings.from_env({variable: value})


def test_unknown_application_is_named() -> None:
    with pytest.raises(OidcSettingsError, match="unknown application 'grafana'"):
        DEFAULTS.client("grafana")
