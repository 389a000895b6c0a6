"""The sign-in protocol against a real OpenID Connect provider (``oidc-provider``), end to end:
a browser is played by httpx, through the provider's own login form."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import jwt
import pytest

from auth import dev_provider
from auth.dev_provider import DevProvider
from auth.oidc import (
    DiscoveryError,
    KeySet,
    MetadataCache,
    Pkce,
    ProviderMetadata,
    TokenRequestError,
    TokenResponse,
    TokenVerificationError,
    authorization_url,
    discovery_url,
    end_session_url,
    exchange_code,
    fetch_metadata,
    fetch_userinfo,
    new_nonce,
    new_state,
    pkce_challenge,
    verify_access_token,
    verify_id_token,
    verify_logout_token,
)
from auth.roles import DATA_REFERENT, DPO, access_for
from auth.settings import OidcClient, OidcSettings
from tests.auth.conftest import PORTAL, VIEWER, RelyingParty

FORM = re.compile(r'<form[^>]*action="([^"]+)"', re.I)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', re.I)


class LoginRefused(Exception):
    """The provider showed its login form again, with an error."""

    def __init__(self, page: str):
        super().__init__("login refused")
        self.page = page


@dataclass
class SignIn:
    """What the relying party holds after the redirect back: its secrets and the code."""

    browser: httpx.Client
    state: str
    nonce: str
    pkce: Pkce
    callback: dict[str, str]


def follow(browser: httpx.Client, response: httpx.Response, stop_at: str) -> httpx.Response:
    """Follow redirects like a browser, stopping at the relying party's address."""
    for _ in range(10):
        location = response.headers.get("location")
        if response.status_code not in (302, 303) or location is None:
            return response
        target = urljoin(str(response.url), location)
        if target.startswith(stop_at):
            return response
        response = browser.get(target)
    raise AssertionError("too many redirects")


def sign_in(
    metadata: ProviderMetadata,
    relying_party: RelyingParty,
    client: OidcClient,
    username: str,
    password: str,
    *,
    resource: str | None = None,
    browser: httpx.Client | None = None,
) -> SignIn:
    """The authorization code flow up to the redirect back with the code."""
    browser = browser or httpx.Client(timeout=10)
    state, nonce, pkce = new_state(), new_nonce(), Pkce.create()
    url = authorization_url(
        metadata,
        client_id=client.client_id,
        redirect_uri=relying_party.redirect_uri,
        state=state,
        nonce=nonce,
        code_challenge=pkce.challenge,
        resource=resource,
    )
    page = follow(browser, browser.get(url), relying_party.redirect_uri)
    if page.status_code == 200:
        assert "DEVELOPMENT identity provider" in page.text
        action = html.unescape(FORM.search(page.text).group(1))
        posted = browser.post(
            urljoin(str(page.url), action), data={"login": username, "password": password}
        )
        if posted.status_code == 401:
            raise LoginRefused(posted.text)
        page = follow(browser, posted, relying_party.redirect_uri)
    location = page.headers["location"]
    assert location.startswith(relying_party.redirect_uri), location
    callback = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    return SignIn(browser, state, nonce, pkce, callback)


def exchange(
    metadata: ProviderMetadata,
    relying_party: RelyingParty,
    client: OidcClient,
    signed_in: SignIn,
    resource: str | None = None,
) -> TokenResponse:
    assert signed_in.callback["state"] == signed_in.state
    return exchange_code(
        metadata,
        client,
        code=signed_in.callback["code"],
        redirect_uri=relying_party.redirect_uri,
        code_verifier=signed_in.pkce.verifier,
        resource=resource,
    )


@pytest.fixture(scope="module")
def portal_sign_in(metadata, relying_party, accounts) -> tuple[SignIn, TokenResponse]:
    """The data referent signed in to the confidential portal client."""
    referent = accounts["referent"]
    signed_in = sign_in(metadata, relying_party, PORTAL, referent.username, referent.password)
    return signed_in, exchange(metadata, relying_party, PORTAL, signed_in)


