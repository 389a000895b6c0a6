"""A workspace's JupyterHub signs members in through the real development provider: the Hub runs
the sign-in half of the rendered ``jupyterhub_config.py`` (the cluster's spawner swapped for a
local one), configurable-http-proxy from ``jupyterhub/node_modules``, and a browser played by
httpx goes through the provider's login form. A member reaches her own JupyterLab with Python
and R kernels and the RStudio launcher; someone outside the project is refused by the Hub."""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from auth import dev_provider
from auth.dev_provider import DevClient
from auth.settings import OidcSettings
from hdh_assets.workspaces.config import render_settings
from hdh_assets.workspaces.image import image_definition
from hdh_assets.workspaces.jupyterhub import (
    CLIENT_SECRET_ENV,
    COOKIE_SECRET_ENV,
    PROXY_TOKEN_ENV,
    REFUSED_MESSAGE,
    hub_sign_in,
    jupyterhub_config,
)
from hdh_assets.workspaces.kernels import (
    PYTHON_KERNEL,
    R_KERNEL,
    KernelEnvironmentError,
    build_kernel_environment,
)
from hdh_assets.workspaces.specs import load_specs
from tests.oidc_fixtures import follow, free_port, provider_login, require_node
from tests.processes import TERMINATE_FIRST, stop_group

pytestmark = [pytest.mark.slow, pytest.mark.kernels]

REPO = Path(__file__).resolve().parents[2]
PROXY = REPO / "jupyterhub" / "node_modules" / ".bin" / "configurable-http-proxy"
BIN = Path(sys.executable).parent
PROJECT = "cardio-imaging"  # claire.martin is a member at the provider
MEMBER, OUTSIDER = "claire.martin", "referent"


@dataclass(frozen=True)
class Hub:
    base: str
    accounts: dict
    log: Path
    config: str
    client_secret: str


def _local_spawner(root: Path, jupyter_path: str) -> str:
    """The machine's stand-in for KubeSpawner: each member's server a local process, in the
    Hub's process group so that stopping the Hub's group stops it too."""
    args = ["--allow-root"] if os.geteuid() == 0 else []  # CI runs as root
    values = {
        "JupyterHub.spawner_class": "jupyterhub.spawner.SimpleLocalProcessSpawner",
        "SimpleLocalProcessSpawner.home_dir_template": str(root / "home" / "{username}"),
        "Spawner.cmd": [str(BIN / "jupyterhub-singleuser")],
        "Spawner.args": args,
        "Spawner.environment": {
            "JUPYTER_PATH": jupyter_path,
            "JUPYTER_CONFIG_DIR": str(root / "jupyter-config"),
            "PATH": os.environ["PATH"],
        },
        "Spawner.popen_kwargs": {"start_new_session": False},
        "Spawner.start_timeout": 60,
        "Spawner.http_timeout": 60,
    }
    return "\n".join(f"c.{name} = {value!r}" for name, value in values.items()) + "\n"


