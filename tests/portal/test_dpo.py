"""The DPO's pages: local accounts, signed sessions, decisions with CSRF, audited identity reads."""

from __future__ import annotations

import logging
import re
import time

import pytest
from starlette.testclient import TestClient

from hdh_assets.gdpr.rights import Status, validate_submission
from portal.app import PortalSettings, create_app
from portal.dpo import SESSION_COOKIE, OperatorSessions
from resources.rights_registry import RightsRegistry, hash_password, password_matches

PASSWORD = "correct horse battery"
PERSON = ("erasure", "Laurent", "Hélène", "2012-02-06", "2 12 02 31 972 987 79", "h@example.fr")


@pytest.fixture
def registry(tmp_path):
    registry = RightsRegistry(f"sqlite:///{tmp_path / 'registry.db'}", b"s" * 32)
    registry.add_operator("alice", PASSWORD, "test")
    return registry


@pytest.fixture
def request_id(registry):
    kind, identity = validate_submission(*PERSON)
    request_id, _ = registry.submit(kind, identity, "pseudo-1")
    return request_id


def _client(registry, **settings) -> TestClient:
    app = create_app(
        registry, lambda nir: "pseudo", b"portal secret " * 3, PortalSettings(**settings)
    )
    return TestClient(app, raise_server_exceptions=False)


def _csrf(client, path) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def _sign_in(client, username="alice", password=PASSWORD):
    token = _csrf(client, "/dpo/login")
    return client.post(
        "/dpo/login",
        data={"username": username, "password": password, "csrf_token": token},
        follow_redirects=False,
    )


def test_pages_need_a_signed_in_operator(registry, request_id):
    client = _client(registry)
    for path in ("/dpo", f"/dpo/requests/{request_id}"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/dpo/login"
    response = client.post(f"/dpo/requests/{request_id}/verify", follow_redirects=False)
    assert response.status_code == 303
    assert registry.get(request_id).status is Status.RECEIVED


def test_a_wrong_password_or_an_unknown_operator_is_refused_alike(registry):
    client = _client(registry)
    wrong, unknown = _sign_in(client, password="not the password"), _sign_in(client, "mallory")
    assert wrong.status_code == unknown.status_code == 401
    assert (
        "Unknown operator or wrong password." in wrong.text and SESSION_COOKIE not in wrong.cookies
    )
    assert "alice" not in wrong.text  # the name typed is not echoed back


def test_an_operator_verifies_rejects_and_extends_and_the_audit_log_names_them(
    registry, request_id
):
    client = _client(registry)
    assert _sign_in(client).status_code == 303
    listing = client.get("/dpo")
    assert listing.status_code == 200 and request_id in listing.text and "alice" in listing.text
    page = f"/dpo/requests/{request_id}"
    response = client.post(f"{page}/extend", data={"reason": "", "csrf_token": _csrf(client, page)})
    assert response.status_code == 409 and "needs a reason" in response.text
    client.post(f"{page}/extend", data={"reason": "complex", "csrf_token": _csrf(client, page)})
    client.post(f"{page}/verify", data={"csrf_token": _csrf(client, page)})
    assert registry.get(request_id).status is Status.VERIFIED
    assert registry.get(request_id).extension_reason == "complex"
    actors = {(a["action"], a["actor"]) for a in registry.audit(request_id)}
    assert {("verified", "dpo:alice"), ("extended", "dpo:alice")} <= actors
    # a second verification is refused with the reason, not a server error
    again = client.post(f"{page}/verify", data={"csrf_token": _csrf(client, page)})
    assert again.status_code == 409


def test_a_decision_without_its_csrf_token_changes_nothing(registry, request_id):
    client = _client(registry)
    _sign_in(client)
    response = client.post(f"/dpo/requests/{request_id}/reject", data={"reason": "forged"})
    assert response.status_code == 403
    assert registry.get(request_id).status is Status.RECEIVED


def test_the_identity_is_shown_only_on_demand_and_the_read_is_audited(registry, request_id, caplog):
    caplog.set_level(logging.DEBUG)
    client = _client(registry)
    _sign_in(client)
    page = f"/dpo/requests/{request_id}"
    assert "Laurent" not in client.get(page).text
    shown = client.post(f"{page}/identity", data={"csrf_token": _csrf(client, page)})
    assert shown.status_code == 200 and "Laurent" in shown.text and "212023197298779" in shown.text
    assert ("identity_read", "dpo:alice") in {
        (a["action"], a["actor"]) for a in registry.audit(request_id)
    }
    assert "Laurent" not in caplog.text and "2120231972987" not in caplog.text


def test_a_forged_or_expired_session_is_not_accepted():
    stamps = {"alice": "stamp-1"}
    sessions = OperatorSessions(b"secret", hours=8, stamp_of=stamps.get)
    cookie = sessions.issue("alice", now=1_000)
    assert sessions.operator(cookie, now=1_001) == "alice"
    assert sessions.operator(cookie, now=1_000 + 8 * 3600 + 1) is None
    _, expiry, signature = cookie.split(":")
    assert sessions.operator(f"admin:{expiry}:{signature}", now=1_001) is None
    assert sessions.operator(f"alice:{int(expiry) + 10**6}:{signature}", now=1_001) is None
    assert OperatorSessions(b"other", 8, stamps.get).operator(cookie, now=1_001) is None
    assert sessions.operator("garbage", now=time.time()) is None
    stamps["alice"] = "stamp-2"  # a new password ends the session
    assert sessions.operator(cookie, now=1_001) is None


def test_a_password_reset_or_a_removed_account_ends_open_sessions(registry, request_id):
    client = _client(registry)
    _sign_in(client)
    assert client.get("/dpo").status_code == 200
    registry.add_operator("alice", "another long password", "test")
    assert client.get("/dpo", follow_redirects=False).status_code == 303
    _sign_in(client, password="another long password")
    assert client.get("/dpo").status_code == 200
    assert registry.remove_operator("alice")
    assert client.get("/dpo", follow_redirects=False).status_code == 303


def test_sign_in_attempts_are_rate_limited(registry):
    client = _client(registry, operator_logins_per_minute=3)
    codes = [_sign_in(client, password="wrong password!").status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]


def test_accounts_need_a_proper_name_and_a_long_password(registry):
    with pytest.raises(ValueError, match="12 characters"):
        registry.add_operator("bob", "short", "test")
    with pytest.raises(ValueError, match="operator name"):
        registry.add_operator("Bob Smith", PASSWORD, "test")
    stored = hash_password(PASSWORD)
    assert PASSWORD not in stored and password_matches(PASSWORD, stored)
    assert not password_matches(PASSWORD + "x", stored)
    registry.add_operator("alice", "a new long password", "test")  # a reset
    assert registry.check_operator("alice", "a new long password")
    assert not registry.check_operator("alice", PASSWORD)
    assert [o["username"] for o in registry.operators()] == ["alice"]
