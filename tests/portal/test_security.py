"""The portal's defences: real client addresses behind trusted proxies only, per-account back-off
and Retry-After, bodies refused with a 4xx, https cookies and HSTS, CSRF tokens per session,
security headers on every response, allowed hosts, field screening, the audited free text, the
registry's file modes and the refusal of demo secrets outside a demo."""

from __future__ import annotations

import logging
import os
import re
import stat

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from hdh_assets.gdpr.rights import validate_submission
from portal.app import DemoSecretsRefused, PortalSettings, app_from_env, create_app
from portal.dpo import SESSION_COOKIE
from portal.dpo_auth import DpoAuth
from portal.dpo_sessions import SessionStore
from portal.fields import calendar_date, screen
from resources.home import HdhHome
from resources.rights_registry import RightsRegistry, RightsRegistryResource

PASSWORD = "correct horse battery"
PERSON = {
    "type": "rectification",
    "family_name": "Laurent",
    "given_names": "Hélène",
    "birth_date": "2012-02-06",
    "nir": "2 12 02 31 972 987 79",
    "email": "helene.laurent0@example.fr",
}
HEADERS = ("content-security-policy", "x-content-type-options", "referrer-policy")


@pytest.fixture
def registry(tmp_path):
    registry = RightsRegistry(f"sqlite:///{tmp_path / 'registry.db'}", b"s" * 32)
    registry.add_operator("alice", PASSWORD, "test")
    return registry


def _client(registry, base_url="http://testserver", pseudonym_of=None, **settings) -> TestClient:
    app = create_app(
        registry,
        pseudonym_of or (lambda nir: f"pseudo-{nir[-4:]}"),
        b"portal secret " * 3,
        PortalSettings(**settings),
        DpoAuth(break_glass=True),
    )
    return TestClient(app, base_url=base_url, raise_server_exceptions=False)


def _token(page) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def _submit(client, fields, lang="en", headers=None):
    token = _token(client.get(f"/{lang}/request"))
    return client.post(
        f"/{lang}/request", data={**fields, "csrf_token": token}, headers=headers or {}
    )


def _sign_in(client, username="alice", password=PASSWORD, headers=None):
    token = _token(client.get("/dpo/login"))
    return client.post(
        "/dpo/login",
        data={"username": username, "password": password, "csrf_token": token},
        headers=headers or {},
        follow_redirects=False,
    )


def _secure_headers(response) -> bool:
    return all(response.headers.get(h) for h in HEADERS) and (
        response.headers["x-frame-options"] == "DENY"
        and "frame-ancestors 'none'" in response.headers["content-security-policy"]
    )


# -- 1. real client addresses, back-off, Retry-After ------------------------------------------


def test_a_forwarded_address_from_an_untrusted_peer_does_not_escape_the_limit(registry):
    client = _client(registry, submissions_per_minute=2)
    codes = [
        _submit(client, PERSON, headers={"x-forwarded-for": f"10.0.0.{i}"}).status_code
        for i in range(3)
    ]
    assert codes == [201, 201, 429]


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(registry):
    client = _client(registry, submissions_per_minute=1, trusted_proxies=("testclient",))
    # The proxy appends the real peer; what a client wrote before it is not believed.
    first = _submit(client, PERSON, headers={"x-forwarded-for": "6.6.6.1, 192.0.2.1"})
    spoofed = _submit(client, PERSON, headers={"x-forwarded-for": "6.6.6.2, 192.0.2.1"})
    other = _submit(client, PERSON, headers={"x-forwarded-for": "192.0.2.2"})
    assert (first.status_code, spoofed.status_code, other.status_code) == (201, 429, 201)


def test_every_429_says_when_to_retry(registry):
    client = _client(
        registry, submissions_per_minute=0, status_checks_per_minute=0, operator_logins_per_minute=0
    )
    refused = [
        _submit(client, PERSON),
        client.post("/en/status", data={"csrf_token": _token(client.get("/en/status"))}),
        _sign_in(client),
    ]
    assert [r.status_code for r in refused] == [429, 429, 429]
    assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in refused)