def tamper(token: str) -> str:
    """The same token with one claim changed and the signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["groups"] = ["dpo"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


# Discovery and the authorization request ---------------------------------------------------


def test_discovery_document_is_checked_and_cached(provider: DevProvider, metadata) -> None:
    assert metadata.issuer == provider.issuer
    assert "S256" in metadata.code_challenge_methods_supported
    assert metadata.end_session_endpoint and metadata.backchannel_logout_supported
    cache = MetadataCache(ttl=60)
    with httpx.Client() as http:
        first = cache.get(provider.issuer, http)
        assert cache.get(provider.issuer, http) is first
    with pytest.raises(DiscoveryError, match="HTTP 404"):
        fetch_metadata(provider.issuer + "/other")
    document = httpx.get(discovery_url(provider.issuer)).json()
    with pytest.raises(DiscoveryError, match="names issuer"):
        ProviderMetadata.from_document(document, "http://127.0.0.1:1")
    remote = {**document, "issuer": "http://idp.example", "jwks_uri": "http://idp.example/jwks"}
    with pytest.raises(DiscoveryError, match="https"):
        ProviderMetadata.from_document(remote, "http://idp.example")


def test_pkce_s256_matches_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    pkce = Pkce.create()
    digest = hashlib.sha256(pkce.verifier.encode()).digest()
    assert pkce.challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert pkce.verifier not in repr(pkce)
    assert new_state() != new_state() and len(new_nonce()) >= 43


def test_public_client_without_pkce_is_refused(metadata, relying_party) -> None:
    url = authorization_url(
        metadata,
        client_id=VIEWER.client_id,
        redirect_uri=relying_party.redirect_uri,
        state=new_state(),
        nonce=new_nonce(),
        code_challenge="unused",
    ).replace("code_challenge=unused&code_challenge_method=S256", "")
    with httpx.Client() as browser:
        response = browser.get(url)
    location = response.headers["location"]
    assert location.startswith(relying_party.redirect_uri)
    assert parse_qs(urlsplit(location).query)["error"] == ["invalid_request"]


# The full flow ------------------------------------------------------------------------------


def test_code_flow_gives_a_verified_id_token_with_groups(
    provider: DevProvider, metadata, keys: KeySet, portal_sign_in, settings: OidcSettings
) -> None:
    signed_in, tokens = portal_sign_in
    assert signed_in.callback["iss"] == provider.issuer  # RFC 9207, against mix-up attacks
    claims = verify_id_token(
        tokens.id_token,
        keys,
        issuer=metadata.issuer,
        client_id=PORTAL.client_id,
        nonce=signed_in.nonce,
        leeway=settings.clock_skew_seconds,
    )
    assert claims["sub"] == "referent"
    assert claims["groups"] == [settings.referent_group]
    assert claims["email"] == "referent@hdh.example"
    assert access_for(claims, settings).roles == {DATA_REFERENT}
    assert tokens.access_token not in repr(tokens) and tokens.id_token not in repr(tokens)


def test_userinfo_carries_the_groups(metadata, portal_sign_in, settings) -> None:
    _, tokens = portal_sign_in
    claims = fetch_userinfo(metadata, tokens.access_token)
    assert claims["sub"] == "referent" and claims["groups"] == [settings.referent_group]


def test_a_code_is_used_once(metadata, relying_party, portal_sign_in) -> None:
    signed_in, _ = portal_sign_in
    with pytest.raises(TokenRequestError) as refused:
        exchange(metadata, relying_party, PORTAL, signed_in)
    assert refused.value.error == "invalid_grant"
    assert signed_in.callback["code"] not in str(refused.value)


def test_wrong_pkce_verifier_is_refused(metadata, relying_party, accounts) -> None:
    dpo = accounts["dpo"]
    signed_in = sign_in(metadata, relying_party, VIEWER, dpo.username, dpo.password)
    signed_in.pkce = Pkce.create()
    with pytest.raises(TokenRequestError) as refused:
        exchange(metadata, relying_party, VIEWER, signed_in)
    assert refused.value.error == "invalid_grant"


def test_wrong_client_secret_is_refused(metadata, relying_party, accounts) -> None:
    dpo = accounts["dpo"]
    signed_in = sign_in(metadata, relying_party, PORTAL, dpo.username, dpo.password)
    wrong = OidcClient(PORTAL.client_id, "not-the-secret")
    with pytest.raises(TokenRequestError) as refused:
        exchange(metadata, relying_party, wrong, signed_in)
    assert refused.value.error == "invalid_client"
    assert "not-the-secret" not in str(refused.value)


def test_wrong_password_is_refused_and_opens_no_session(metadata, relying_party, accounts) -> None:
    dpo = accounts["dpo"]
    with httpx.Client(timeout=10) as browser:
        with pytest.raises(LoginRefused) as refused:
            sign_in(metadata, relying_party, PORTAL, dpo.username, "wrong", browser=browser)
        assert "wrong password" in refused.value.page
        assert "DEVELOPMENT identity provider" in refused.value.page
        # No session: the next authorization request asks for the login again.
        with pytest.raises(LoginRefused):
            sign_in(metadata, relying_party, PORTAL, "nobody", dpo.password, browser=browser)


# ID token checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "check"),
    [
        ("tampered", "signature"),
        ("audience", "audience"),
        ("nonce", "nonce"),
        ("expired", "expired"),
        ("issuer", "issuer"),
        ("future", "issued_at"),
        ("garbage", "malformed"),
        ("unsigned", "algorithm"),
    ],
)
def test_id_token_is_refused(
    metadata, keys, portal_sign_in, settings, change: str, check: str
) -> None:
    signed_in, tokens = portal_sign_in
    token = tokens.id_token
    claims = jwt.decode(token, options={"verify_signature": False})
    arguments = {
        "issuer": metadata.issuer,
        "client_id": PORTAL.client_id,
        "nonce": signed_in.nonce,
        "leeway": settings.clock_skew_seconds,
    }
    if change == "tampered":
        token = tamper(token)
    elif change == "audience":
        arguments["client_id"] = VIEWER.client_id
    elif change == "nonce":
        arguments["nonce"] = new_nonce()
    elif change == "expired":
        arguments["now"] = claims["exp"] + settings.clock_skew_seconds + 1
    elif change == "issuer":
        arguments["issuer"] = "https://idp.example"
    elif change == "future":
        arguments["now"] = claims["iat"] - settings.clock_skew_seconds - 1
    elif change == "garbage":
        token = "not.a.jwt"
    elif change == "unsigned":
        token = jwt.encode(claims, key=None, algorithm="none")
    with pytest.raises(TokenVerificationError) as refused:
        verify_id_token(token, keys, **arguments)
    assert refused.value.check == check
    assert tokens.id_token not in str(refused.value)


def test_id_token_is_accepted_within_the_clock_skew(metadata, keys, portal_sign_in, settings):
    signed_in, tokens = portal_sign_in
    exp = jwt.decode(tokens.id_token, options={"verify_signature": False})["exp"]
    claims = verify_id_token(
        tokens.id_token,
        keys,
        issuer=metadata.issuer,
        client_id=PORTAL.client_id,
        nonce=signed_in.nonce,
        leeway=settings.clock_skew_seconds,
        now=exp + settings.clock_skew_seconds - 1,
    )
    assert claims["sub"] == "referent"


def test_a_token_signed_by_another_key_is_refused(metadata, keys, portal_sign_in) -> None:
    """Same kid, another key: what a forger without the provider's key can make."""
    signed_in, tokens = portal_sign_in
    header = jwt.get_unverified_header(tokens.id_token)
    claims = jwt.decode(tokens.id_token, options={"verify_signature": False})
    other = jwt.PyJWK(dev_provider.generate_rsa_jwk())
    forged = jwt.encode(claims, other.key, algorithm="RS256", headers={"kid": header["kid"]})
    with pytest.raises(TokenVerificationError) as refused:
        verify_id_token(
            forged, keys, issuer=metadata.issuer, client_id=PORTAL.client_id, nonce=signed_in.nonce
        )
    assert refused.value.check == "signature"


