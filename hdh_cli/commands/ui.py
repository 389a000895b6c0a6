"""``hdh ui`` (what ``make ui`` runs): the Dagster webserver and daemon, with the rights portal,
the DICOMweb service and the viewer beside them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from hdh_cli.console import console, platform_home

WORKSPACE_FILE = Path(__file__).resolve().parents[2] / "workspace.yaml"


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
def ui(
    host: str, port: int, portal_port: int, dicomweb_port: int, viewer_port: int, identity_port: int
) -> None:
    """Dagster webserver and daemon (sensors, schedules), the rights portal, the DICOMweb
    service and the viewer beside them, and the development sign-in provider when no real one
    is configured."""
    import subprocess

    from hdh_cli.instance import prepare_dagster_home

    home = platform_home().ensure()
    scripts = os.path.dirname(sys.executable)
    hdh = os.path.join(scripts, "hdh")
    if identity_port:
        apps = {"portal": portal_port, "viewer": viewer_port}
        start_development_provider(home, host, identity_port, apps)
    # The portal, the DICOMweb service and the viewer stay in this process group, so stopping
    # the group stops every server.
    if portal_port:
        subprocess.Popen([hdh, "portal", "--host", host, "--port", str(portal_port)])
        console.print(f"Rights portal on http://{host}:{portal_port}/fr/request")
    if dicomweb_port:
        from hdh_assets.imaging.viewer import DICOMWEB_URL_ENV

        subprocess.Popen([hdh, "dicomweb", "--host", host, "--port", str(dicomweb_port)])
        url = f"http://{host}:{dicomweb_port}/dicom-web"
        console.print(f"DICOMweb on {url} (a token: hdh dicomweb token --all)")
        # The imaging assets' metadata name the service where this one listens.
        os.environ.setdefault(DICOMWEB_URL_ENV, url)
        if viewer_port:
            from hdh_assets.imaging.viewer import VIEWER_URL_ENV
            from viewer.projects import project_ports, provisioned_projects

            # The operators' viewer (every study), then one per provisioned project, each
            # reading through the service above with its own token.
            scopes = {"--all": viewer_port}
            projects = project_ports(provisioned_projects(home.workspaces), viewer_port)
            scopes.update({project: port for project, port in projects.items()})
            for scope, scope_port in scopes.items():
                which = ["--all"] if scope == "--all" else ["--project", scope]
                where = ["--host", host, "--port", str(scope_port), "--dicomweb-url", url]
                subprocess.Popen([hdh, "viewer", *which, *where])
                shown = "every study" if scope == "--all" else f"project {scope}"
                console.print(f"Viewer on http://{host}:{scope_port} ({shown})")
            os.environ.setdefault(VIEWER_URL_ENV, f"http://{host}:{viewer_port}")
    prepare_dagster_home(home)
    command = [
        os.path.join(scripts, "dagster"),
        "dev",
        "-h",
        host,
        "-p",
        str(port),
        "-w",
        str(WORKSPACE_FILE),
    ]
    console.print(f"Dagster UI on http://{host}:{port} (HDH_HOME={home.root})")
    # Replace this process, so the caller (make, a test) holds the pid of the server itself.
    os.execv(command[0], command)


def start_development_provider(home, host: str, port: int, app_ports: dict[str, int]) -> None:
    """Unless ``HDH_OIDC_ISSUER`` names a provider: the development one (npm oidc-provider),
    in this process group, and its demo accounts printed. The applications find it through
    its configuration under ``HDH_HOME/secrets``; nothing opens without a sign-in meanwhile."""
    from auth import dev_provider
    from auth.settings import OidcSettings

    settings = OidcSettings.from_env()
    if not settings.development:
        console.print(f"Sign-in: {settings.issuer}")
        return
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
        console.print(
            f"  {account.username} / {account.password}  (groups: {', '.join(account.groups)})"
        )