def test_failed_sign_ins_make_the_account_wait_whatever_the_address(registry):
    client = _client(
        registry,
        failed_sign_ins_before_backoff=2,
        sign_in_backoff_seconds=30,
        trusted_proxies=("testclient",),
    )
    address = iter(f"192.0.2.{i}" for i in range(1, 10))

    def attempt(username="alice", password="wrong password!"):
        return _sign_in(client, username, password, {"x-forwarded-for": next(address)})

    assert [attempt().status_code for _ in range(2)] == [401, 401]
    waiting = attempt(password=PASSWORD)  # even the right password waits, from a new address
    assert waiting.status_code == 429 and int(waiting.headers["retry-after"]) == 30
    assert SESSION_COOKIE not in waiting.cookies
    assert attempt("bob").status_code == 401  # another name is not held back
    sessions = SessionStore(registry.engine)
    assert sessions.sign_in_wait("alice") > 0
    # The wait doubles with each further failure, up to the maximum; a success clears it.
    assert sessions.sign_in_failed("carol", free=1, base_seconds=30, now=0) == 30
    assert sessions.sign_in_failed("carol", free=1, base_seconds=30, now=1) == 60
    assert sessions.sign_in_failed("carol", free=1, base_seconds=300, max_seconds=400, now=2) == 400
    sessions.sign_in_succeeded("carol")
    assert sessions.sign_in_wait("carol") == 0


def test_hdh_portal_leaves_forwarded_headers_to_the_application(tmp_path, monkeypatch):
    import uvicorn

    from hdh_cli.commands.portal import portal

    ran = {}
    monkeypatch.setenv("HDH_HOME", str(tmp_path / "hdh"))
    # the command sets HDH_PORTAL_URL for the app it serves: restored after the test, or every
    # later process started from this session would inherit this port
    monkeypatch.setenv("HDH_PORTAL_URL", "")
    monkeypatch.delenv("HDH_PORTAL_URL")
    for name in ("HDH_PORTAL_SECRET", "HDH_RIGHTS_KEY", "HDH_PSEUDONYM_KEY", "HDH_PORTAL_DEMO"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(kw))
    refused = CliRunner().invoke(portal, ["--port", "3999"])
    assert refused.exit_code != 0 and "HDH_PORTAL_SECRET" in refused.output and not ran
    result = CliRunner().invoke(portal, ["--port", "3999", "--demo"])
    assert result.exit_code == 0, result.output
    assert ran["proxy_headers"] is False  # uvicorn's default trusts 127.0.0.1


# -- 2. bodies ---------------------------------------------------------------------------------


def test_too_many_fields_a_multipart_body_or_a_large_one_is_a_4xx(registry, caplog):
    caplog.set_level(logging.DEBUG)
    client = _client(registry)
    token = _token(client.get("/en/request"))
    many = "&".join(f"f{i}=x" for i in range(200)) + f"&csrf_token={token}"
    form = {"content-type": "application/x-www-form-urlencoded"}
    answers = [
        client.post("/en/request", content=many, headers=form),
        client.post("/en/request", files={"upload": ("a.txt", b"x" * 10)}, data=PERSON),
        client.post("/en/request", content=b"\xff\xfe=\xff", headers=form),
        client.post("/en/request", content="x=" + "y" * 20_000, headers=form),
    ]
    assert [a.status_code for a in answers] == [400, 400, 400, 413]
    _sign_in(client)
    staff = [
        client.post("/dpo/logout", content=many, headers=form),
        client.post("/dpo/backchannel-logout", content=many, headers=form),
    ]
    assert [a.status_code for a in staff] == [400, 400]
    for answer in answers + staff:
        assert "Traceback" not in answer.text and _secure_headers(answer)
    assert "Traceback" not in caplog.text and registry.list() == []


# -- 3. cookies, HSTS, CSRF tokens per session --------------------------------------------------


def test_over_https_cookies_are_secure_and_prefixed_and_hsts_is_sent(registry):
    client = _client(registry, base_url="https://testserver")
    page = client.get("/en/request")
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("__Host-hdh_csrf=") and "Secure" in cookie and "Path=/" in cookie
    assert page.headers["strict-transport-security"].startswith("max-age=")
    assert _submit(client, PERSON).status_code == 201
    signed_in = _sign_in(client)
    assert signed_in.status_code == 303
    session = signed_in.headers["set-cookie"]
    assert session.startswith("__Secure-hdh_dpo=") and "Secure" in session
    assert "Path=/dpo" in session and client.get("/dpo").status_code == 200
    plain = _client(registry).get("/en/request")
    assert "strict-transport-security" not in plain.headers
    assert "Secure" not in plain.headers["set-cookie"]


