"""The data referents' package reviews in the portal's staff area: the requests, one request's
closure with every check's evidence, decisions with a reason and a CSRF token recorded in the
hash-chained decision log, and roles keeping each staff area to its people.

Most tests open a session directly in the sessions table (the provider is named but never
contacted: pages only read the session); the last one signs in through the real development
provider, nothing mocked, as ``test_dpo_oidc.py`` does for the DPO.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from auth.roles import DATA_REFERENT, DPO
from auth.settings import OidcSettings
from package_manager import service
from package_manager.approval import request_status, verdict
from package_manager.model import CheckResult, Closure, ResolvedPackage
from package_manager.requests import file_request, make_request
from package_manager.store import RequestVetting
from portal.app import create_app
from portal.dpo import SESSION_COOKIE, STAFF_SESSION_COOKIE
from portal.dpo_auth import DpoAuth
from portal.dpo_sessions import BREAK_GLASS, OIDC, SessionStore
from resources.home import HdhHome
from resources.rights_registry import RightsRegistry
from tests.oidc_fixtures import (
    follow,
    free_port,
    portal_with_provider,
    require_node,
    to_portal_callback,
)

PROJECT = "cardio-imaging"
ASKED_BY = "claire.martin"
ASKED_WHY = "segmentation of the ventricles"
PASSWORD = "correct horse battery"
SHA_REVIEW = "a1" * 32
SHA_CLEAN = "b2" * 32


def _package(name: str, sha256: str, *, requested: bool = False, **kw) -> ResolvedPackage:
    return ResolvedPackage(
        ecosystem="pypi",
        name=name,
        version=kw.pop("version", "1.0"),
        filename=f"{name}-1.0-py3-none-any.whl",
        url=f"http://upstream.example/files/{name}-1.0-py3-none-any.whl",
        sha256=sha256,
        license=kw.pop("license", "MIT"),
        requested=requested,
        **kw,
    )


def _passed(check: str, **evidence) -> CheckResult:
    return CheckResult(check, "passed", (f"{check} passed",), evidence)


def _needs_review_checks(name: str, sha256: str) -> list[CheckResult]:
    """Every check, with the evidence each kind of check gives; three ask for a review."""
    return [
        CheckResult(
            "licence",
            "needs_review",
            ("LicenseRef-Custom needs a referent's review under the policy",),
            {"declared": "Custom licence", "spdx": "LicenseRef-Custom", "notes": []},
        ),
        CheckResult(
            "vulnerabilities",
            "needs_review",
            ("known vulnerabilities GHSA-2026-abcd; fixed in 1.1",),
            {
                "database": "osv-export:1234",
                "vulnerabilities": [
                    {
                        "id": "GHSA-2026-abcd",
                        "aliases": ["CVE-2026-0042"],
                        "summary": "Path traversal in the loader",
                        "fixed_in": ["1.1"],
                        "severity": "medium",
                    }
                ],
            },
        ),
        CheckResult(
            "malicious_code",
            "needs_review",
            ("guarddog: exec-base64 in setup.py",),
            {"findings": [{"rule": "exec-base64", "location": "setup.py:12"}]},
        ),
        CheckResult(
            "typosquatting",
            "passed",
            ("no popular or approved package has a similar name",),
            {"name": name, "similar": [{"name": "numpy", "why": "distance 1", "list": "popular"}]},
        ),
        _passed(
            "provenance",
            sha256=sha256,
            first_sha256=sha256,
            first_seen_at="2026-12-01T09:00:00Z",
        ),
    ]


def _clean_checks(sha256: str) -> list[CheckResult]:
    return [
        _passed("licence", spdx="MIT"),
        _passed("vulnerabilities", vulnerabilities=[]),
        _passed("malicious_code", findings=[]),
        _passed("typosquatting"),
        _passed("provenance", sha256=sha256, first_sha256=sha256),
    ]


def add_request(
    home: HdhHome,
    name: str,
    members: list[tuple[ResolvedPackage, list[CheckResult]]] | None,
    *,
    reason: str = ASKED_WHY,
    when: str = "2026-12-01T10:00:00Z",
) -> str:
    """A filed request, and (unless ``members`` is None) its closure and vetting."""
    store = service.package_store(home)
    request = make_request(
        PROJECT,
        f"{name}==1.0",
        ecosystem="pypi",
        reason=reason,
        requested_by=ASKED_BY,
        requested_at=when,
    )
    file_request(request, store.filed_requests)
    if members is None:
        return request.request_id
    closure = Closure(
        request.request_id,
        "pypi",
        tuple(p for p, _ in members),
        "uv 0.13.9",
        "CPython 3.11 manylinux_2_28_x86_64",
        "http://upstream.example/simple",
    )
    store.save_closure(closure)
    latest = store.decisions.latest()
    verdicts = tuple(verdict(p, checks, latest) for p, checks in members)
    status = request_status(closure, verdicts)
    store.save_vetting(RequestVetting(request.request_id, status, verdicts, None, "db:1", when))
    return request.request_id


def review_request(home: HdhHome, name: str = "numpi", **kw) -> str:
    """A request whose asked-for package waits for a review, its dependency passing."""
    members = [
        (_package(name, SHA_REVIEW, requested=True), _needs_review_checks(name, SHA_REVIEW)),
        (_package("six", SHA_CLEAN), _clean_checks(SHA_CLEAN)),
    ]
    return add_request(home, name, members, **kw)


@dataclass
class Staff:
    client: TestClient
    registry: RightsRegistry
    home: HdhHome

    def sign_in(self, *roles: str, username: str = "referent", method: str = OIDC) -> None:
        """Open a session as the callback would, and give its cookies to the browser (both
        areas', even for break-glass: the pages must refuse it, not only the cookie's path)."""
        stamp = self.registry.operator_stamp(username) if method == BREAK_GLASS else None
        token = SessionStore(self.registry.engine).create(
            method=method, subject=username, username=username, roles=roles, stamp=stamp
        )
        self.client.cookies.set(SESSION_COOKIE, token, path="/dpo")
        self.client.cookies.set(STAFF_SESSION_COOKIE, token, path="/staff")

    def csrf(self, path: str) -> str:
        page = self.client.get(path)
        return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)

    def decide(self, request_id: str, *, token: str | None = "fresh", **fields) -> httpx.Response:
        page = f"/staff/packages/{request_id}"
        data = {"name": "numpi", "version": "1.0", "sha256": SHA_REVIEW, **fields}
        if token is not None:
            data["csrf_token"] = self.csrf(page) if token == "fresh" else token
        return self.client.post(f"{page}/decide", data=data, follow_redirects=False)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HdhHome:
    """A package manager's home, and an empty specs folder: only the requests filed here."""
    specs = tmp_path / "specs"
    specs.mkdir()
    monkeypatch.setenv("HDH_WORKSPACE_SPECS", str(specs))
    return HdhHome(tmp_path / "hdh")


