"""The DPO's pages without a provider: sign-in not configured, break-glass local accounts
(off by default, audited), server-side sessions, decisions with CSRF, audited identity reads.
Sign-in through the OpenID Connect provider is in ``test_dpo_oidc.py``."""

from __future__ import annotations

import json
import logging
import re
import time

import pytest
from starlette.testclient import TestClient

from auth import dev_provider
from auth.settings import OidcSettings
from hdh_assets.gdpr.rights import Status, validate_submission
from portal.app import PortalSettings, create_app
from portal.dpo import SESSION_COOKIE, account_audit
from portal.dpo_auth import DpoAuth, auth_from_env
from portal.dpo_sessions import BREAK_GLASS, SessionStore
from resources.rights_registry import RightsRegistry, hash_password, password_matches
from tests.oidc_fixtures import free_port

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


def _client(registry, break_glass: bool = True, **settings) -> TestClient:
    app = create_app(
        registry,
        lambda nir: "pseudo",
        b"portal secret " * 3,
        PortalSettings(**settings),
        DpoAuth(break_glass=break_glass),
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


def test_without_a_provider_nor_break_glass_sign_in_is_not_configured_and_nothing_opens(
    registry, request_id
):
    client = TestClient(
        create_app(registry, lambda nir: "pseudo", b"portal secret " * 3),
        raise_server_exceptions=False,
    )
    page = client.get("/dpo")
    assert page.status_code == 503 and "Sign-in is not configured" in page.text
    assert str(page.url).endswith("/dpo/login")
    assert 'type="password"' not in page.text
    assert client.get("/dpo/auth/start", follow_redirects=False).status_code == 503
    assert client.get("/dpo/auth/callback?code=x&state=y").status_code == 503
    assert (
        client.post("/dpo/login", data={"username": "alice", "password": PASSWORD}).status_code
        == 404
    )
    assert client.post("/dpo/backchannel-logout", data={"logout_token": "x"}).status_code == 400
    for path in ("/dpo", f"/dpo/requests/{request_id}"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/dpo/login"


def test_break_glass_is_off_by_default_and_then_has_no_password_form(registry, request_id):
    client = _client(registry, break_glass=False)
    assert (
        client.post(
            "/dpo/login", data={"username": "alice", "password": PASSWORD}, follow_redirects=False
        ).status_code
        == 404
    )
    assert 'type="password"' not in client.get("/dpo/login").text
    assert account_audit(registry) == []


def test_a_break_glass_sign_in_is_labelled_and_audited(registry, request_id):
    client = _client(registry)
    login = client.get("/dpo/login")
    assert 'id="break-glass"' in login.text and "Break-glass sign-in" in login.text
    assert "recorded in the audit log" in login.text
    assert 'id="sign-in"' not in login.text  # no provider configured here
    _sign_in(client, password="not the password")
    response = _sign_in(client)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/dpo" in cookie
    listing = client.get("/dpo")
    assert listing.status_code == 200 and 'id="break-glass-session"' in listing.text
    entries = [(a["actor"], a["action"]) for a in account_audit(registry)]
    assert entries == [
        ("dpo:break-glass", "break_glass_sign_in_refused"),
        ("dpo:break-glass:alice", "break_glass_sign_in"),
    ]
    # Turning break-glass off ends its sessions.
    off = _client(registry, break_glass=False)
    off.cookies.set(SESSION_COOKIE, client.cookies[SESSION_COOKIE], path="/dpo")
    assert off.get("/dpo", follow_redirects=False).status_code == 303


def test_sign_out_ends_the_session_at_once(registry):
    client = _client(registry)
    _sign_in(client)
    cookie = client.cookies[SESSION_COOKIE]
    token = _csrf(client, "/dpo")
    response = client.post("/dpo/logout", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/dpo/signed-out"
    assert "You are signed out" in client.get("/dpo/signed-out").text
    client.cookies.set(SESSION_COOKIE, cookie, path="/dpo")
    assert client.get("/dpo", follow_redirects=False).status_code == 303


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
    actor = "dpo:break-glass:alice"
    assert {("verified", actor), ("extended", actor)} <= actors
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
    assert ("identity_read", "dpo:break-glass:alice") in {
        (a["action"], a["actor"]) for a in registry.audit(request_id)
    }
    assert "Laurent" not in caplog.text and "2120231972987" not in caplog.text


def test_a_forged_or_expired_session_is_not_accepted(registry):
    sessions = SessionStore(registry.engine, hours=8)
    cookie = sessions.create(method=BREAK_GLASS, subject="alice", username="alice", now=1_000)
    assert sessions.get(cookie, now=1_001).username == "alice"
    assert sessions.get(cookie, now=1_000 + 8 * 3600) is None
    assert sessions.get(cookie[:-1] + ("A" if cookie[-1] != "A" else "B"), now=1_001) is None
    assert sessions.get("garbage", now=time.time()) is None and sessions.get(None) is None
    with registry.engine.connect() as db:  # the database holds a digest, not the cookie
        assert cookie not in str(db.exec_driver_sql("select * from portal_dpo_sessions").all())


def test_the_provider_comes_from_the_environment_or_the_started_development_provider(tmp_path):
    secrets_dir = tmp_path / "secrets"
    configured = auth_from_env(secrets_dir, {"HDH_OIDC_ISSUER": "https://idp.example/realms/hdh"})
    assert configured.provider().issuer == "https://idp.example/realms/hdh"
    assert not configured.break_glass and configured.base_url is None
    development = auth_from_env(
        secrets_dir, {"HDH_PORTAL_BREAK_GLASS": "1", "HDH_PORTAL_URL": "https://portal.example/"}
    )
    assert development.break_glass and development.base_url == "https://portal.example"
    assert development.provider() is None  # not started for this home: no provider
    config = dev_provider.render_config(secrets_dir, port=3999)
    (secrets_dir / dev_provider.CONFIG_FILE).write_text(json.dumps(config))
    started = development.provider()
    assert started.issuer == "http://127.0.0.1:3999"
    portal = started.client("portal")
    assert portal.client_id == "hdh-portal" and portal.client_secret


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


def test_with_the_provider_down_break_glass_is_the_labelled_way_in(registry, request_id):
    down = OidcSettings(issuer=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    app = create_app(
        registry,
        lambda nir: "pseudo",
        b"portal secret " * 3,
        auth=DpoAuth.with_provider(down, break_glass=True),
    )
    client = TestClient(app, raise_server_exceptions=False)
    login = client.get("/dpo/login")
    assert 'id="sign-in"' in login.text and 'id="break-glass"' in login.text
    start = client.get("/dpo/auth/start", follow_redirects=False)
    assert start.status_code == 503 and "cannot be reached" in start.text
    assert "Traceback" not in start.text
    assert _sign_in(client).status_code == 303
    assert client.get("/dpo").status_code == 200
