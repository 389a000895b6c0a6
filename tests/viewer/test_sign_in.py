"""OHIF signing people in with the development provider: its own OpenID Connect client gets the
person's access token for the DICOMweb resource, the viewer's proxy passes it on, and the
DICOMweb service (configured with the provider's tokens) shows what the person may see. The
browser talks to the viewer and the provider only; no token is held by the viewer's server."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import polars as pl
import pytest

from auth import dev_provider
from auth.dev_provider import DevClient, DevProvider, DevProviderError
from auth.settings import OidcSettings
from dicomweb.app import create_app as create_dicomweb
from dicomweb.provider_tokens import ProviderTokens
from dicomweb.tokens import Tokens
from tests.browser import chromium_browser
from tests.dicomweb.servers import free_port, start_service
from tests.dicomweb.test_access import grant
from tests.viewer.conftest import TOKEN_KEY
from tests.viewer.test_browser import dismiss, grey, instances, viewport_shot
from viewer.config import SignIn
from viewer.server import DIST, create_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]
MEMBER_PROJECT = "cardio-imaging"  # claire.martin's project at the development provider
RENDER_SECONDS = 60
RENEWING_CLIENT = "hdh-viewer-renewing"
# oidc-client-ts renews this long before the token expires: 5 s after it was issued (1 h).
RENEW_BEFORE_EXPIRY = {"accessTokenExpiringNotificationTimeInSeconds": 3600 - 5}
STUDY_ROW = r"\b(19|20)\d\d\b"  # a study row holds a date; the filter row does not


@dataclass
class SignInSite:
    viewer: str
    renewing: str  # a viewer renewing its token a few seconds after each sign-in
    issuer: str
    dicomweb: str
    passwords: dict[str, str]
    # The studies the member's project may see and their instance counts, as the service
    # lists them to the project's platform token (the STOW test may have added a SEG).
    granted: dict[str, int]


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def project_studies(dicomweb: str, project: str) -> dict[str, int]:
    """What the service lists to the project's own platform token: the reference."""
    token = Tokens(TOKEN_KEY).issue(project, 600)
    answer = httpx.get(
        f"{dicomweb}/studies",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"},
    )
    answer.raise_for_status()
    return {s["0020000D"]["Value"][0]: s["00201208"]["Value"][0] for s in answer.json()}


@pytest.fixture(scope="module")
def site(viewer_store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignInSite]:
    """The provider with the viewer's client registered at this test's address, the service
    accepting its tokens, and the viewer in sign-in mode; the member's project granted the
    rendered study and one more."""
    if not (DIST / "index.html").is_file():
        pytest.fail(f"the OHIF viewer is not installed ({DIST}): run `make viewer-deps`")
    try:
        dev_provider.check_installed()
    except DevProviderError as error:
        pytest.skip(str(error))
    studies = viewer_store.index.select("study_instance_uid", "subject_pseudonym").unique()
    other = sorted(set(studies["study_instance_uid"]) - set(viewer_store.granted))[0]
    chosen = studies.filter(pl.col("study_instance_uid").is_in([viewer_store.study, other]))
    grant(
        viewer_store.home, MEMBER_PROJECT, "imaging_clinical_linkage", chosen, "subject_pseudonym"
    )

    settings = OidcSettings()  # the documented defaults, whatever the environment says
    secrets = tmp_path_factory.mktemp("viewer-oidc") / "secrets"
    viewer_port, renewing_port = free_port(), free_port()
    viewer_url = f"http://127.0.0.1:{viewer_port}"
    renewing_url = f"http://127.0.0.1:{renewing_port}"
    renewing_client = DevClient(
        RENEWING_CLIENT,
        redirect_uris=(renewing_url + "/callback", renewing_url + "/silent-refresh.html"),
        post_logout_redirect_uris=(renewing_url + "/",),
        name="HDH viewer (renewing)",
    )
    provider: DevProvider = dev_provider.start(
        secrets,
        port=free_port(),
        settings=settings,
        app_urls={"viewer": viewer_url},
        extra_clients=[renewing_client],
    )
    try:
        service_settings = dataclasses.replace(settings, issuer=provider.issuer)
        dicomweb = start_service(
            create_dicomweb(
                viewer_store.home, Tokens(TOKEN_KEY), provider=ProviderTokens(service_settings)
            )
        )
        sign_in = SignIn(
            provider.issuer, settings.client("viewer").client_id, settings.dicomweb_audience
        )
        viewer = start_service(
            create_app(dicomweb.dicomweb, None, "Imaging (signed in)", sign_in=sign_in),
            viewer_port,
        )
        renewing_sign_in = dataclasses.replace(
            sign_in, client_id=RENEWING_CLIENT, extra=RENEW_BEFORE_EXPIRY
        )
        renewing = start_service(
            create_app(dicomweb.dicomweb, None, "Imaging (renewing)", sign_in=renewing_sign_in),
            renewing_port,
        )
        passwords = {a.username: a.password for a in dev_provider.demo_accounts(secrets, settings)}
        granted = project_studies(dicomweb.dicomweb, MEMBER_PROJECT)
        assert {viewer_store.study, other} <= set(granted)
        yield SignInSite(
            viewer_url, renewing_url, provider.issuer, dicomweb.dicomweb, passwords, granted
        )
        for server in (viewer, renewing):
            server.stop()
        dicomweb.stop()
    finally:
        provider.stop()


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as launched:
        yield launched


