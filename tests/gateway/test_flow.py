"""The gateway end to end: the real development provider, a real Dagster webserver under
``/dagster`` and Apache with the rendered configuration; a browser is played by httpx through
the provider's own login form."""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from auth import dev_provider
from auth.dev_provider import DemoAccount, DevProvider
from auth.oidc import fetch_metadata
from auth.settings import OidcSettings
from gateway import server
from gateway.config import CALLBACK_PATH, Application, dagster_application
from tests.auth.conftest import free_port
from tests.processes import TERMINATE_FIRST, stop_group

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FORM = re.compile(r'<form[^>]*action="([^"]+)"', re.I)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', re.I)
SESSION_COOKIE = "mod_auth_openidc_session"
JSON = {"Accept": "application/json", "Content-Type": "application/json"}
VERSION = json.dumps({"query": "{ version }"})


@dataclass(frozen=True)
class Platform:
    provider: DevProvider
    gateway: server.Gateway
    accounts: dict[str, DemoAccount]
    dagster_url: str

    @property
    def url(self) -> str:
        return self.gateway.url


def _wait_for_dagster(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + 120
    with httpx.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(httpx.TransportError):
                answer = http.post(f"{url}/dagster/graphql", content=VERSION, headers=JSON)
                if answer.status_code == 200 and answer.json()["data"]["version"]:
                    return
            time.sleep(1)
    raise AssertionError("the Dagster webserver did not answer:\n" + log.read_text()[-3000:])


@pytest.fixture(scope="module")
def platform(
    apache_ready: None, echo_upstream: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    try:
        dev_provider.check_installed()
    except dev_provider.DevProviderError as error:
        pytest.skip(str(error))
    tmp = tmp_path_factory.mktemp("gateway")
    dagster_port, gateway_port = free_port(), free_port()
    dagster_url = f"http://127.0.0.1:{dagster_port}"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp / "dagster"),
        "HDH_HOME": str(tmp / "hdh"),
        "HDH_PSEUDONYM_KEY": "cd" * 32,
    }
    (tmp / "dagster").mkdir()
    webserver = str(Path(sys.executable).with_name("dagster-webserver"))
    command = [webserver, "-h", "127.0.0.1", "-p", str(dagster_port), "--path-prefix", "/dagster"]
    command += ["-w", str(ROOT / "workspace.yaml")]
    log_path = tmp / "dagster.log"
    with open(log_path, "wb") as log:
        dagster = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    with contextlib.ExitStack() as stack:
        stack.callback(stop_group, dagster, TERMINATE_FIRST)
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        secrets_dir, provider_port = tmp / "secrets", free_port()
        base = OidcSettings()  # the documented defaults, whatever the environment says
        settings = dev_provider.dev_settings(secrets_dir, f"http://127.0.0.1:{provider_port}", base)
        # The platform's registrations, the gateway's with its back-channel logout endpoint.
        backchannel = f"{gateway_url}{CALLBACK_PATH}?logout=backchannel"
        clients = [
            dataclasses.replace(client, backchannel_logout_uri=backchannel)
            if client.client_id == settings.client("gateway").client_id
            else client
            for client in dev_provider.platform_clients(settings, {"gateway": gateway_url})
        ]
        provider = dev_provider.start(
            secrets_dir, port=provider_port, settings=base, clients=clients
        )
        stack.callback(provider.stop)
        assert provider.issuer == settings.issuer
        accounts = {a.username: a for a in dev_provider.demo_accounts(secrets_dir, settings)}
        # A second application shows what reaches a backend: its headers, echoed.
        echo = Application("echo", "/echo", echo_upstream, (settings.referent_group,))
        gateway = server.start(
            settings, (dagster_application(settings, dagster_url), echo), public_url=gateway_url
        )
        stack.callback(gateway.stop)
        _wait_for_dagster(dagster, dagster_url, log_path)
        yield Platform(provider, gateway, accounts, dagster_url)
        print(gateway.log_tail())


def _browser() -> httpx.Client:
    return httpx.Client(timeout=20, follow_redirects=True, headers={"Accept": "text/html"})


def _sign_in(
    platform: Platform, username: str, path: str = "/dagster/"
) -> tuple[httpx.Client, httpx.Response]:
    """Open ``path`` in a new browser, sign in on the provider's form, land where it leads."""
    browser = _browser()
    page = browser.get(platform.url + path)
    assert page.url.host == "127.0.0.1" and str(page.url).startswith(platform.provider.issuer)
    assert "DEVELOPMENT identity provider" in page.text
    action = html.unescape(FORM.search(page.text).group(1))
    account = platform.accounts[username]
    landed = browser.post(
        urljoin(str(page.url), action),
        data={"login": account.username, "password": account.password},
    )
    return browser, landed


def test_without_a_session_pages_redirect_and_api_calls_get_401(platform: Platform) -> None:
    with httpx.Client(timeout=10, headers={"Accept": "text/html"}) as anonymous:
        page = anonymous.get(platform.url + "/dagster/")
        assert page.status_code == 302
        assert page.headers["location"].startswith(platform.provider.issuer + "/auth?")
        assert "client_id=hdh-gateway" in page.headers["location"]
        for headers in (JSON, {"X-Requested-With": "XMLHttpRequest"}, {"Accept": "*/*"}):
            api = anonymous.post(
                platform.url + "/dagster/graphql", content=VERSION, headers=headers
            )
            assert api.status_code == 401, headers
        xhr = anonymous.get(platform.url + "/dagster/", headers={"Accept": "application/json"})
        assert xhr.status_code == 401
        # A forged user header opens nothing.
        forged = anonymous.get(platform.url + "/echo/", headers={"X-Forwarded-User": "referent"})
        assert forged.status_code == 302
        landing = anonymous.get(platform.url + "/")
        assert landing.status_code == 200 and 'href="/dagster/"' in landing.text


