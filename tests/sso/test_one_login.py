"""Single sign-on across the platform's applications, in a real browser, as ``hdh ui`` runs them:
one sign-in at the development provider opens the rights portal's DPO pages, the Dagster UI
behind the gateway and the viewer, each to whom its roles allow; signing out of one application
signs out of the others.

Three people, each in a fresh browser (no cookie, no storage): the DPO, the data referent and a
member of the example project. Each sees the provider's login form exactly once: every other
application reuses the provider's session (its redirects come back without a form). The provider's
login form is counted per browser: a page of the provider's ``/interaction/<uid>`` answered 200
(a consent interaction, granted without a page for these first-party clients, is a redirect).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import jwt
import pytest

from tests.browser import chromium_browser
from tests.sso.conftest import Platform

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STUDY_ROW = re.compile(r"\b(19|20)\d\d\b")  # a study row holds a date; the filter row does not
SECONDS = 60_000  # Playwright's milliseconds, for what waits on a busy machine


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as launched:
        yield launched


class Person:
    """One person's fresh browser, every response recorded."""

    def __init__(self, browser, site: Platform, username: str):
        self.site = site
        self.username = username
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.responses = []
        self.context.on("response", lambda r: self.responses.append(r))
        self.page = self.context.new_page()
        self.console = []
        self.page.on("console", lambda m: self.console.append(m.text))
        self.started = time.monotonic()

    def login_forms(self) -> int:
        """How many times the provider showed its login form to this browser."""
        return sum(
            1
            for r in self.responses
            if r.url.startswith(self.site.issuer + "/interaction/")
            and r.request.method == "GET"
            and r.status == 200
            and r.request.resource_type == "document"
        )

    def statuses(self, path: str) -> list[int]:
        return [r.status for r in self.responses if urlsplit(r.url).path == path]

    def lap(self, what: str) -> None:
        print(f"  {self.username}: {what} at {time.monotonic() - self.started:.1f} s")

    def sign_in_on_the_form(self) -> None:
        """The provider's login form is shown: fill it in as this person."""
        page = self.page
        page.wait_for_url(lambda url: url.startswith(self.site.issuer + "/interaction/"))
        page.get_by_text("DEVELOPMENT identity provider").wait_for()
        page.locator("input[name=login]").fill(self.username)
        page.locator("input[name=password]").fill(self.site.passwords[self.username])
        page.get_by_role("button", name="Sign in").click()

    def open_dpo_pages(self) -> None:
        """The portal's ``/dpo``: its own sign-in page, whose button goes to the provider."""
        self.page.goto(self.site.portal + "/dpo")
        assert self.page.url == self.site.portal + "/dpo/login"
        self.page.locator("#sign-in").click()

    def expect_dpo_refusal(self) -> None:
        """Back from the provider without a form: a person with no staff role is refused at
        sign-in, the portal's 403 naming the roles it lets in."""
        message = self.page.locator("#message")
        message.wait_for()
        assert message.get_attribute("data-missing-role") == "dpo data-referent"
        assert "neither the DPO role" in message.inner_text()
        assert self.statuses("/dpo/auth/callback")[-1] == 403
        assert self.page.locator("#requests").count() == 0

    def expect_package_reviews_then_dpo_refusal(self) -> None:
        """Back from the provider without a form: a data referent lands on the package
        reviews; the DPO's pages then answer 403 naming the DPO role."""
        self.page.wait_for_url(self.site.portal + "/staff/packages")
        assert self.statuses("/staff/packages")[-1] == 200
        self.page.goto(self.site.portal + "/dpo")
        message = self.page.locator("#message")
        message.wait_for()
        assert message.get_attribute("data-missing-role") == "dpo"
        assert self.statuses("/dpo")[-1] == 403
        assert self.page.locator("#requests").count() == 0

    def open_dagster(self):
        """The Dagster UI through the gateway; the final answer of the navigation."""
        return self.page.goto(self.site.gateway + "/dagster/")

    def open_viewer(self, *, form: bool = False):
        """The viewer's study list; its ``/dicom-web/studies`` answer (after a sign-in on the
        provider's form if ``form``)."""
        with self.page.expect_response(
            lambda r: urlsplit(r.url).path == "/dicom-web/studies", timeout=SECONDS
        ) as listed:
            self.page.goto(self.site.viewer + "/")
            if form:
                self.sign_in_on_the_form()
        return listed.value

    def study_rows(self):
        return self.page.locator("table tbody tr").filter(has_text=STUDY_ROW)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def person(browser, platform: Platform) -> Iterator:
    people = []

    def open_browser(username: str) -> Person:
        people.append(Person(browser, platform, username))
        return people[-1]

    yield open_browser
    for someone in people:
        someone.close()


