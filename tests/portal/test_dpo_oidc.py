"""The DPO signs in through the real development provider (``identity/``), nothing mocked: the
portal runs on a real server, a browser is played by httpx through the provider's own forms."""

from __future__ import annotations

import html
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest

from auth import dev_provider
from auth.dev_provider import DevProvider
from auth.oidc import BACKCHANNEL_LOGOUT_EVENT, ProviderMetadata, fetch_metadata
from hdh_assets.gdpr.rights import Status, validate_submission
from portal.dpo import PENDING_COOKIE, SESSION_COOKIE
from portal.dpo_auth import BACKCHANNEL_LOGOUT_PATH, CALLBACK_PATH, SIGNED_OUT_PATH
from resources.rights_registry import RightsRegistry
from tests.oidc_fixtures import (
    PORTAL_CLIENT,
    PROVIDER_BANNER,
    confirm_provider_logout,
    follow,
    portal_with_provider,
    require_node,
    to_portal_callback,
)

PERSON = ("erasure", "Laurent", "Hélène", "2012-02-06", "2 12 02 31 972 987 79", "h@example.fr")


@dataclass(frozen=True)
class Portal:
    base: str
    provider: DevProvider
    metadata: ProviderMetadata
    registry: RightsRegistry
    accounts: dict
    secrets: Path

    def new_request(self) -> str:
        kind, identity = validate_submission(*PERSON)
        return self.registry.submit(kind, identity, f"pseudo-{uuid.uuid4().hex[:8]}")[0]


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    require_node()
    with portal_with_provider(tmp_path_factory.mktemp("portal-oidc")) as served:
        yield Portal(
            served.base,
            served.provider,
            fetch_metadata(served.provider.issuer),
            served.registry,
            served.accounts,
            served.secrets,
        )


def _to_callback(portal: Portal, browser: httpx.Client, username: str | None) -> httpx.Response:
    """From the sign-in button to the provider's redirect back (not yet followed)."""
    return to_portal_callback(portal, browser, username)


def _sign_in(portal: Portal, username: str, browser: httpx.Client) -> httpx.Response:
    """The whole sign-in; returns the portal's answer to the provider's redirect back."""
    callback = _to_callback(portal, browser, username)
    return browser.get(callback.headers["location"])


