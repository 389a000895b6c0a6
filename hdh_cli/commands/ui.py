"""``hdh ui`` (what ``make ui`` runs): the Dagster webserver and daemon, with the rights portal,
the DICOMweb service, the viewers, the sign-in provider and the gateway beside them.

Every server is a child in this process group except Apache (the gateway), which keeps a group
of its own so that its workers can be cleared by its pid: this process stays in the foreground,
stops the gateway and its children when it is interrupted, and ends when one of them does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from hdh_cli.console import console, platform_home

WORKSPACE_FILE = Path(__file__).resolve().parents[2] / "workspace.yaml"
DAGSTER_PREFIX = "/dagster"  # where the gateway serves the Dagster UI
CODE_SERVER_SECONDS = 180  # loading the code location, on a busy machine


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True)
@click.option("--portal-port", default=3001, show_default=True, help="0: no portal.")
@click.option("--dicomweb-port", default=3002, show_default=True, help="0: no DICOMweb service.")
@click.option(
    "--viewer-port", default=3003, show_default=True, help="0: no viewer (needs the DICOMweb one)."
)
@click.option(
    "--identity-port",
    default=3010,
    show_default=True,
    help="The development sign-in provider, when HDH_OIDC_ISSUER names none (0: none).",
)
@click.option(
    "--gateway-port",
    default=3080,
    show_default=True,
    help="The sign-in gateway in front of the Dagster UI (0: the UI is served without one).",
)
@click.option(
    "--packages/--no-packages",
    default=True,
    show_default=True,
    help="Serve the projects' package indexes (hdh packages serve: HDH_DEVPI_URL, HDH_R_REPOS_URL).",
)
def ui(
    host: str,
    port: int,
    portal_port: int,
    dicomweb_port: int,
    viewer_port: int,
    identity_port: int,
    gateway_port: int,
    packages: bool,
) -> None:
    """Dagster webserver and daemon (sensors, schedules), the rights portal, the DICOMweb
    service and the viewers beside them, the projects' package indexes, the development sign-in
    provider when no real one is configured, and the gateway that signs people in before the
    Dagster UI."""
    from hdh_cli.instance import prepare_dagster_home

    home = platform_home().ensure()
    scripts = os.path.dirname(sys.executable)
    hdh = os.path.join(scripts, "hdh")
    children: list[subprocess.Popen] = []
    settings = None
    if identity_port:
        apps = {"portal": portal_port, "viewer": viewer_port, "gateway": gateway_port}
        settings = start_development_provider(home, host, identity_port, apps)
    if portal_port:
        children.append(
            subprocess.Popen([hdh, "portal", "--host", host, "--port", str(portal_port), "--demo"])
        )
        console.print(f"Rights portal on http://{host}:{portal_port}/fr/request")
    if dicomweb_port:
        from hdh_assets.imaging.viewer import DICOMWEB_URL_ENV

        children.append(
            subprocess.Popen([hdh, "dicomweb", "--host", host, "--port", str(dicomweb_port)])
        )
        url = f"http://{host}:{dicomweb_port}/dicom-web"
        console.print(f"DICOMweb on {url} (a token: hdh dicomweb token --all)")
        # The imaging assets' metadata name the service where this one listens.
        os.environ.setdefault(DICOMWEB_URL_ENV, url)
        if viewer_port:
            signed_in = settings is not None
            children += start_viewers(hdh, home, host, viewer_port, url, signed_in)
    if packages:
        children.append(subprocess.Popen([hdh, "packages", "serve"]))
    prepare_dagster_home(home)
    gateway = None
    if gateway_port and settings is not None:
        gateway = start_gateway(settings, host, port, gateway_port)
    # One code server that the webserver and the daemon share, as `dagster dev` runs it: the
    # code location loads once, and no server shuts itself down for a missed heartbeat.
    workspace_file = start_code_server(scripts, children)
    prefix = ["--path-prefix", DAGSTER_PREFIX] if gateway else []
    workspace = ["-w", str(workspace_file)]
    webserver = [os.path.join(scripts, "dagster-webserver"), "-h", host, "-p", str(port)]
    children.append(subprocess.Popen([*webserver, *prefix, *workspace]))
    children.append(subprocess.Popen([os.path.join(scripts, "dagster-daemon"), "run", *workspace]))
    if gateway:
        console.print(
            f"Dagster UI on {gateway.config.public_url}{DAGSTER_PREFIX}/ (sign-in: data "
            f"referents and operators; HDH_HOME={home.root})"
        )
    else:
        console.print(f"Dagster UI on http://{host}:{port} (HDH_HOME={home.root})")
    supervise(children, gateway)


def start_code_server(scripts: str, children: list[subprocess.Popen]) -> Path:
    """The code location's gRPC server on a free loopback port, and a workspace file naming it
    (under ``DAGSTER_HOME``); waits until it answers."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        grpc_port = probe.getsockname()[1]
    dagster = os.path.join(scripts, "dagster")
    module = ["-m", "hdh_assets.definitions", "--location-name", "hdh"]
    where = ["-h", "127.0.0.1", "-p", str(grpc_port)]
    server = subprocess.Popen([dagster, "code-server", "start", *where, *module])
    children.append(server)
    workspace_file = Path(os.environ["DAGSTER_HOME"]) / "workspace-ui.yaml"
    workspace_file.write_text(
        f"# Written by hdh ui: the code server it started (from {WORKSPACE_FILE.name}).\n"
        "load_from:\n"
        "  - grpc_server:\n"
        "      host: 127.0.0.1\n"
        f"      port: {grpc_port}\n"
        "      location_name: hdh\n"
    )
    deadline = time.monotonic() + CODE_SERVER_SECONDS
    while not _answers(grpc_port):
        if server.poll() is not None or time.monotonic() > deadline:
            for child in children:
                child.kill()
            raise click.ClickException("the code server did not start (see its output above)")
        time.sleep(1)
    return workspace_file


