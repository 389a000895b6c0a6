"""``hdh deploy``: render the deployment files from the settings (nothing is applied)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hdh_cli.console import console

DEFAULT_OUT = Path("deploy/kubernetes")


@click.group()
def deploy() -> None:
    """Deployment files rendered from HDH_DEPLOY_* settings."""


@deploy.command("kubernetes")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Folder to render into.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when the folder differs.")
def deploy_kubernetes(out: Path, check: bool) -> None:
    """Helm values, dagster.yaml, Dockerfile and manifests for Dagster on Kubernetes."""
    from hdh_cli.deployment.render import drift, render, write
    from hdh_cli.deployment.settings import DeploymentSettings, SettingsError

    try:
        files = render(DeploymentSettings.from_env())
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
    if check:
        differing = drift(out, files)
        for relative in differing:
            console.print(f"[red]differs[/] {out / relative}", soft_wrap=True)
        if differing:
            console.print(
                f"{len(differing)} file(s) differ: run `hdh deploy kubernetes`", soft_wrap=True
            )
            sys.exit(1)
        console.print(f"{out}: up to date ({len(files)} files)", soft_wrap=True)
        return
    changed = write(out, files)
    for relative in changed:
        console.print(f"wrote {out / relative}", soft_wrap=True)
    console.print(f"{out}: {len(changed)} of {len(files)} files changed", soft_wrap=True)