def listed_studies(answer) -> set[str]:
    return {s["0020000D"]["Value"][0] for s in answer.json()} if answer.status == 200 else set()


def test_the_dpo_signs_in_once_and_is_refused_dagster_and_images(person, platform: Platform):
    dpo = person("dpo")
    dpo.open_dpo_pages()
    dpo.sign_in_on_the_form()
    dpo.page.wait_for_url(platform.portal + "/dpo")
    dpo.page.locator("#requests").wait_for()
    assert dpo.page.locator("#operator").inner_text() == "dpo"
    assert dpo.login_forms() == 1
    dpo.lap("DPO request list")

    # The Dagster UI: the gateway sends the browser to the provider, which comes straight back
    # (its session), and the gateway refuses a DPO: not a data referent nor an operator.
    answer = dpo.open_dagster()
    assert answer.status == 403 and answer.url == platform.gateway + "/dagster/"
    assert "/auth/callback" in {urlsplit(r.url).path for r in dpo.responses}
    assert dpo.statuses("/dagster/graphql") == []  # no UI was served
    assert dpo.login_forms() == 1
    dpo.lap("gateway 403")

    # The viewer: OHIF's own client is signed in without a form; the DICOMweb service refuses
    # the DPO's token (no project, no staff role) and OHIF lists nothing.
    listed = dpo.open_viewer()
    assert listed.status == 403
    assert listed.request.headers["authorization"].startswith("Bearer ")
    dpo.page.get_by_text("No studies available").wait_for(timeout=SECONDS)
    assert dpo.study_rows().count() == 0
    assert dpo.login_forms() == 1
    dpo.lap("viewer, no study")


def test_the_data_referent_signs_in_once_and_sees_dagster_and_every_study(
    person, platform: Platform
):
    referent = person("referent")
    page = referent.page
    with page.expect_response(
        lambda r: r.url.startswith(platform.gateway + "/dagster/graphql") and r.status == 200,
        timeout=SECONDS,
    ) as graphql:
        page.goto(platform.gateway + "/dagster/")
        referent.sign_in_on_the_form()
    assert page.url.startswith(platform.gateway + "/dagster")  # the UI's own routes
    assert graphql.value.request.method == "POST"  # the UI's own API calls pass the gateway
    assert "Dagster" in page.title()
    assert referent.login_forms() == 1
    referent.lap("Dagster UI")

    referent.open_dpo_pages()
    referent.expect_package_reviews_then_dpo_refusal()
    assert referent.login_forms() == 1
    referent.lap("portal: package reviews, DPO pages 403")

    listed = referent.open_viewer()
    assert listed.status == 200
    assert listed_studies(listed) == set(platform.studies)
    total = len(platform.studies)
    page.get_by_text(re.compile(rf"of {total}$")).first.wait_for(timeout=SECONDS)
    assert referent.login_forms() == 1
    referent.lap(f"viewer, {total} studies")


def test_a_project_member_signs_in_at_the_viewer_and_is_refused_elsewhere(
    person, platform: Platform
):
    member = person("claire.martin")
    listed = member.open_viewer(form=True)
    assert listed.status == 200
    assert listed_studies(listed) == set(platform.granted)
    expected = len(platform.granted)
    member.page.get_by_text(f"1-{expected} of {expected}").wait_for(timeout=SECONDS)
    assert member.study_rows().count() == expected
    assert member.login_forms() == 1
    member.lap(f"viewer, {expected} studies of {len(platform.studies)}")

    member.open_dpo_pages()
    member.expect_dpo_refusal()
    assert member.login_forms() == 1
    member.lap("portal 403")

    answer = member.open_dagster()
    assert answer.status == 403 and answer.url == platform.gateway + "/dagster/"
    assert member.login_forms() == 1
    member.lap("gateway 403")