def _answers(grpc_port: int) -> bool:
    """The code server answers a ping: asked here, as `dagster api grpc-health-check` would,
    rather than by starting that command (a new interpreter) every second."""
    from dagster._grpc.client import DagsterGrpcClient

    try:
        DagsterGrpcClient(port=grpc_port, host="127.0.0.1").ping("")
    except Exception:  # unreachable or still loading: any failure means not yet
        return False
    return True


def start_viewers(
    hdh: str, home, host: str, viewer_port: int, dicomweb_url: str, signed_in: bool
) -> list[subprocess.Popen]:
    """With a sign-in provider: one viewer where each person signs in and sees what their own
    groups grant. Without one: the operators' viewer (every study), then one per provisioned
    project, each holding its project's token."""
    from hdh_assets.imaging.viewer import VIEWER_URL_ENV
    from viewer.projects import project_ports, provisioned_projects

    os.environ.setdefault(VIEWER_URL_ENV, f"http://{host}:{viewer_port}")
    if signed_in:
        where = ["--host", host, "--port", str(viewer_port), "--dicomweb-url", dicomweb_url]
        console.print(
            f"Viewer on http://{host}:{viewer_port} (sign in: a project member sees the "
            "project's studies, data referents and operators every study)"
        )
        return [subprocess.Popen([hdh, "viewer", "--sign-in", *where])]
    scopes = {"--all": viewer_port}
    scopes.update(project_ports(provisioned_projects(home.workspaces), viewer_port))
    started = []
    for scope, scope_port in scopes.items():
        which = ["--all"] if scope == "--all" else ["--project", scope]
        where = ["--host", host, "--port", str(scope_port), "--dicomweb-url", dicomweb_url]
        started.append(subprocess.Popen([hdh, "viewer", *which, *where]))
        shown = "every study" if scope == "--all" else f"project {scope}"
        console.print(f"Viewer on http://{host}:{scope_port} ({shown})")
    return started


def start_development_provider(home, host: str, port: int, app_ports: dict[str, int]):
    """The provider's settings: ``HDH_OIDC_ISSUER``'s, or else the development provider's
    (npm oidc-provider, started in this process group, its demo accounts printed). The
    applications find it through its configuration under ``HDH_HOME/secrets``; nothing opens
    without a sign-in meanwhile."""
    from auth import dev_provider
    from auth.settings import OidcSettings

    settings = OidcSettings.from_env()
    if not settings.development:
        console.print(f"Sign-in: {settings.issuer}")
        return settings
    urls = {app: f"http://{host}:{p}" for app, p in app_ports.items() if p}
    try:
        provider = dev_provider.start(home.secrets, port=port, host=host, app_urls=urls)
    except dev_provider.DevProviderError as error:
        raise click.ClickException(str(error)) from None
    console.print(
        f"[bold red]DEVELOPMENT[/] sign-in provider on {provider.issuer} "
        "(set HDH_OIDC_ISSUER for a real one); demo accounts:"
    )
    for account in dev_provider.demo_accounts(home.secrets, settings):
        groups = ", ".join(account.groups)
        console.print(f"  {account.username} / {account.password}  (groups: {groups})")
    return dev_provider.dev_settings(home.secrets, provider.issuer, settings)


def start_gateway(settings, host: str, dagster_port: int, gateway_port: int):
    """Apache with mod_auth_openidc in front of the Dagster webserver (served under /dagster)."""
    from gateway import server as gateway_server
    from gateway.config import dagster_application

    application = dagster_application(settings, f"http://{host}:{dagster_port}")
    try:
        return gateway_server.start(
            settings,
            (application,),
            public_url=f"http://{host}:{gateway_port}",
            listen_host=host,
            listen_port=gateway_port,
        )
    except gateway_server.GatewayError as error:
        raise click.ClickException(str(error)) from None


def supervise(children: list[subprocess.Popen], gateway) -> None:
    """Until interrupted (or a server ends): then stop the gateway and every child."""
    stopping = []

    def stop(signum, _frame) -> None:
        stopping.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        if gateway is not None:
            gateway.stop()
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 20
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
    ended = [c for c in children if c.returncode not in (0, -signal.SIGINT, None)]
    if not stopping and ended:
        raise click.ClickException(f"a server ended (exit {ended[0].returncode}); all stopped")
