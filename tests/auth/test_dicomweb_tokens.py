"""The DICOMweb service takes the provider's access tokens: checked against its keys, the
project (or the staff role) read from the person's groups."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest
from starlette.testclient import TestClient

from auth.provider import DevProviderSettings
from dicomweb.app import create_app
from dicomweb.provider_tokens import ProviderTokens
from dicomweb.tokens import Tokens
from resources.home import HdhHome
from tests.auth.conftest import VIEWER
from tests.auth.test_oidc import exchange, sign_in, tamper
from tests.dicomweb.conftest import SAMPLE, ingest
from tests.dicomweb.test_access import grant

PROJECT = "cardio-imaging"  # claire.martin's project in the development provider


@pytest.fixture(scope="module")
def platform(tmp_path_factory, sample_root) -> tuple[HdhHome, pl.DataFrame]:
    """The sample ingested; the project granted the studies of one person."""
    home = HdhHome(tmp_path_factory.mktemp("sso-dicomweb") / "hdh").ensure()
    (batch,) = (sample_root / "landing" / "dicom").iterdir()
    index = ingest(home, {SAMPLE: batch})[SAMPLE]
    person = index["subject_pseudonym"].drop_nulls().sort()[0]
    granted = index.filter(pl.col("subject_pseudonym") == person).select("subject_pseudonym")
    grant(home, PROJECT, "diabetes_patients", granted.unique(), "subject_pseudonym")
    return home, index


@pytest.fixture(scope="module")
def access_tokens(metadata, relying_party, accounts, settings) -> dict[str, str]:
    """Each demo account's access token for the DICOMweb resource, as a viewer obtains it."""
    tokens = {}
    for username in ("claire.martin", "referent", "dpo"):
        account = accounts[username]
        audience = settings.dicomweb_audience
        signed_in = sign_in(
            metadata, relying_party, VIEWER, username, account.password, resource=audience
        )
        exchanged = exchange(metadata, relying_party, VIEWER, signed_in, resource=audience)
        tokens[username] = exchanged.access_token
    return tokens


@pytest.fixture(scope="module")
def service(platform, metadata, settings):
    home, _ = platform
    provider = ProviderTokens(dataclasses.replace(settings, issuer=metadata.issuer))
    with TestClient(create_app(home, Tokens(b"k" * 32), provider=provider)) as client:
        yield client


def _studies(service, token: str) -> tuple[int, set[str]]:
    answer = service.get("/dicom-web/studies", headers={"Authorization": f"Bearer {token}"})
    found = answer.json() if answer.status_code == 200 else []
    return answer.status_code, {s["0020000D"]["Value"][0] for s in found}


def test_a_project_member_sees_the_project_s_studies_and_staff_see_all(
    service, platform, access_tokens
):
    _, index = platform
    person = index["subject_pseudonym"].drop_nulls().sort()[0]
    theirs = set(index.filter(pl.col("subject_pseudonym") == person)["study_instance_uid"])
    everything = set(index["study_instance_uid"].drop_nulls())
    assert theirs and theirs < everything

    assert _studies(service, access_tokens["claire.martin"]) == (200, theirs)
    assert _studies(service, access_tokens["referent"]) == (200, everything)
    # The DPO signs in to the rights pages, not to the images: a clear 403, not a 401.
    status, _ = _studies(service, access_tokens["dpo"])
    assert status == 403


def test_forged_and_foreign_tokens_are_refused_and_platform_tokens_still_work(
    service, platform, access_tokens, metadata, relying_party, accounts
):
    forged = tamper(access_tokens["claire.martin"])
    answer = service.get("/dicom-web/studies", headers={"Authorization": f"Bearer {forged}"})
    assert answer.status_code == 401 and "signature" in answer.text
    assert access_tokens["claire.martin"] not in answer.text
    # An access token for another audience (here: a token without the DICOMweb resource)
    member = accounts["claire.martin"]
    signed_in = sign_in(metadata, relying_party, VIEWER, member.username, member.password)
    other = exchange(metadata, relying_party, VIEWER, signed_in).id_token
    answer = service.get("/dicom-web/studies", headers={"Authorization": f"Bearer {other}"})
    assert answer.status_code == 401
    platform_token = Tokens(b"k" * 32).issue(None, 60)
    _, index = platform
    assert _studies(service, platform_token) == (200, set(index["study_instance_uid"].drop_nulls()))


def test_without_a_configured_provider_its_tokens_are_not_accepted(platform, access_tokens):
    home, _ = platform
    with TestClient(create_app(home, Tokens(b"k" * 32), provider=None)) as client:
        answer = client.get(
            "/dicom-web/studies",
            headers={"Authorization": f"Bearer {access_tokens['referent']}"},
        )
    assert answer.status_code == 401


def test_the_development_provider_is_found_once_it_runs_for_the_home(
    platform, access_tokens, provider_secrets, settings, tmp_path
):
    """hdh ui starts the development provider for HDH_HOME: the service finds it there."""
    home, _ = platform
    running = ProviderTokens(DevProviderSettings(provider_secrets, settings))
    not_started = ProviderTokens(DevProviderSettings(tmp_path / "no-secrets", settings))
    header = {"Authorization": f"Bearer {access_tokens['referent']}"}
    with TestClient(create_app(home, Tokens(b"k" * 32), provider=running)) as client:
        assert client.get("/dicom-web/studies", headers=header).status_code == 200
    with TestClient(create_app(home, Tokens(b"k" * 32), provider=not_started)) as client:
        answer = client.get("/dicom-web/studies", headers=header)
    assert answer.status_code == 401 and "no identity provider" in answer.text