def test_signing_out_of_the_gateway_ends_the_other_sessions(person, platform: Platform):
    """The referent signs out at the gateway's ``/logout``: the provider's session ends, so
    the gateway, the portal and, on reload, the viewer ask for the password again."""
    referent = person("referent")
    page = referent.page
    page.goto(platform.gateway + "/dagster/")
    referent.sign_in_on_the_form()
    page.wait_for_url(lambda url: url.startswith(platform.gateway + "/dagster"))
    listed = referent.open_viewer()
    assert listed.status == 200 and referent.login_forms() == 1
    token = listed.request.headers["authorization"]
    # A reload while signed in: OHIF signs in at the provider again on every page load (a new
    # authorization request, a new token), without a form while the provider's session lasts.
    again = referent.open_viewer()
    assert again.status == 200 and referent.login_forms() == 1
    assert again.request.headers["authorization"] != token
    viewer_authorizations = [
        r
        for r in referent.responses
        if r.url.startswith(platform.issuer + "/auth?") and "client_id=hdh-viewer" in r.url
    ]
    assert len(viewer_authorizations) == 2
    token = again.request.headers["authorization"]
    referent.lap("signed in to Dagster and the viewer")

    page.goto(platform.gateway + "/logout")
    assert page.url.startswith(platform.issuer)
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url(platform.gateway + "/")
    referent.lap("signed out")

    referent.open_dagster()
    page.locator("input[name=password]").wait_for()
    assert page.url.startswith(platform.issuer + "/interaction/")
    assert referent.login_forms() == 2

    referent.open_dpo_pages()
    page.locator("input[name=password]").wait_for()
    assert page.url.startswith(platform.issuer + "/interaction/")
    assert referent.login_forms() == 3
    referent.lap("the gateway and the portal ask again")

    # The viewer: its server holds no session (OHIF's own client keeps the person's tokens
    # in the browser), so no back-channel call reaches it. On reload OHIF sends the browser to
    # the provider, which now shows its login form; no DICOMweb request is made meanwhile.
    listings = len(referent.statuses("/dicom-web/studies"))
    page.goto(platform.viewer + "/")
    page.locator("input[name=password]").wait_for(timeout=SECONDS)
    assert page.url.startswith(platform.issuer + "/interaction/")
    assert referent.login_forms() == 4
    assert len(referent.statuses("/dicom-web/studies")) == listings
    referent.lap("the viewer asks again on reload")

    # But the access token OHIF held is a JWT that signing out does not revoke: whoever kept a
    # copy is still answered by the DICOMweb service until it expires (the provider's 1 h).
    still = httpx.get(
        platform.dicomweb + "/studies",
        headers={"Authorization": token, "Accept": "application/dicom+json"},
        timeout=30,
    )
    assert still.status_code == 200 and len(still.json()) == len(platform.studies)
    claims = jwt.decode(token.removeprefix("Bearer "), options={"verify_signature": False})
    left = claims["exp"] - time.time()
    print(f"  the signed-out token is still accepted for {left / 60:.0f} more minutes")
    assert left > 30 * 60


def test_signing_out_of_the_gateway_ends_the_dpo_portal_session(person, platform: Platform):
    """The DPO, signed in to the portal, signs out at the gateway: the provider's back-channel
    call ends the portal's session, whose pages then ask for a sign-in again."""
    dpo = person("dpo")
    dpo.open_dpo_pages()
    dpo.sign_in_on_the_form()
    dpo.page.wait_for_url(platform.portal + "/dpo")
    assert dpo.open_dagster().status == 403 and dpo.login_forms() == 1

    dpo.page.goto(platform.gateway + "/logout")
    dpo.page.get_by_role("button", name="Yes, sign me out").click()
    dpo.page.wait_for_url(platform.gateway + "/")
    dpo.lap("signed out at the gateway")

    dpo.page.goto(platform.portal + "/dpo")
    assert dpo.page.url == platform.portal + "/dpo/login"  # the portal's session is gone
    assert '"POST /dpo/backchannel-logout HTTP/1.1" 200' in platform.log.read_text()
    dpo.page.locator("#sign-in").click()
    dpo.page.locator("input[name=password]").wait_for()
    assert dpo.page.url.startswith(platform.issuer + "/interaction/")
    assert dpo.login_forms() == 2
    dpo.lap("the portal asks again")


def test_signing_out_of_the_portal_ends_the_gateway_session(person, platform: Platform):
    """The DPO signs out on the portal: the provider's session ends, and its back-channel call
    ends the gateway's session too: the Dagster UI asks for the password again."""
    dpo = person("dpo")
    dpo.open_dpo_pages()
    dpo.sign_in_on_the_form()
    dpo.page.wait_for_url(platform.portal + "/dpo")
    assert dpo.open_dagster().status == 403 and dpo.login_forms() == 1

    dpo.page.goto(platform.portal + "/dpo")
    dpo.page.get_by_role("button", name="Sign out").click()
    try:
        dpo.page.get_by_role("button", name="Yes, sign me out").click(timeout=5_000)
    finally:
        blocked = [m for m in dpo.console if "Content Security Policy" in m]
        print(f"  dpo: after the portal's Sign out: {dpo.page.url}; console: {blocked}")
    dpo.page.wait_for_url(platform.portal + "/dpo/signed-out")
    dpo.open_dagster()
    dpo.page.locator("input[name=password]").wait_for()
    assert dpo.page.url.startswith(platform.issuer + "/interaction/")
    assert dpo.login_forms() == 2