@pytest.fixture
def staff(tmp_path: Path, home: HdhHome) -> Staff:
    registry = RightsRegistry(f"sqlite:///{tmp_path / 'registry.db'}", b"s" * 32)
    registry.add_operator("alice", PASSWORD, "test")
    named = OidcSettings(issuer=f"http://127.0.0.1:{free_port()}")  # never contacted here
    app = create_app(
        registry,
        lambda nir: "pseudo",
        b"portal secret " * 3,
        auth=DpoAuth.with_provider(named, break_glass=True),
        packages_home=home,
    )
    return Staff(TestClient(app, raise_server_exceptions=False), registry, home)


def test_the_requests_are_listed_the_ones_waiting_for_a_review_first(staff: Staff) -> None:
    approved = add_request(
        staff.home,
        "six",
        [(_package("six", SHA_CLEAN, requested=True), _clean_checks(SHA_CLEAN))],
        when="2026-11-01T10:00:00Z",
    )
    waiting = review_request(staff.home)
    pending = add_request(staff.home, "pandas", None)
    staff.sign_in(DATA_REFERENT)
    page = staff.client.get("/staff/packages")
    assert page.status_code == 200
    sections = [page.text.index(f'id="group-{s}"') for s in ("needs_review", "pending", "approved")]
    assert sections == sorted(sections)
    for request_id in (approved, waiting, pending):
        assert f'data-id="{request_id}"' in page.text
    row = page.text[page.text.index(f'data-id="{waiting}"') :]
    row = row[: row.index("</tr>")]
    assert PROJECT in row and ASKED_BY in row and ASKED_WHY in row and "1.0" in row
    assert 'data-count="needs_review">1 needs review' in row
    assert 'data-count="approved">1 approved' in row
    assert 'id="packages-link"' in page.text and 'id="dpo-link"' not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


