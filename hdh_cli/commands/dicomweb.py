"""``hdh dicomweb``: the DICOMweb service (QIDO-RS, WADO-RS) served here, and its tokens.

``hdh dicomweb token`` is read only: it loads neither the code location nor Spark, only the
token key (``HDH_DICOMWEB_SECRET``, else the key under ``HDH_HOME/secrets``).
"""

from __future__ import annotations

import re
import time

import click

from hdh_cli.console import console, platform_home, print_json

_TTL = re.compile(r"^(\d+)([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _ttl_seconds(text: str) -> int:
    match = _TTL.match(text.strip().lower())
    if not match:
        raise click.BadParameter(f"'{text}' is not a lifetime (e.g. 900, 30m, 8h, 7d)")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def known_project(project: str) -> bool:
    """A project with a workspace under HDH_HOME/workspaces or a spec file."""
    folder = platform_home().workspaces
    if folder.is_dir() and project in {p.name for p in folder.iterdir() if p.is_dir()}:
        return True
    from hdh_assets.workspaces.config import spec_ids

    return project in spec_ids()


@click.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3002, show_default=True)
@click.option("--public-url", default=None, help="The address clients use behind a proxy.")
@click.pass_context
def dicomweb(context: click.Context, host: str, port: int, public_url: str | None) -> None:
    """The DICOMweb service (QIDO-RS, WADO-RS) on the pseudonymised store, behind tokens."""
    if context.invoked_subcommand is not None:
        return
    from dicomweb.app import ROOT, serve

    home = platform_home().ensure()
    shown = (public_url.rstrip("/") + ROOT) if public_url else f"http://{host}:{port}{ROOT}"
    console.print(f"DICOMweb on {shown} (HDH_HOME={home.root})")
    # Access logs hold paths of pseudonymised UIDs only, never a token.
    serve(home, host=host, port=port, public_url=public_url)


@dicomweb.command("token")
@click.option("--project", default=None, help="A project: it sees what its grants allow.")
@click.option("--all", "all_studies", is_flag=True, help="Every study (for operators).")
@click.option("--ttl", default="8h", show_default=True, help="Lifetime: 900, 30m, 8h, 7d.")
@click.option("--json", "as_json", is_flag=True, help='Print {"token": ..., "expires": ...}.')
def dicomweb_token(project: str | None, all_studies: bool, ttl: str, as_json: bool) -> None:
    """Print a bearer token for the DICOMweb service (scripts, tests, a viewer)."""
    from dicomweb.tokens import Tokens

    if all_studies == (project is not None):
        raise click.UsageError("give either --project P or --all")
    seconds = _ttl_seconds(ttl)
    if project is not None and not known_project(project):
        raise click.ClickException(f"unknown project '{project}': no workspace and no spec")
    now = time.time()
    try:
        token = Tokens.for_home(platform_home().ensure()).issue(project, seconds, now=now)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        print_json(
            {
                "token": token,
                "scope": "all" if project is None else project,
                "expires": int(now + seconds),
            }
        )
    else:
        click.echo(token)
        console.print(f"valid for {ttl} ({'all studies' if project is None else project})")
