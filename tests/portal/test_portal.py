"""The rights portal: form, receipt, status page, CSRF, limits, no identifier in logs, fuzzing."""

from __future__ import annotations

import logging
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from portal.app import PortalSettings, create_app
from portal.security import CSRF_COOKIE, CsrfTokens
from resources.rights_registry import RightsRegistry

PERSON = {
    "type": "erasure",
    "family_name": "Laurent",
    "given_names": "Hélène",
    "birth_date": "2012-02-06",
    "nir": "2 12 02 31 972 987 79",
    "email": "helene.laurent0@example.fr",
}


@pytest.fixture
def registry(tmp_path):
    return RightsRegistry(f"sqlite:///{tmp_path / 'registry.db'}", b"s" * 32)


def _client(registry, **limits) -> TestClient:
    app = create_app(
        registry, lambda nir: f"pseudo-{nir[-4:]}", b"portal secret " * 3, PortalSettings(**limits)
    )
    return TestClient(app, raise_server_exceptions=False)


def _csrf(client, lang="en", page="request") -> str:
    html = client.get(f"/{lang}/{page}").text
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _submit(client, fields, lang="en"):
    return client.post(f"/{lang}/request", data={**fields, "csrf_token": _csrf(client, lang)})


def test_a_request_is_stored_before_its_receipt_and_its_status_can_be_followed(registry):
    client = _client(registry)
    assert (
        client.get(
            "/", headers={"accept-language": "en-GB,en;q=0.8"}, follow_redirects=False
        ).headers["location"]
        == "/en/request"
    )
    response = _submit(client, PERSON)
    assert response.status_code == 201
    request_id = re.search(r'id="tracking">([^<]+)<', response.text).group(1)
    token = re.search(r'id="token">([^<]+)<', response.text).group(1)
    stored = registry.get(request_id)
    assert stored.type.value == "erasure" and stored.subject_pseudonym == "pseudo-8779"
    assert (
        response.headers["cache-control"] == "no-store"
        and "frame-ancestors 'none'" in response.headers["content-security-policy"]
    )
    csrf = _csrf(client, "fr", "status")
    page = client.post(
        "/fr/status", data={"id": request_id.lower(), "token": token, "csrf_token": csrf}
    )
    assert page.status_code == 200 and 'data-status="received"' in page.text
    assert "en attente de vérification" in page.text
    wrong = client.post(
        "/fr/status",
        data={"id": request_id, "token": token + "x", "csrf_token": _csrf(client, "fr", "status")},
    )
    assert wrong.status_code == 404 and "Aucune demande" in wrong.text


def test_without_a_valid_csrf_token_nothing_is_stored(registry):
    client = _client(registry)
    assert client.post("/en/request", data=PERSON).status_code == 403
    forged = CsrfTokens(b"another site's secret").issue()
    client.cookies.set(CSRF_COOKIE, forged)
    assert client.post("/en/request", data={**PERSON, "csrf_token": forged}).status_code == 403
    assert registry.list() == []


def test_wrong_fields_get_one_message_each_in_french_and_the_number_is_not_echoed(registry, caplog):
    client = _client(registry)
    caplog.set_level(logging.INFO)
    wrong = {**PERSON, "nir": "212023197298778", "email": "helene@", "given_names": ""}
    response = _submit(client, wrong, "fr")
    assert response.status_code == 422
    assert "la clé ne correspond pas au numéro" in response.text
    assert "une adresse e-mail valide" in response.text and "obligatoire" in response.text
    assert "212023197298778" not in response.text and 'value="Laurent"' in response.text
    assert registry.list() == []
    _submit(client, PERSON)
    for needle in ("2120231972987", "Laurent", "Hélène", "helene.laurent0", "2012-02-06"):
        assert needle not in caplog.text


def test_size_and_rate_limits(registry):
    client = _client(registry, submissions_per_minute=3)
    big = {**PERSON, "free_text": "x" * 20_000}
    assert _submit(client, big).status_code == 413
    statuses = [_submit(client, PERSON).status_code for _ in range(3)]
    assert statuses == [201, 201, 429]  # the oversized one counted against the limit too
    assert len(registry.list()) == 2


text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fields=st.fixed_dictionaries(
        {k: st.one_of(text, st.just(v)) for k, v in PERSON.items()},
        optional={"project": text, "free_text": text, "unexpected": text},
    )
)
def test_fuzzed_forms_never_give_a_server_error_nor_lose_a_request(registry, fields):
    client = _client(registry, submissions_per_minute=10_000)
    before = len(registry.list())
    response = _submit(client, fields)
    assert response.status_code < 500, response.text[:500]
    stored = len(registry.list()) - before
    assert stored == (1 if response.status_code == 201 else 0)