def test_https_comes_from_a_trusted_proxy_or_the_setting_never_from_anyone(registry):
    behind = _client(registry, trusted_proxies=("testclient",))
    proxied = behind.get("/en/request", headers={"x-forwarded-proto": "https"})
    assert "__Host-hdh_csrf" in proxied.headers["set-cookie"]
    assert "strict-transport-security" in proxied.headers
    untrusted = _client(registry).get("/en/request", headers={"x-forwarded-proto": "https"})
    assert "strict-transport-security" not in untrusted.headers
    forced = _client(registry, https=True).get("/en/request")
    assert (
        "Secure" in forced.headers["set-cookie"] and "strict-transport-security" in forced.headers
    )


def test_a_second_tab_does_not_invalidate_the_first(registry):
    client = _client(registry)
    first = _token(client.get("/en/request"))
    second = _token(client.get("/fr/request"))
    assert first == second  # one token per session
    assert client.post("/en/request", data={**PERSON, "csrf_token": first}).status_code == 201


def test_a_staff_token_is_bound_to_its_session(registry):
    kind, identity = validate_submission(*PERSON.values())
    request_id, _ = registry.submit(kind, identity, "pseudo-1")
    alice, other = _client(registry), _client(registry)
    _sign_in(alice), _sign_in(other)
    page = f"/dpo/requests/{request_id}"
    token = _token(alice.get(page))
    assert token == _token(alice.get("/dpo"))  # every page (tab) of the session: one token
    # Another session's token, even with this browser's CSRF cookie in hand, changes nothing.
    other.cookies.set("hdh_csrf", alice.cookies["hdh_csrf"])
    assert other.post(f"{page}/verify", data={"csrf_token": token}).status_code == 403
    assert registry.get(request_id).status.value == "received"
    assert alice.post(f"{page}/verify", data={"csrf_token": token}).status_code == 200


# -- 4. headers everywhere, allowed hosts -------------------------------------------------------


def test_security_headers_on_every_response_errors_included(registry, caplog):
    caplog.set_level(logging.DEBUG)

    def broken(nir):
        raise RuntimeError(f"cannot pseudonymise {nir}")  # a message that carries the value

    client = _client(registry, pseudonym_of=broken)
    answers = {
        "redirect": client.get("/", follow_redirects=False),
        "404": client.get("/nowhere"),
        "405": client.delete("/en/request"),
        "500": _submit(client, PERSON),
        "bad host": client.get("/en/request", headers={"host": "evil.example"}),
    }
    codes = {k: r.status_code for k, r in answers.items()}
    assert codes == {"redirect": 303, "404": 404, "405": 405, "500": 500, "bad host": 400}
    for name, response in answers.items():
        assert _secure_headers(response), name
        assert "Traceback" not in response.text
    assert "RuntimeError" in caplog.text and "2120231972987" not in caplog.text


def test_configured_host_names_are_served(registry):
    client = _client(registry, allowed_hosts=("portal.example",))
    assert client.get("/en/request", headers={"host": "portal.example"}).status_code == 200
    assert client.get("/en/request", headers={"host": "localhost:3001"}).status_code == 200
    assert client.get("/en/request", headers={"host": "other.example"}).status_code == 400


# -- 5. fields ---------------------------------------------------------------------------------


def test_decomposed_accents_are_a_valid_name_and_stored_composed(registry):
    client = _client(registry)
    decomposed = {**PERSON, "given_names": "He\u0301le\u0300ne", "family_name": "Lefe\u0300vre"}
    response = _submit(client, decomposed)
    assert response.status_code == 201
    request_id = re.search(r'id="tracking">([^<]+)<', response.text).group(1)
    identity = registry.identity(request_id, "test")
    assert identity["given_names"] == "Hélène" and identity["family_name"] == "Lefèvre"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("family_name", "Lau\u200brent"),  # zero-width space (Cf)
        ("given_names", "Hél\u202eène"),  # right-to-left override (Cf)
        ("email", "helene\x00@example.fr"),  # NUL (Cc)
        ("email", "helene\u2060.laurent@example.fr"),  # word joiner (Cf)
        ("free_text", "my name is \u202ewrong"),
        ("project", "p\x07"),
        ("birth_date", "2012-02-30"),
        ("birth_date", "20120206"),
        ("birth_date", "2012-W06-1"),
        ("birth_date", "\uff12\uff10\uff11\uff12-\uff10\uff12-\uff10\uff16"),  # full-width digits
    ],
)
def test_invisible_characters_and_non_calendar_dates_are_refused(registry, field, value, caplog):
    caplog.set_level(logging.DEBUG)
    response = _submit(_client(registry), {**PERSON, field: value}, "fr")
    assert response.status_code == 422 and registry.list() == []
    assert f'for="{field}"' in response.text
    assert value not in caplog.text


