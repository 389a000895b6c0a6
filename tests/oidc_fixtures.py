"""Helpers for tests that sign in through the real development provider (``identity/``): free
ports, the Node.js check, an application served by uvicorn in a thread, and a browser played by
httpx through the provider's login and logout forms. Shared by test packages; nothing is mocked.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urljoin

import httpx
import pytest

from auth import dev_provider
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
