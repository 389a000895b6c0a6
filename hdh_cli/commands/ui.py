"""``hdh ui`` (what ``make ui`` runs): the Dagster webserver and daemon, the portal beside them."""

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
def ui(host: str, port: int, portal_port: int) -> None:
    """Dagster webserver and daemon (sensors, schedules) and the rights portal beside them."""
    import subprocess

    from hdh_cli.instance import prepare_dagster_home

    home = platform_home().ensure()
    scripts = os.path.dirname(sys.executable)
    if portal_port:
        # The portal stays in this process group, so stopping the group stops both servers.
        hdh = os.path.join(scripts, "hdh")
        subprocess.Popen([hdh, "portal", "--host", host, "--port", str(portal_port)])
        console.print(f"Rights portal on http://{host}:{portal_port}/fr/request")
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