def _csrf(browser: httpx.Client, url: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', browser.get(url).text).group(1)


def _with_cookie(portal: Portal, value: str) -> httpx.Client:
    """A fresh browser presenting only this session cookie."""
    other = httpx.Client(timeout=10)
    other.cookies.set(SESSION_COOKIE, value, domain="127.0.0.1", path="/dpo")
    return other


def test_the_dpo_signs_in_through_the_provider_and_decisions_name_them(portal: Portal) -> None:
    request_id = portal.new_request()
    with httpx.Client(timeout=10) as browser:
        login = follow(browser, browser.get(f"{portal.base}/dpo"))
        assert str(login.url) == f"{portal.base}/dpo/login"
        assert 'id="sign-in"' in login.text and 'type="password"' not in login.text

        start = browser.get(f"{portal.base}/dpo/auth/start")
        authorize = urlsplit(start.headers["location"])
        assert start.headers["location"].startswith(portal.metadata.authorization_endpoint)
        query = parse_qs(authorize.query)
        assert query["code_challenge_method"] == ["S256"] and query["client_id"] == ["hdh-portal"]
        assert query["redirect_uri"] == [portal.base + CALLBACK_PATH]
        assert query["state"][0] and query["nonce"][0] and "code_verifier" not in query
        pending = start.headers["set-cookie"]
        assert PENDING_COOKIE in pending and "HttpOnly" in pending and "SameSite=lax" in pending

        callback = _to_callback(portal, browser, "dpo")
        signed_in = browser.get(callback.headers["location"])
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/dpo"
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/dpo" in cookie
        assert "." not in browser.cookies[SESSION_COOKIE]  # opaque: no name, no JWT

        listing = follow(browser, signed_in)
        assert listing.status_code == 200 and request_id in listing.text
        assert '<strong id="operator">dpo</strong>' in listing.text
        page = f"{portal.base}/dpo/requests/{request_id}"
        decided = browser.post(f"{page}/verify", data={"csrf_token": _csrf(browser, page)})
        assert decided.status_code == 303
    assert portal.registry.get(request_id).status is Status.VERIFIED
    assert ("verified", "dpo:dpo") in {
        (a["action"], a["actor"]) for a in portal.registry.audit(request_id)
    }


def test_someone_without_the_dpo_role_gets_a_403_naming_it(portal: Portal) -> None:
    request_id = portal.new_request()
    # A data referent signs in, for the package reviews; the DPO's pages stay closed to them.
    with httpx.Client(timeout=10) as browser:
        answer = _sign_in(portal, "referent", browser)
        assert answer.status_code == 303 and answer.headers["location"] == "/staff/packages"
        for path in ("/dpo", f"/dpo/requests/{request_id}"):
            page = browser.get(f"{portal.base}{path}")
            assert page.status_code == 403
            assert 'data-missing-role="dpo"' in page.text and "DPO role" in page.text
            assert "Traceback" not in page.text
        page = f"{portal.base}/dpo/requests/{request_id}"
        refused = browser.post(f"{page}/verify", data={"csrf_token": _csrf(browser, page)})
        assert refused.status_code == 403
    assert portal.registry.get(request_id).status is Status.RECEIVED
    # Someone with no staff role at all gets no session.
    with httpx.Client(timeout=10) as browser:
        answer = _sign_in(portal, "claire.martin", browser)
        assert answer.status_code == 403 and "Staff role needed" in answer.text
        assert "Traceback" not in answer.text
        assert SESSION_COOKIE not in browser.cookies
        assert browser.get(f"{portal.base}/dpo").status_code == 303


def test_a_wrong_state_or_a_replayed_code_is_refused(portal: Portal) -> None:
    with httpx.Client(timeout=10) as browser:
        callback = _to_callback(portal, browser, "dpo").headers["location"]
        params = parse_qs(urlsplit(callback).query)
        forged = {**{k: v[0] for k, v in params.items()}, "state": "not-the-state"}
        refused = browser.get(f"{portal.base}{CALLBACK_PATH}?{urlencode(forged)}")
        assert refused.status_code == 400 and "does not belong to your sign-in" in refused.text
        # The pending sign-in is used up: the genuine answer is refused now too.
        assert browser.get(callback).status_code == 400
        assert SESSION_COOKIE not in browser.cookies

        first = _to_callback(portal, browser, "dpo").headers["location"]
        assert browser.get(first).status_code == 303  # signed in
        assert browser.get(first).status_code == 400  # the same answer again
        # A used code with a fresh sign-in's state: the provider refuses the code.
        fresh = parse_qs(urlsplit(_to_callback(portal, browser, "dpo").headers["location"]).query)
        old = {k: v[0] for k, v in parse_qs(urlsplit(first).query).items()}
        replay = browser.get(
            f"{portal.base}{CALLBACK_PATH}?{urlencode({**old, 'state': fresh['state'][0]})}"
        )
        assert replay.status_code == 400 and "refused this sign-in" in replay.text
        assert old["code"] not in replay.text


def test_sign_out_ends_the_session_at_once_and_signs_out_at_the_provider(portal: Portal) -> None:
    with httpx.Client(timeout=10) as browser:
        answer = _sign_in(portal, "dpo", browser)
        assert answer.status_code == 303
        cookie = browser.cookies[SESSION_COOKIE]
        token = _csrf(browser, f"{portal.base}/dpo")
        out = browser.post(f"{portal.base}/dpo/logout", data={"csrf_token": token})
        # A page that moves on to the provider (a form may not be redirected to another
        # origin under the pages' form-action 'self'), not a redirect.
        assert out.status_code == 200 and "location" not in out.headers
        assert "form-action 'self'" in out.headers["content-security-policy"]
        (location,) = re.findall(r'id="end-session" class="button" href="([^"]+)"', out.text)
        location = html.unescape(location)
        assert f'content="0;url={html.escape(location)}"' in out.text
        assert location.startswith(portal.metadata.end_session_endpoint)
        query = parse_qs(urlsplit(location).query)
        assert query["post_logout_redirect_uri"] == [portal.base + SIGNED_OUT_PATH]
        assert (
            jwt.decode(query["id_token_hint"][0], options={"verify_signature": False})["sub"]
            == "dpo"
        )
        with _with_cookie(portal, cookie) as stale:
            assert stale.get(f"{portal.base}/dpo").status_code == 303  # ended before the provider
        done = confirm_provider_logout(browser, browser.get(location))
        assert done.headers["location"].startswith(portal.base + SIGNED_OUT_PATH)
        signed_out = browser.get(done.headers["location"])
        assert signed_out.status_code == 200 and "You are signed out" in signed_out.text
        # Signed out at the provider too: signing in asks for the password again.
        start = browser.get(f"{portal.base}/dpo/auth/start")
        again = follow(browser, start, portal.base)
        assert again.status_code == 200 and PROVIDER_BANNER in again.text


def test_signing_out_at_the_provider_ends_the_portal_session(portal: Portal) -> None:
    with httpx.Client(timeout=10) as browser:
        answer = _sign_in(portal, "dpo", browser)
        assert answer.status_code == 303
        cookie = browser.cookies[SESSION_COOKIE]
        assert browser.get(f"{portal.base}/dpo").status_code == 200
        # Sign out at the provider itself: it tells the portal over the back channel.
        confirm_provider_logout(browser, browser.get(portal.metadata.end_session_endpoint))
        deadline = time.monotonic() + 10
        with _with_cookie(portal, cookie) as stale:
            while stale.get(f"{portal.base}/dpo").status_code == 200:
                assert time.monotonic() < deadline, "the back-channel logout did not arrive"
                time.sleep(0.1)


def _logout_token(portal: Portal, **claims) -> str:
    """A logout token signed with the development provider's own key, as it would send."""
    key = dev_provider.signing_key(portal.secrets)
    now = int(time.time())
    body = {
        "iss": portal.provider.issuer,
        "aud": PORTAL_CLIENT.client_id,
        "iat": now,
        "exp": now + 120,
        "jti": uuid.uuid4().hex,
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        **claims,
    }
    private = jwt.PyJWK(key).key
    return jwt.encode(body, private, algorithm="RS256", headers={"kid": key["kid"]})


def test_back_channel_logout_tokens_are_verified_and_a_replay_is_refused(portal: Portal) -> None:
    endpoint = portal.base + BACKCHANNEL_LOGOUT_PATH
    with httpx.Client(timeout=10) as browser:
        _sign_in(portal, "dpo", browser)
        assert browser.get(f"{portal.base}/dpo").status_code == 200
        token = _logout_token(portal, sub="dpo")
        refused = [
            _logout_token(portal, sub="dpo", aud="another-client"),
            _logout_token(portal, sub="dpo", nonce="n"),
            _logout_token(portal, sub="dpo", events={}),
            _logout_token(portal, sub="dpo", iss="http://127.0.0.1:1"),
            token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
        ]
        for bad in refused:
            answer = httpx.post(endpoint, data={"logout_token": bad})
            assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"
        assert httpx.post(endpoint, data={}).status_code == 400
        assert browser.get(f"{portal.base}/dpo").status_code == 200  # still signed in

        ended = httpx.post(endpoint, data={"logout_token": token})
        assert ended.status_code == 200 and ended.headers["cache-control"] == "no-store"
        assert browser.get(f"{portal.base}/dpo").status_code == 303
        replayed = httpx.post(endpoint, data={"logout_token": token})
        assert replayed.status_code == 400 and "already used" in replayed.text