def test_the_free_text_keeps_its_line_breaks(registry):
    fields, errors = screen({**PERSON, "free_text": "line one\r\nline two"})
    assert errors == {} and fields["free_text"] == "line one\r\nline two"
    assert calendar_date("2024-02-29") and not calendar_date("2023-02-29")


# -- 6. the free text, on demand and audited ----------------------------------------------------


def test_the_free_text_is_shown_only_on_demand_and_the_read_is_audited(registry, caplog):
    caplog.set_level(logging.DEBUG)
    kind, identity = validate_submission(*PERSON.values())
    wrote = "Please correct my birth place: Lyon, not Lille."
    request_id, _ = registry.submit(kind, identity, "pseudo-1", wrote)
    client = _client(registry)
    _sign_in(client)
    page = f"/dpo/requests/{request_id}"
    shown = client.get(page)
    assert "birth place" not in shown.text and 'id="show-free-text"' in shown.text
    assert "free_text_read" not in {a["action"] for a in registry.audit(request_id)}
    read = client.post(f"{page}/free_text", data={"csrf_token": _token(shown)})
    assert read.status_code == 200 and "Lyon, not Lille" in read.text
    assert ("free_text_read", "dpo:break-glass:alice") in {
        (a["action"], a["actor"]) for a in registry.audit(request_id)
    }
    assert "Lyon" not in caplog.text
    assert registry.free_text(registry.submit(kind, identity, "pseudo-2")[0], "test") == ""


# -- 7. file modes, demo secrets ----------------------------------------------------------------


def test_the_registry_is_created_readable_by_its_user_only(tmp_path):
    old = os.umask(0o022)
    try:
        home = HdhHome(tmp_path / "hdh")
        registry = RightsRegistryResource(key="k" * 32).registry(home)
        kind, identity = validate_submission(*PERSON.values())
        registry.submit(kind, identity, "pseudo-1")
    finally:
        os.umask(old)
    assert stat.S_IMODE(home.rights.stat().st_mode) == 0o700
    files = sorted(home.rights.iterdir())
    assert home.rights / "registry.db" in files
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}


def test_the_demo_secrets_are_refused_unless_it_is_a_demo(tmp_path, monkeypatch):
    for name in ("HDH_PORTAL_SECRET", "HDH_RIGHTS_KEY", "HDH_PSEUDONYM_KEY", "HDH_PORTAL_DEMO"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("HDH_RIGHTS_DB_URL", raising=False)
    home = HdhHome(tmp_path / "hdh")
    with pytest.raises(DemoSecretsRefused, match="HDH_PORTAL_SECRET, HDH_RIGHTS_KEY"):
        app_from_env(home)
    assert TestClient(app_from_env(home, demo=True)).get("/en/request").status_code == 200
    monkeypatch.setenv("HDH_PORTAL_DEMO", "1")
    assert app_from_env(home) is not None
    monkeypatch.delenv("HDH_PORTAL_DEMO")
    monkeypatch.setenv("HDH_PORTAL_SECRET", "p" * 32)
    monkeypatch.setenv("HDH_RIGHTS_KEY", "r" * 32)
    monkeypatch.setenv("HDH_PSEUDONYM_KEY", "cd" * 32)
    monkeypatch.setenv("HDH_PORTAL_URL", "https://portal.example")
    client = TestClient(app_from_env(home), base_url="https://portal.example")
    page = client.get("/en/request")  # the configured address is an allowed host, over https
    assert page.status_code == 200 and "__Host-hdh_csrf" in page.headers["set-cookie"]
