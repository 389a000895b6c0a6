"""Helpers for tests that sign in through the real development provider (``identity/``): free
ports, the Node.js check, an application served by uvicorn in a thread, and a browser played by
httpx through the provider's login and logout forms. Shared by test packages; nothing is mocked.
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from auth import dev_provider
from auth.dev_provider import DevProvider
from auth.settings import OidcClient, OidcSettings
from resources.rights_registry import RightsRegistry
from tests.dicomweb.servers import free_port as free_port  # one home, used from here

FORM = re.compile(r'<form[^>]*action="([^"]+)"', re.I)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', re.I)
PROVIDER_BANNER = "DEVELOPMENT identity provider"


def require_node() -> None:
    """Node.js and identity/node_modules; a skip locally, a failure in CI (no silent skip)."""
    try:
        dev_provider.check_installed()
    except dev_provider.DevProviderError as error:
        pytest.skip(str(error))


@contextmanager
def serve(app, port: int) -> Iterator[str]:
    """``app`` on a real server in a thread (redirects cross hosts: a test client cannot follow
    them); yields its base URL and stops it on exit."""
    from tests.dicomweb.servers import start_service

    running = start_service(app, port, lifespan="auto")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        running.stop()


def follow(browser: httpx.Client, response: httpx.Response, stop_at: str | None = None):
    """Follow redirects like a browser; stop before a URL starting with ``stop_at``."""
    for _ in range(15):
        location = response.headers.get("location")
        if response.status_code not in (301, 302, 303, 307) or location is None:
            return response
        target = urljoin(str(response.url), location)
        if stop_at and target.startswith(stop_at):
            return response
        response = browser.get(target)
    raise AssertionError("too many redirects")


def provider_login(
    browser: httpx.Client, page: httpx.Response, username: str, password: str
) -> httpx.Response:
    """Fill the provider's login form shown in ``page``; returns the answer, not followed."""
    assert page.status_code == 200 and PROVIDER_BANNER in page.text, page.text[:500]
    action = html.unescape(FORM.search(page.text).group(1))
    return browser.post(
        urljoin(str(page.url), action), data={"login": username, "password": password}
    )


def confirm_provider_logout(browser: httpx.Client, page: httpx.Response) -> httpx.Response:
    """Answer "yes, sign me out" on the provider's logout page; returns the answer."""
    assert page.status_code == 200 and PROVIDER_BANNER in page.text, page.text[:500]
    action = html.unescape(FORM.search(page.text).group(1))
    form = dict(HIDDEN.findall(page.text))
    return browser.post(urljoin(str(page.url), action), data={**form, "logout": "yes"})


PORTAL_CLIENT = OidcClient("hdh-portal", "portal-test-secret")


@dataclass(frozen=True)
class SignedInPortal:
    """The rights portal on a free port, signing staff in at a development provider."""

    base: str
    provider: DevProvider
    registry: RightsRegistry
    accounts: dict
    secrets: Path


@contextmanager
def portal_with_provider(root: Path, **app_options) -> Iterator[SignedInPortal]:
    """A development provider with the portal's client registered, and the portal using it."""
    from portal.app import create_app
    from portal.dpo_auth import BACKCHANNEL_LOGOUT_PATH, CALLBACK_PATH, SIGNED_OUT_PATH, DpoAuth

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    client = dev_provider.DevClient(
        PORTAL_CLIENT.client_id,
        PORTAL_CLIENT.client_secret,
        redirect_uris=(base + CALLBACK_PATH,),
        post_logout_redirect_uris=(base + SIGNED_OUT_PATH,),
        backchannel_logout_uri=base + BACKCHANNEL_LOGOUT_PATH,
        name="Rights portal",
    )
    defaults = OidcSettings()
    secrets = root / "secrets"
    provider = dev_provider.start(secrets, port=free_port(), settings=defaults, clients=[client])
    try:
        settings = dataclasses.replace(
            defaults,
            issuer=provider.issuer,
            clients={**defaults.clients, "portal": PORTAL_CLIENT},
        )
        registry = RightsRegistry(f"sqlite:///{root / 'registry.db'}", b"s" * 32)
        app = create_app(
            registry,
            lambda nir: "pseudo",
            b"portal secret " * 3,
            auth=DpoAuth.with_provider(settings, base_url=base),
            **app_options,
        )
        accounts = {a.username: a for a in dev_provider.demo_accounts(secrets, defaults)}
        with serve(app, port):
            yield SignedInPortal(base, provider, registry, accounts, secrets)
    finally:
        provider.stop()


def to_portal_callback(
    portal: SignedInPortal, browser: httpx.Client, username: str | None
) -> httpx.Response:
    """From the portal's sign-in button to the provider's redirect back (not yet followed)."""
    from portal.dpo_auth import CALLBACK_PATH

    start = browser.get(f"{portal.base}/dpo/auth/start")
    assert start.status_code == 303
    page = follow(browser, start, portal.base + CALLBACK_PATH)
    if page.status_code == 200:  # the provider asks who it is
        account = portal.accounts[username]
        page = provider_login(browser, page, account.username, account.password)
        page = follow(browser, page, portal.base + CALLBACK_PATH)
    assert page.headers["location"].startswith(portal.base + CALLBACK_PATH)
    return page