@pytest.fixture
def context(browser):
    """A fresh browser (no session at the provider, no token in storage), requests recorded."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.requests_seen = []
    context.on("request", lambda r: context.requests_seen.append(r))
    yield context
    context.close()


def sign_in_at_provider(page, site: SignInSite, username: str, viewer: str = "") -> None:
    """Open the viewer; it sends the browser to the provider's login form; sign in there."""
    page.goto((viewer or site.viewer) + "/")
    page.wait_for_url(lambda url: url.startswith(site.issuer + "/interaction/"), timeout=30_000)
    page.get_by_text("DEVELOPMENT identity provider").wait_for()
    page.locator("input[name=login]").fill(username)
    page.locator("input[name=password]").fill(site.passwords[username])
    page.get_by_role("button", name="Sign in").click()


def check_tokens_stayed_home(context, site: SignInSite, viewer: str = "") -> None:
    """Every request went to the viewer or the provider; a bearer token only to the viewer."""
    viewer = viewer or site.viewer
    seen = context.requests_seen
    assert {origin(r.url) for r in seen} <= {viewer, site.issuer}
    carrying = [r for r in seen if "authorization" in r.headers]
    assert carrying, "the viewer sent no token at all"
    assert all(origin(r.url) == viewer for r in carrying)
    assert all(r.headers["authorization"].startswith("Bearer ") for r in carrying)
    assert all(urlsplit(r.url).path.startswith("/dicom-web") for r in carrying)
    # OHIF asked for no data before it held a token, and no token travelled in a URL.
    data = [r for r in seen if origin(r.url) == viewer and r.url.startswith(viewer + "/dicom-web")]
    assert data and all("authorization" in r.headers for r in data)
    assert not any("access_token" in r.url for r in seen)


