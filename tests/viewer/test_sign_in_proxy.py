"""The viewer in sign-in mode without a browser: OHIF's OpenID Connect settings in app-config.js,
the proxy passing the person's bearer token on (and nothing else, never one of its own), STOW
bodies still cleaned, and the silent renew page the code flow needs."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pydicom
import pytest
from starlette.testclient import TestClient

from auth.dev_provider import render_config
from auth.settings import OidcSettings
from tests.viewer.test_config import evaluate
from tests.viewer.test_saving import _saved_by_a_viewer
from tests.viewer.test_server import BOUNDARY, STOW_TYPE, UPSTREAM, forwarded_parts
from viewer.config import SILENT_RENEW_PATH, SignIn, oidc_config, render_app_config
from viewer.server import TokenSource, create_app, sign_in_settings

SIGN_IN = SignIn(
    issuer="https://sso.example/realms/hdh",
    client_id="hdh-viewer",
    audience="https://imaging.example/dicom-web",
)


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    root = tmp_path / "dist"
    root.mkdir()
    (root / "index.html").write_text("<html>the viewer</html>")
    (root / "silent-refresh.html").write_text("<script src='https://cdn.example/legacy.js'>")
    return root


@pytest.fixture
def seen() -> list[httpx.Request]:
    return []


@pytest.fixture
def client(dist: Path, seen: list[httpx.Request]):
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, stream=httpx.ByteStream(b"[]"), headers={"content-type": "application/dicom+json"}
        )

    app = create_app(
        UPSTREAM, None, dist=dist, transport=httpx.MockTransport(answer), sign_in=SIGN_IN
    )
    with TestClient(app, base_url="http://viewer.test:3003") as test_client:
        yield test_client


def test_ohif_gets_a_code_flow_client_asking_for_the_dicomweb_resource():
    config = evaluate(render_app_config("/dicom-web", "Imaging", sign_in=SIGN_IN))["config"]
    (oidc,) = config["oidc"]
    assert oidc["authority"] == SIGN_IN.issuer and oidc["client_id"] == "hdh-viewer"
    # "code": OHIF's oidc-client-ts client (PKCE); the paths are OHIF's routes on its origin.
    assert oidc["response_type"] == "code"
    assert oidc["redirect_uri"] == "/callback"
    assert oidc["silent_redirect_uri"] == "/silent-refresh.html"
    assert oidc["scope"] == "openid profile email groups"
    # The resource at both endpoints: the access token is a JWT for the service, and the
    # profile comes from the ID token (that token opens no userinfo endpoint).
    assert oidc["resource"] == SIGN_IN.audience
    assert oidc["extraTokenParams"] == {"resource": SIGN_IN.audience}
    assert oidc["loadUserInfo"] is False
    assert oidc["revokeAccessTokenOnSignout"] is False
    # Nothing in the page holds a secret; without a sign-in there is no oidc section at all.
    assert "client_secret" not in oidc
    assert "oidc" not in evaluate(render_app_config("/dicom-web", "Imaging"))["config"]


def test_the_persons_bearer_token_is_passed_on_and_no_other(client, seen):
    response = client.get(
        "/dicom-web/studies?limit=25",
        headers={"Authorization": "Bearer eyJ.person.token", "Cookie": "session=1"},
    )
    assert response.status_code == 200
    (request,) = seen
    assert str(request.url) == f"{UPSTREAM}/studies?limit=25"
    assert request.headers["authorization"] == "Bearer eyJ.person.token"
    assert "cookie" not in request.headers
    assert request.headers["host"] == "viewer.test:3003"


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("Authorization", "Basic dXNlcjpwYXNz")],
        [("Authorization", "Bearer")],
        [("Authorization", "Bearer two words")],
        [("Authorization", "Bearer a.b.c"), ("Authorization", "Bearer d.e.f")],
    ],
)
def test_without_one_bearer_token_the_answer_is_401_and_nothing_is_forwarded(client, seen, headers):
    response = client.get("/dicom-web/studies", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert seen == []


def test_stow_bodies_are_cleaned_and_sent_with_the_persons_token(client, seen):
    saved = _saved_by_a_viewer("CT_small.dcm")
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + saved
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    headers = {"Content-Type": STOW_TYPE, "Authorization": "Bearer eyJ.person.token"}
    assert client.post("/dicom-web/studies", content=body, headers=headers).status_code == 200
    (request,) = seen
    assert request.headers["authorization"] == "Bearer eyJ.person.token"
    (part,) = forwarded_parts(request)
    stored = pydicom.dcmread(io.BytesIO(part))
    assert "SeriesDescription" not in stored and stored.PatientIdentityRemoved == "YES"
    # Without a token a STOW is refused before its body is read or forwarded.
    headers.pop("Authorization")
    assert client.post("/dicom-web/studies", content=body, headers=headers).status_code == 401
    assert len(seen) == 1


def test_the_silent_renew_page_hands_the_answer_to_the_viewer_window(client):
    response = client.get("/silent-refresh.html")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert 'source: "oidc-client"' in response.text  # what oidc-client-ts listens for
    assert "window.location.origin" in response.text  # posted to the viewer's origin only
    assert "<script src" not in response.text
    assert response.headers["content-security-policy"] == "frame-ancestors 'self'"
    assert client.get("/app-config.js").text.count('"authority"') == 1


def test_a_server_holds_a_token_source_or_signs_people_in_never_both(dist):
    with pytest.raises(ValueError):
        create_app(UPSTREAM, None, dist=dist)
    with pytest.raises(ValueError):
        create_app(UPSTREAM, TokenSource(lambda *_: "t", None), dist=dist, sign_in=SIGN_IN)


def test_sign_in_settings_come_from_the_deployment_else_the_development_provider(monkeypatch):
    for name in ("HDH_OIDC_ISSUER", "HDH_OIDC_VIEWER_CLIENT_ID", "HDH_OIDC_DICOMWEB_AUDIENCE"):
        monkeypatch.delenv(name, raising=False)
    assert sign_in_settings() == SignIn(
        "http://127.0.0.1:3010", "hdh-viewer", "http://127.0.0.1:3002/dicom-web"
    )
    monkeypatch.setenv("HDH_OIDC_ISSUER", SIGN_IN.issuer)
    monkeypatch.setenv("HDH_OIDC_DICOMWEB_AUDIENCE", SIGN_IN.audience)
    assert sign_in_settings() == SIGN_IN
    assert sign_in_settings(client_id="other").client_id == "other"


def test_the_development_provider_registers_the_routes_ohif_comes_back_to(tmp_path):
    config = render_config(tmp_path / "secrets", settings=OidcSettings())
    (viewer,) = [c for c in config["clients"] if c["client_id"] == "hdh-viewer"]
    (oidc,) = oidc_config(SIGN_IN)
    base = "http://127.0.0.1:3003"  # where `make ui` serves the viewer
    assert viewer["redirect_uris"] == [base + oidc["redirect_uri"], base + SILENT_RENEW_PATH]
    assert viewer["post_logout_redirect_uris"] == [base + oidc["post_logout_redirect_uri"]]
    assert viewer["token_endpoint_auth_method"] == "none"  # public: PKCE
    assert config["resources"] == [OidcSettings().dicomweb_audience]
    # The other applications keep their callback.
    (portal,) = [c for c in config["clients"] if c["client_id"] == "hdh-portal"]
    assert portal["redirect_uris"] == ["http://127.0.0.1:3001/dpo/auth/callback"]
    assert portal["backchannel_logout_uri"] == "http://127.0.0.1:3001/dpo/backchannel-logout"