def _wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"jupyterhub exited with {process.returncode}:\n{log.read_text()}")
            try:
                if http.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    pytest.fail(f"jupyterhub did not answer {url} within {timeout:.0f} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    require_node()
    if not PROXY.exists():
        pytest.skip(f"{PROXY} is missing: make jupyterhub-deps installs it")  # fails in CI
    root = tmp_path_factory.mktemp("jupyterhub")
    definition = image_definition([], [], rstudio=True)
    try:
        kernels = build_kernel_environment(definition, root / "kernels")
    except KernelEnvironmentError as error:
        pytest.skip(f"{error}: make system-deps installs R")  # fails in CI
    hub_port, api_port, proxy_api_port = free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{hub_port}"
    client_secret = secrets.token_urlsafe(24)
    defaults = OidcSettings()
    client = DevClient(
        defaults.client("jupyterhub").client_id,
        client_secret,
        redirect_uris=(f"{base}/hub/oauth_callback",),
        post_logout_redirect_uris=(f"{base}/",),
        name="Workspace JupyterHub",
    )
    provider_secrets = root / "secrets"
    provider = dev_provider.start(
        provider_secrets, port=free_port(), settings=defaults, clients=[client]
    )
    process = None
    try:
        # The project's rendered sign-in, as the platform renders it for this provider.
        spec = load_specs(REPO / "workspaces" / "projects")[PROJECT]
        settings = render_settings({"HDH_OIDC_ISSUER": provider.issuer})
        sign_in = dataclasses.replace(
            hub_sign_in(spec, settings), callback_url=f"{base}/hub/oauth_callback"
        )
        local = {
            "JupyterHub.bind_url": base,
            "JupyterHub.hub_bind_url": f"http://127.0.0.1:{api_port}",
            "JupyterHub.db_url": f"sqlite:///{root / 'jupyterhub.sqlite'}",
            "JupyterHub.pid_file": str(root / "jupyterhub.pid"),
            "ConfigurableHTTPProxy.api_url": f"http://127.0.0.1:{proxy_api_port}",
            "ConfigurableHTTPProxy.command": [str(PROXY)],
            "ConfigurableHTTPProxy.pid_file": str(root / "proxy.pid"),
        }
        config = jupyterhub_config(
            PROJECT, sign_in, _local_spawner(root, str(kernels.data_dir)), local
        )
        config_path = root / "jupyterhub_config.py"
        config_path.write_text(config)
        log = root / "jupyterhub.log"
        env = {
            **os.environ,
            CLIENT_SECRET_ENV: client_secret,
            PROXY_TOKEN_ENV: secrets.token_hex(32),
            COOKIE_SECRET_ENV: secrets.token_hex(32),
        }
        with log.open("wb") as output:
            process = subprocess.Popen(
                [str(BIN / "jupyterhub"), "-f", str(config_path)],
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_for(f"{base}/hub/health", process, log)
        accounts = {a.username: a for a in dev_provider.demo_accounts(provider_secrets, defaults)}
        yield Hub(base, accounts, log, config, client_secret)
    finally:
        if process is not None:
            stop_group(process, TERMINATE_FIRST)
        provider.stop()


def _sign_in(hub: Hub, browser: httpx.Client, username: str) -> httpx.Response:
    """From the Hub's login through the provider's form; the Hub's answer to the callback."""
    page = follow(browser, browser.get(f"{hub.base}/hub/login"), f"{hub.base}/hub/oauth_callback")
    account = hub.accounts[username]
    page = follow(
        browser,
        provider_login(browser, page, account.username, account.password),
        f"{hub.base}/hub/oauth_callback",
    )
    callback = page.headers["location"]
    assert callback.startswith(f"{hub.base}/hub/oauth_callback?")
    return browser.get(callback)


def _open_lab(hub: Hub, browser: httpx.Client, username: str) -> httpx.Response:
    """Her server's JupyterLab page, once the Hub has started it (spawn-pending meanwhile)."""
    deadline = time.monotonic() + 60
    while True:
        page = follow(browser, browser.get(f"{hub.base}/user/{username}/lab"))
        if page.status_code == 200 and "JupyterLab" in page.text:
            return page
        if time.monotonic() > deadline:
            pytest.fail(f"no JupyterLab: {page.status_code} {page.url}\n{hub.log.read_text()}")
        time.sleep(0.5)


def test_the_rendered_config_holds_no_secret(hub: Hub) -> None:
    assert "c.GenericOAuthenticator.client_secret = os.environ[" in hub.config
    assert "project:cardio-imaging:member" in hub.config
    assert hub.client_secret not in hub.config
    for account in hub.accounts.values():
        assert account.password not in hub.config


def test_a_member_signs_in_and_gets_jupyterlab_with_python_r_and_rstudio(hub: Hub) -> None:
    with httpx.Client(timeout=30) as browser:
        landed = follow(browser, _sign_in(hub, browser, MEMBER))
        assert landed.status_code == 200, landed.text[:500]
        lab = _open_lab(hub, browser, MEMBER)
        assert str(lab.url).startswith(f"{hub.base}/user/{MEMBER}/lab")

        kernelspecs = browser.get(f"{hub.base}/user/{MEMBER}/api/kernelspecs")
        assert kernelspecs.status_code == 200
        specs = kernelspecs.json()["kernelspecs"]
        assert {PYTHON_KERNEL, R_KERNEL} <= set(specs)
        assert specs[R_KERNEL]["spec"]["language"] == "R"

        # An R kernel starts in her server, through the Hub's proxy, with her session.
        xsrf = browser.cookies.get("_xsrf", domain="127.0.0.1", path=f"/user/{MEMBER}/")
        started = browser.post(
            f"{hub.base}/user/{MEMBER}/api/kernels",
            json={"name": R_KERNEL},
            headers={"X-XSRFToken": xsrf or ""},
        )
        assert started.status_code == 201, started.text
        kernel = started.json()
        assert kernel["name"] == R_KERNEL
        stopped = browser.delete(
            f"{hub.base}/user/{MEMBER}/api/kernels/{kernel['id']}",
            headers={"X-XSRFToken": xsrf or ""},
        )
        assert stopped.status_code == 204

        # RStudio is offered inside the same server, behind the same sign-in.
        servers = browser.get(f"{hub.base}/user/{MEMBER}/server-proxy/servers-info")
        assert servers.status_code == 200
        assert "rstudio" in {server["name"] for server in servers.json()["server_processes"]}

    with httpx.Client(timeout=10) as stranger:  # no session: the Hub sends it to sign in
        answer = stranger.get(f"{hub.base}/user/{MEMBER}/api/kernelspecs")
        assert answer.status_code in (302, 403)
        if answer.status_code == 302:
            assert "/hub/" in answer.headers["location"]


def test_someone_outside_the_project_is_refused(hub: Hub) -> None:
    with httpx.Client(timeout=30) as browser:
        refused = _sign_in(hub, browser, OUTSIDER)
        assert refused.status_code == 403
        error = refused.text[refused.text.find('<div class="error">') :][:400]
        assert f"<h1>403 : {REFUSED_MESSAGE}</h1>" in error, error  # the Hub's own error page
        after = follow(browser, browser.get(f"{hub.base}/user/{OUTSIDER}/lab"))
        assert "JupyterLab" not in after.text