def test_a_project_member_signs_in_and_sees_the_projects_studies(
    context, site: SignInSite, viewer_store, tmp_path: Path
):
    started = time.monotonic()
    page = context.new_page()
    with page.expect_response(
        lambda r: urlsplit(r.url).path == "/dicom-web/studies", timeout=60_000
    ) as listed:
        sign_in_at_provider(page, site, "claire.martin")
    assert listed.value.status == 200
    assert {s["0020000D"]["Value"][0] for s in listed.value.json()} == set(site.granted)
    expected = len(site.granted)
    assert 0 < expected < viewer_store.index["study_instance_uid"].n_unique()
    page.get_by_text(f"1-{expected} of {expected}").wait_for(timeout=60_000)
    rows = page.locator("table tbody tr").filter(has_text=re.compile(STUDY_ROW))
    print(f"signed in, study list shown after {time.monotonic() - started:.1f} s")
    assert rows.count() == expected
    shown = sorted(instances(rows.nth(i).locator("td").all_inner_texts()) for i in range(expected))
    page.screenshot(path=tmp_path / "study-list.png")
    assert shown == sorted(site.granted.values())

    page.goto(f"{site.viewer}/viewer?StudyInstanceUIDs={viewer_store.study}")
    page.locator("[data-cy=viewport-pane] canvas").first.wait_for(timeout=60_000)
    deadline = time.monotonic() + RENDER_SECONDS
    pixels = None
    while time.monotonic() < deadline:
        dismiss(page)
        pixels = grey(viewport_shot(page))
        if pixels.std() > 5 and len(set(pixels.astype(int).ravel().tolist())) > 20:
            break
        time.sleep(1)
    page.screenshot(path=tmp_path / "viewer.png")
    print(f"rendered after {time.monotonic() - started:.1f} s; screenshots in {tmp_path}")
    assert pixels is not None and pixels.std() > 5, f"blank viewport ({tmp_path / 'viewer.png'})"
    check_tokens_stayed_home(context, site)


def test_someone_without_a_project_signs_in_and_sees_nothing(
    context, site: SignInSite, tmp_path: Path
):
    """The DPO holds no project and no staff role for images: the service answers 403."""
    page = context.new_page()
    with page.expect_response(
        lambda r: urlsplit(r.url).path == "/dicom-web/studies", timeout=60_000
    ) as listed:
        sign_in_at_provider(page, site, "dpo")
    assert listed.value.status == 403
    assert listed.value.request.headers["authorization"].startswith("Bearer ")
    page.get_by_text("No studies available").wait_for(timeout=30_000)
    page.screenshot(path=tmp_path / "refused.png")
    rows = page.locator("table tbody tr").filter(has_text=re.compile(STUDY_ROW))
    assert rows.count() == 0
    check_tokens_stayed_home(context, site)


def test_the_token_is_renewed_in_a_hidden_frame_and_used(context, site: SignInSite):
    """oidc-client-ts renews the token before it expires through ``/silent-refresh.html`` (the
    provider's session, no form): the viewer goes on with the new token."""
    viewer = site.renewing
    page = context.new_page()
    exchanges = []  # the token endpoint's answers: the sign-in, then each renewal
    context.on(
        "response",
        lambda r: exchanges.append(r) if r.url == f"{site.issuer}/token" else None,
    )
    sign_in_at_provider(page, site, "claire.martin", viewer)
    page.get_by_text(f"1-{len(site.granted)} of {len(site.granted)}").wait_for(timeout=60_000)
    deadline = time.monotonic() + 30
    while len(exchanges) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert len(exchanges) >= 2, "no renewal within 30 s"
    assert all(r.status == 200 for r in exchanges)
    # The signed-in token, as the viewer first sent it (the callback page's answer is gone).
    first = next(
        r.headers["authorization"].removeprefix("Bearer ")
        for r in context.requests_seen
        if urlsplit(r.url).path.startswith("/dicom-web") and "authorization" in r.headers
    )
    renewed = [r.json()["access_token"] for r in exchanges[1:]]  # read before a navigation
    assert first not in renewed
    silent = [
        r
        for r in context.requests_seen
        if r.url.startswith(f"{site.issuer}/auth?") and "prompt=none" in r.url
    ]
    assert silent and all(r.frame != page.main_frame for r in silent)  # a hidden frame
    with page.expect_response(
        lambda r: urlsplit(r.url).path == "/dicom-web/studies", timeout=60_000
    ) as listed:
        page.reload()
    assert listed.value.status == 200
    sent = listed.value.request.headers["authorization"].removeprefix("Bearer ")
    assert sent != first  # a renewed token (maybe renewed again since), and accepted
    check_tokens_stayed_home(context, site, viewer)