def test_referent_reaches_the_dagster_ui_its_api_and_websocket(platform: Platform) -> None:
    browser, page = _sign_in(platform, "referent")
    browser.close()
    assert page.status_code == 200, page.text[:500]
    assert str(page.url) == platform.url + "/dagster/"
    assert '"assetPrefix":"/dagster"' in page.text  # the Dagster UI, under its prefix
    session = _session_cookie(page)
    with httpx.Client(timeout=20, cookies={SESSION_COOKIE: session}) as signed_in:
        answer = signed_in.post(platform.url + "/dagster/graphql", content=VERSION, headers=JSON)
        assert answer.status_code == 200
        assert answer.json()["data"]["version"]
        # The backend sees the user from the gateway, not the forged header; no session cookie.
        echoed = signed_in.get(platform.url + "/echo/x", headers={"X-Forwarded-User": "dpo"})
        assert echoed.status_code == 200
        headers = {name.lower(): value for name, value in echoed.json()["headers"]}
        assert headers["x-forwarded-user"] == "referent"
        assert SESSION_COOKIE not in headers.get("cookie", "")
        assert not any(name.startswith("oidc_") for name in headers)
        assert echoed.json()["path"] == "/x"

    ws_url = platform.url.replace("http://", "ws://") + "/dagster/graphql"
    cookie = f"{SESSION_COOKIE}={session}"
    with connect(
        ws_url, additional_headers={"Cookie": cookie}, subprotocols=["graphql-ws"], open_timeout=20
    ) as socket:
        assert socket.response.status_code == 101
        socket.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(socket.recv(timeout=20))["type"] == "connection_ack"
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, subprotocols=["graphql-ws"], open_timeout=20)
    assert refused.value.response.status_code == 401


def test_a_project_member_is_forbidden(platform: Platform) -> None:
    browser, page = _sign_in(platform, "claire.martin")
    browser.close()
    assert page.status_code == 403
    assert str(page.url) == platform.url + "/dagster/"
    session = _session_cookie(page)
    with httpx.Client(timeout=20, cookies={SESSION_COOKIE: session}) as member:
        api = member.post(platform.url + "/dagster/graphql", content=VERSION, headers=JSON)
        assert api.status_code == 403


def test_logout_ends_the_gateway_and_provider_sessions(platform: Platform) -> None:
    browser, page = _sign_in(platform, "referent")
    assert page.status_code == 200
    session = _session_cookie(page)
    try:
        # The gateway ends its session and sends the browser to the provider's end_session,
        # which asks for a confirmation and then comes back to the gateway's landing page.
        confirm = browser.get(platform.url + "/logout")
        assert str(confirm.url).startswith(platform.provider.issuer), confirm.url
        assert confirm.status_code == 200 and "Sign out" in confirm.text
        action = html.unescape(FORM.search(confirm.text).group(1))
        form = dict(HIDDEN.findall(confirm.text))
        done = browser.post(urljoin(str(confirm.url), action), data={**form, "logout": "yes"})
        assert done.status_code == 200 and str(done.url) == platform.url + "/"
        # Signed out at the provider too: the next visit asks for the password again.
        again = browser.get(platform.url + "/dagster/")
        assert str(again.url).startswith(platform.provider.issuer)
        assert "DEVELOPMENT identity provider" in again.text and 'name="password"' in again.text
    finally:
        browser.close()
    with httpx.Client(timeout=10, cookies={SESSION_COOKIE: session}) as replay:
        page = replay.get(platform.url + "/dagster/", headers={"Accept": "text/html"})
        assert page.status_code == 302
        assert page.headers["location"].startswith(platform.provider.issuer)
        api = replay.post(platform.url + "/dagster/graphql", content=VERSION, headers=JSON)
        assert api.status_code == 401


def test_signing_out_at_the_provider_ends_the_gateway_session(platform: Platform) -> None:
    """Signed out from another application (the portal): the provider's back-channel call
    ends the gateway session too."""
    browser, page = _sign_in(platform, "referent")
    assert page.status_code == 200
    session = _session_cookie(page)
    try:
        end_session = fetch_metadata(platform.provider.issuer).end_session_endpoint
        confirm = browser.get(end_session)
        action = html.unescape(FORM.search(confirm.text).group(1))
        form = dict(HIDDEN.findall(confirm.text))
        done = browser.post(urljoin(str(confirm.url), action), data={**form, "logout": "yes"})
        assert done.status_code == 200 and "You are signed out" in done.text
    finally:
        browser.close()
    access_log = platform.gateway.config.access_log.read_text()
    assert f'"POST {CALLBACK_PATH}?logout=backchannel HTTP/1.1" 200' in access_log
    with httpx.Client(timeout=10, cookies={SESSION_COOKIE: session}) as replay:
        api = replay.post(platform.url + "/dagster/graphql", content=VERSION, headers=JSON)
        assert api.status_code == 401


def _session_cookie(response: httpx.Response) -> str:
    """The gateway's session cookie, as the redirect back from the provider set it."""
    for earlier in (*response.history, response):
        value = earlier.cookies.get(SESSION_COOKIE)
        if value:
            return value
    raise AssertionError("the gateway set no session cookie")