def test_a_request_shows_every_member_with_each_check_and_its_evidence(staff: Staff) -> None:
    request_id = review_request(staff.home)
    staff.sign_in(DATA_REFERENT)
    page = staff.client.get(f"/staff/packages/{request_id}")
    assert page.status_code == 200
    text = page.text
    assert 'data-name="numpi"' in text and 'data-name="six"' in text
    assert text.index('data-name="numpi"') < text.index('data-name="six"')  # waiting first
    for evidence in (
        "LicenseRef-Custom",  # the licence expression
        "GHSA-2026-abcd",  # the advisory, its alias and fix
        "CVE-2026-0042",
        "exec-base64",  # guarddog's finding
        "setup.py:12",
        "distance 1",  # the similar name
        SHA_REVIEW,  # the file's hash
        "2026-12-01T09:00:00Z",  # first seen
        "uv 0.13.9",
    ):
        assert evidence in text, evidence
    assert text.count('data-check="') == 10  # five checks for each of the two members
    assert text.count('class="decide"') == 1  # only the member waiting for a review
    assert f'action="/staff/packages/{request_id}/decide"' in text
    assert "No decision yet." in text and 'id="recorded-decisions"' not in text


def test_a_referent_approves_with_a_reason_and_the_log_names_them(
    staff: Staff, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    request_id = review_request(staff.home)
    staff.sign_in(DATA_REFERENT)
    answer = staff.decide(request_id, decision="approve", reason="reviewed the setup.py call")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/staff/packages/{request_id}"
    log = service.package_store(staff.home).decisions
    (entry,) = log.entries()
    assert (entry.name, entry.version, entry.sha256) == ("numpi", "1.0", SHA_REVIEW)
    assert entry.decision == "approve" and entry.decided_by == "referent:referent"
    assert entry.reason == "reviewed the setup.py call"
    assert log.verify_chain() == []
    assert service.requests_touched_by(staff.home, [entry]) == {request_id}
    page = staff.client.get(answer.headers["location"])
    assert 'id="recorded-decisions"' in page.text and "vets the requests they touch" in page.text
    assert "Decision recorded, applied at the next vetting" in page.text
    audit = page.text[page.text.index('id="audit"') :]
    assert "referent:referent" in audit and "reviewed the setup.py call" in audit
    assert 'id="chain-broken"' not in page.text
    # Vetted again (as the sensor does, the decisions in force applied): approved, in force.
    review_request(staff.home)
    page = staff.client.get(f"/staff/packages/{request_id}")
    assert 'id="status" data-status="approved"' in page.text
    assert 'id="recorded-decisions"' not in page.text and "Decision in force" in page.text
    # Nothing of who asked, why, or the referent's reason reaches a log line.
    assert ASKED_BY not in caplog.text and ASKED_WHY not in caplog.text
    assert "setup.py call" not in caplog.text and "referent:referent" not in caplog.text


def test_a_decision_without_a_reason_is_refused_with_a_message(staff: Staff) -> None:
    request_id = review_request(staff.home)
    staff.sign_in(DATA_REFERENT)
    for reason in ("", "   "):
        answer = staff.decide(request_id, decision="refuse", reason=reason)
        assert answer.status_code == 422 and "A decision needs a reason" in answer.text
    odd = staff.decide(request_id, decision="maybe", reason="why not")
    assert odd.status_code == 400 and "approve or to refuse" in odd.text
    assert service.package_store(staff.home).decisions.entries() == []


def test_a_forged_or_missing_csrf_token_changes_nothing(staff: Staff) -> None:
    request_id = review_request(staff.home)
    staff.sign_in(DATA_REFERENT)
    missing = staff.decide(request_id, token=None, decision="approve", reason="forged")
    assert missing.status_code == 403 and "The form expired" in missing.text
    forged = staff.decide(request_id, token="abc.1.def", decision="approve", reason="forged")
    assert forged.status_code == 403
    token = staff.csrf(f"/staff/packages/{request_id}")
    staff.sign_in(DATA_REFERENT)  # another session: the token of the first is worth nothing
    stolen = staff.decide(request_id, token=token, decision="approve", reason="forged")
    assert stolen.status_code == 403
    assert service.package_store(staff.home).decisions.entries() == []


def test_only_members_left_for_review_are_decided_and_only_the_file_shown(staff: Staff) -> None:
    request_id = review_request(staff.home)
    staff.sign_in(DATA_REFERENT)
    clean = staff.decide(
        request_id, name="six", sha256=SHA_CLEAN, decision="refuse", reason="not needed"
    )
    assert clean.status_code == 409 and "left for review" in clean.text
    other_file = staff.decide(request_id, sha256="c3" * 32, decision="approve", reason="ok")
    assert other_file.status_code == 409 and "nothing was recorded" in other_file.text
    assert 'value="ok"' not in other_file.text and ">ok</textarea>" not in other_file.text
    assert service.package_store(staff.home).decisions.entries() == []
    unknown = staff.client.get("/staff/packages/no-such-request")
    assert unknown.status_code == 404 and "No such package request" in unknown.text


def test_each_staff_area_needs_its_role(staff: Staff) -> None:
    request_id = review_request(staff.home)
    anonymous = staff.client.get("/staff/packages", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/dpo/login"
    # The DPO alone: the package reviews are closed, decisions too.
    staff.sign_in(DPO, username="dpo")
    for path in ("/staff/packages", f"/staff/packages/{request_id}"):
        page = staff.client.get(path)
        assert page.status_code == 403
        assert 'data-missing-role="data-referent"' in page.text
        assert "data referent role" in page.text and 'id="home" href="/dpo"' in page.text
    assert staff.decide(request_id, decision="approve", reason="dpo").status_code == 403
    assert staff.client.get("/dpo").status_code == 200
    # A referent alone: the DPO's pages are closed.
    staff.sign_in(DATA_REFERENT)
    dpo_page = staff.client.get("/dpo")
    assert dpo_page.status_code == 403 and 'data-missing-role="dpo"' in dpo_page.text
    assert "DPO role" in dpo_page.text and 'id="home" href="/staff/packages"' in dpo_page.text
    # Both roles: both areas, linked to each other.
    staff.sign_in(DPO, DATA_REFERENT, username="both")
    for path in ("/dpo", "/staff/packages"):
        page = staff.client.get(path)
        assert page.status_code == 200
        assert 'id="dpo-link"' in page.text and 'id="packages-link"' in page.text
    # Break-glass accounts are the DPO's only, whatever a session row says.
    staff.sign_in(DPO, DATA_REFERENT, username="alice", method=BREAK_GLASS)
    assert staff.client.get("/dpo").status_code == 200
    assert staff.client.get("/staff/packages").status_code == 403
    assert service.package_store(staff.home).decisions.entries() == []


def test_markup_in_a_package_name_or_a_reason_is_shown_as_text(staff: Staff) -> None:
    markup = "<script>alert(1)</script>"
    members = [
        (_package("numpi", SHA_REVIEW, requested=True), _needs_review_checks("numpi", SHA_REVIEW)),
        (
            _package(f"evil{markup}", SHA_CLEAN, license='MIT"><img src=x onerror=alert(2)>'),
            _clean_checks(SHA_CLEAN),
        ),
    ]
    request_id = add_request(staff.home, "numpi", members, reason=f"for {markup}")
    staff.sign_in(DATA_REFERENT)
    assert staff.decide(request_id, decision="refuse", reason=f"no {markup}").status_code == 303
    for path in ("/staff/packages", f"/staff/packages/{request_id}"):
        page = staff.client.get(path)
        assert page.status_code == 200
        assert markup not in page.text and "<img" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert page.text.count("&lt;script&gt;") >= 4  # the name, the request's and decision's reasons


def test_a_broken_decision_chain_is_shown_as_a_warning(staff: Staff) -> None:
    request_id = review_request(staff.home)
    staff.sign_in(DATA_REFERENT)
    for decision in ("approve", "refuse"):
        assert staff.decide(request_id, decision=decision, reason=decision).status_code == 303
    log = service.package_store(staff.home).decisions
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join([lines[0].replace('"approve"', '"refuse"'), lines[1]]) + "\n")
    page = staff.client.get(f"/staff/packages/{request_id}")
    assert page.status_code == 200 and 'id="chain-broken"' in page.text
    assert "line 2 does not follow line 1" in page.text
    assert str(log.path) not in page.text  # no server path in the page


def test_without_the_package_manager_the_pages_say_so(tmp_path: Path) -> None:
    registry = RightsRegistry(f"sqlite:///{tmp_path / 'registry.db'}", b"s" * 32)
    named = OidcSettings(issuer=f"http://127.0.0.1:{free_port()}")
    app = create_app(
        registry, lambda nir: "pseudo", b"portal secret " * 3, auth=DpoAuth.with_provider(named)
    )
    client = TestClient(app, raise_server_exceptions=False)
    token = SessionStore(registry.engine).create(
        method=OIDC, subject="referent", username="referent", roles=(DATA_REFERENT,)
    )
    client.cookies.set(STAFF_SESSION_COOKIE, token, path="/staff")
    page = client.get("/staff/packages")
    assert page.status_code == 503 and "not set up" in page.text


def test_a_sessions_table_from_before_roles_gains_the_column(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as db:
        db.exec_driver_sql(
            "CREATE TABLE portal_dpo_sessions (id_sha256 VARCHAR(64) PRIMARY KEY, "
            "method VARCHAR(20) NOT NULL, subject VARCHAR(255) NOT NULL, sid VARCHAR(255), "
            "username VARCHAR(255) NOT NULL, name VARCHAR(255), id_token TEXT, "
            "stamp VARCHAR(64), created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL)"
        )
    # A session opened before the upgrade (the DPO's: nobody else could sign in then).
    token = "an-old-session-cookie"
    with engine.begin() as db:
        db.exec_driver_sql(
            "INSERT INTO portal_dpo_sessions VALUES (?, 'oidc', 'dpo', NULL, 'dpo', NULL, NULL, "
            "NULL, 1, 4000000000)",
            (hashlib.sha256(token.encode()).hexdigest(),),
        )
    store = SessionStore(engine)
    assert store.get(token).roles == frozenset({DPO})
    new = store.create(method=OIDC, subject="r", username="r", roles=(DATA_REFERENT,))
    assert store.get(new).roles == frozenset({DATA_REFERENT})
    SessionStore(engine)  # starting again changes nothing
    assert store.get(token).roles == frozenset({DPO})


# -- through the real development provider ---------------------------------------------------


@dataclass(frozen=True)
class Portal:
    base: str
    home: HdhHome
    accounts: dict


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    require_node()
    root = tmp_path_factory.mktemp("portal-packages")
    (root / "specs").mkdir()
    home = HdhHome(root / "hdh")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HDH_WORKSPACE_SPECS", str(root / "specs"))
        with portal_with_provider(root, packages_home=home) as served:
            yield Portal(served.base, home, served.accounts)


def _sign_in(portal: Portal, username: str, browser: httpx.Client) -> httpx.Response:
    """The whole sign-in; returns the portal's answer to the provider's redirect back."""
    return browser.get(to_portal_callback(portal, browser, username).headers["location"])


def _csrf(browser: httpx.Client, url: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', browser.get(url).text).group(1)


def test_the_referent_signs_in_through_the_provider_and_decides(portal: Portal) -> None:
    request_id = review_request(portal.home)
    with httpx.Client(timeout=10) as browser:
        answer = _sign_in(portal, "referent", browser)
        assert answer.status_code == 303 and answer.headers["location"] == "/staff/packages"
        cookies = {c.split("=")[0]: c for c in answer.headers.get_list("set-cookie")}
        for name, path in ((SESSION_COOKIE, "/dpo"), (STAFF_SESSION_COOKIE, "/staff")):
            assert f"Path={path};" in cookies[name] or cookies[name].endswith(f"Path={path}")
            assert "HttpOnly" in cookies[name] and "SameSite=lax" in cookies[name]
        # One session: the same opaque value in both areas' cookies.
        assert browser.cookies.get(SESSION_COOKIE, path="/dpo") == browser.cookies.get(
            STAFF_SESSION_COOKIE, path="/staff"
        )
        listing = follow(browser, answer)
        assert listing.status_code == 200 and f'data-id="{request_id}"' in listing.text
        assert '<strong id="operator">referent</strong>' in listing.text
        page = f"{portal.base}/staff/packages/{request_id}"
        decided = browser.post(
            f"{page}/decide",
            data={
                "csrf_token": _csrf(browser, page),
                "name": "numpi",
                "version": "1.0",
                "sha256": SHA_REVIEW,
                "decision": "approve",
                "reason": "the custom licence allows research use",
            },
        )
        assert decided.status_code == 303
        assert browser.get(f"{portal.base}/dpo").status_code == 403
        # Signing out (under /dpo) reaches the referent's session and ends it.
        out = browser.post(f"{portal.base}/dpo/logout", data={"csrf_token": _csrf(browser, page)})
        assert out.status_code == 200
        assert browser.get(page, follow_redirects=False).status_code == 303
    log = service.package_store(portal.home).decisions
    (entry,) = log.entries()
    assert entry.decided_by == "referent:referent" and entry.decision == "approve"
    assert log.verify_chain() == []


def test_the_dpo_signed_in_through_the_provider_cannot_review_packages(portal: Portal) -> None:
    request_id = review_request(portal.home, name="numpo")
    with httpx.Client(timeout=10) as browser:
        answer = _sign_in(portal, "dpo", browser)
        assert answer.status_code == 303 and answer.headers["location"] == "/dpo"
        for path in ("/staff/packages", f"/staff/packages/{request_id}"):
            page = browser.get(f"{portal.base}{path}")
            assert page.status_code == 403
            assert 'data-missing-role="data-referent"' in page.text
        page = f"{portal.base}/staff/packages/{request_id}"
        refused = browser.post(
            f"{page}/decide",
            data={
                "csrf_token": _csrf(browser, page),
                "name": "numpo",
                "version": "1.0",
                "sha256": SHA_REVIEW,
                "decision": "approve",
                "reason": "a DPO's decision",
            },
        )
        assert refused.status_code == 403
    assert all(e.name != "numpo" for e in service.package_store(portal.home).decisions.entries())