class StaticKeys(KeySet):
    """One key known in advance, no jwks_uri: for checks the provider's tokens cannot show."""

    def __init__(self, key: object):
        self.key = key

    def key_for(self, token: str) -> object:
        return self.key


def _es256(claims: dict) -> tuple[str, StaticKeys, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return jwt.encode(claims, private, algorithm="ES256"), StaticKeys(public), pem


def test_es256_azp_and_algorithm_confusion() -> None:
    now = int(time.time())
    claims = {"iss": "https://idp.example", "sub": "u", "aud": "c", "iat": now, "exp": now + 60}
    expected = {"issuer": "https://idp.example", "client_id": "c", "nonce": "n"}
    token, keys, pem = _es256({**claims, "nonce": "n"})
    assert verify_id_token(token, keys, **expected)["sub"] == "u"

    several, keys, _ = _es256({**claims, "nonce": "n", "aud": ["c", "other"]})
    with pytest.raises(TokenVerificationError) as refused:
        verify_id_token(several, keys, **expected)
    assert refused.value.check == "azp"
    named, keys, _ = _es256({**claims, "nonce": "n", "aud": ["c", "other"], "azp": "c"})
    assert verify_id_token(named, keys, **expected)["azp"] == "c"

    # HS256 keyed with the public key's PEM, the classic confusion: refused on the algorithm.
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(TokenVerificationError) as refused:
        verify_id_token(f"{signing_input}.{b64(mac)}", keys, **expected)
    assert refused.value.check == "algorithm"


# Access tokens for the DICOMweb service ------------------------------------------------------


def test_access_token_for_dicomweb_is_a_jwt_with_groups(
    metadata, relying_party, keys, accounts, settings: OidcSettings
) -> None:
    member = accounts["claire.martin"]
    audience = settings.dicomweb_audience
    signed_in = sign_in(
        metadata, relying_party, VIEWER, member.username, member.password, resource=audience
    )
    tokens = exchange(metadata, relying_party, VIEWER, signed_in, resource=audience)
    claims = verify_access_token(
        tokens.access_token,
        keys,
        issuer=metadata.issuer,
        audience=audience,
        leeway=settings.clock_skew_seconds,
    )
    assert jwt.get_unverified_header(tokens.access_token)["typ"] == "at+jwt"
    assert claims["sub"] == "claire.martin" and claims["client_id"] == VIEWER.client_id
    assert claims["groups"] == [settings.project_group_for("cardio-imaging")]
    assert access_for(claims, settings).projects == {"cardio-imaging"}
    # The viewer's ID token is no credential for the service, and another service refuses it.
    with pytest.raises(TokenVerificationError) as refused:
        verify_access_token(tokens.id_token, keys, issuer=metadata.issuer, audience=audience)
    assert refused.value.check == "audience"
    with pytest.raises(TokenVerificationError) as refused:
        verify_access_token(
            tokens.access_token, keys, issuer=metadata.issuer, audience="https://other.example"
        )
    assert refused.value.check == "audience"
    with pytest.raises(TokenVerificationError) as refused:
        verify_access_token(
            tamper(tokens.access_token), keys, issuer=metadata.issuer, audience=audience
        )
    assert refused.value.check == "signature"


def test_unknown_resource_is_refused(metadata, relying_party) -> None:
    url = authorization_url(
        metadata,
        client_id=VIEWER.client_id,
        redirect_uri=relying_party.redirect_uri,
        state=new_state(),
        nonce=new_nonce(),
        code_challenge=Pkce.create().challenge,
        resource="https://unknown.example/api",
    )
    with httpx.Client(timeout=10) as browser:
        location = browser.get(url).headers["location"]
    # Refused before any login: the provider issues tokens for its configured resources only.
    assert parse_qs(urlsplit(location).query)["error"] == ["invalid_target"]


# Logout -------------------------------------------------------------------------------------


def test_rp_initiated_logout_sends_a_back_channel_logout_token(
    metadata, relying_party: RelyingParty, keys, accounts, settings
) -> None:
    dpo = accounts["dpo"]
    signed_in = sign_in(metadata, relying_party, PORTAL, dpo.username, dpo.password)
    tokens = exchange(metadata, relying_party, PORTAL, signed_in)
    id_claims = verify_id_token(
        tokens.id_token,
        keys,
        issuer=metadata.issuer,
        client_id=PORTAL.client_id,
        nonce=signed_in.nonce,
    )
    assert access_for(id_claims, settings).roles == {DPO}
    while not relying_party.logout_tokens.empty():
        relying_party.logout_tokens.get_nowait()

    state = new_state()
    url = end_session_url(
        metadata,
        id_token_hint=tokens.id_token,
        post_logout_redirect_uri=relying_party.post_logout_redirect_uri,
        state=state,
    )
    browser = signed_in.browser
    page = browser.get(url)
    assert page.status_code == 200 and "DEVELOPMENT identity provider" in page.text
    action = html.unescape(FORM.search(page.text).group(1))
    form = dict(HIDDEN.findall(page.text))
    done = browser.post(urljoin(str(page.url), action), data={**form, "logout": "yes"})
    location = done.headers["location"]
    assert location.startswith(relying_party.post_logout_redirect_uri)
    assert parse_qs(urlsplit(location).query)["state"] == [state]

    logout_token = relying_party.logout_tokens.get(timeout=5)
    logout = verify_logout_token(
        logout_token, keys, issuer=metadata.issuer, client_id=PORTAL.client_id
    )
    assert logout.sub == "dpo" and logout.sid == id_claims["sid"] and logout.jti
    # A logout token is not an ID token: it has no nonce, and its events claim is required.
    with pytest.raises(TokenVerificationError) as refused:
        verify_id_token(
            logout_token, keys, issuer=metadata.issuer, client_id=PORTAL.client_id, nonce="x"
        )
    assert refused.value.check == "nonce"
    with pytest.raises(TokenVerificationError) as refused:
        verify_logout_token(
            tokens.id_token, keys, issuer=metadata.issuer, client_id=PORTAL.client_id
        )
    assert refused.value.check == "events"
    with pytest.raises(TokenVerificationError) as refused:
        verify_logout_token(logout_token, keys, issuer=metadata.issuer, client_id=VIEWER.client_id)
    assert refused.value.check == "audience"

    # Signed out: the next sign-in asks for the password again.
    with pytest.raises(LoginRefused):
        sign_in(metadata, relying_party, PORTAL, dpo.username, "wrong", browser=browser)


def test_end_session_url_for_a_public_client(metadata, relying_party) -> None:
    url = end_session_url(
        metadata,
        client_id=VIEWER.client_id,
        post_logout_redirect_uri=relying_party.post_logout_redirect_uri,
    )
    with httpx.Client() as browser:
        response = browser.get(url)
    # No session at the provider: it goes straight to the confirmation, which redirects back.
    assert response.status_code == 200 and 'name="xsrf"' in response.text


# The development provider itself ------------------------------------------------------------


def test_dev_config_is_stable_and_keeps_secrets_private(provider_secrets, settings) -> None:
    first = dev_provider.render_config(provider_secrets, port=1, settings=settings)
    again = dev_provider.render_config(provider_secrets, port=1, settings=settings)
    assert first == again
    assert first["development"] is True and first["resources"] == [settings.dicomweb_audience]
    clients = {c["client_id"]: c for c in first["clients"]}
    assert clients["hdh-viewer"]["token_endpoint_auth_method"] == "none"
    assert "client_secret" not in clients["hdh-viewer"]
    assert clients["hdh-portal"]["client_secret"]
    assert clients["hdh-jupyterhub"]["redirect_uris"] == [
        "http://127.0.0.1:8000/hub/oauth_callback"
    ]
    groups = {a["sub"]: a["groups"] for a in first["accounts"]}
    assert groups == {
        "dpo": ["dpo"],
        "referent": ["data-referent"],
        "claire.martin": ["project:cardio-imaging:member"],
    }
    for path in provider_secrets.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
    private = first["jwks"]["keys"][0]
    assert {"d", "p", "q"} <= private.keys()


def test_example_project_member_is_in_the_spec() -> None:
    import yaml

    from auth.dev_provider import EXAMPLE_PROJECT

    root = dev_provider.IDENTITY_DIR.parent
    spec = yaml.safe_load((root / "workspaces/projects" / f"{EXAMPLE_PROJECT}.yaml").read_text())
    assert spec["id"] == EXAMPLE_PROJECT
    assert "claire.martin@chu-exemple.fr" in {m["user"] for m in spec["members"]}


def test_provider_refuses_to_start_without_development_flag(node_ready, tmp_path) -> None:
    import subprocess

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"issuer": "http://127.0.0.1:1", "port": 1}))
    result = subprocess.run(
        ["node", str(dev_provider.PROVIDER_SCRIPT), str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "development" in result.stderr


def test_dev_provider_stops_on_sigterm(node_ready, tmp_path, settings) -> None:
    from tests.auth.conftest import free_port

    running = dev_provider.start(tmp_path / "secrets", port=free_port(), settings=settings)
    assert httpx.get(discovery_url(running.issuer)).status_code == 200
    started = time.monotonic()
    running.stop()
    assert running.process.returncode == 0 and time.monotonic() - started < 5


def test_missing_node_modules_says_how_to_install(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(dev_provider, "IDENTITY_DIR", tmp_path)
    with pytest.raises(dev_provider.DevProviderError, match="make identity-deps"):
        dev_provider.check_installed()
