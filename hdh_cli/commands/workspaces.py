"""``hdh workspaces``: render, diff, apply and decommission research-project workspaces."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from hdh_cli.console import console, platform_home, print_json

Result = TypeVar("Result")


@click.group()
def workspaces() -> None:
    """Research-project workspaces: specs in workspaces/projects/ (HDH_WORKSPACE_SPECS)."""


def _workspace_call(action: Callable[[], Result]) -> Result:
    """Refusals of the specs or of the delivery target become one clear line."""
    from hdh_assets.workspaces.specs import SpecError
    from hdh_cli.workspaces import WorkspaceError

    try:
        return action()
    except (WorkspaceError, SpecError) as error:
        raise click.ClickException(str(error)) from None


@workspaces.command("render")
@click.argument("projects", nargs=-1)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the folders.")
@click.option("--json", "as_json", is_flag=True)
def workspaces_render(projects: tuple[str, ...], out: Path | None, as_json: bool) -> None:
    """Render and strictly validate the manifests of live projects (nothing is delivered)."""
    from hdh_cli.workspaces import render

    summary = _workspace_call(lambda: render(list(projects) or None, out))
    if as_json:
        print_json(summary)
    else:
        for project, p in summary["projects"].items():
            state = "[green]valid[/]" if not p["errors"] else f"[red]{len(p['errors'])} errors[/]"
            console.print(f"{project}: {p['objects']} objects, {state}, {p['digest'][:19]}")
            for error in p["errors"][:20]:
                console.print(f"  {error}")
        for refused in summary["refused_specs"]:
            console.print(f"[yellow]refused[/] {refused}")
    sys.exit(0 if summary["valid"] else 1)


@workspaces.command("diff")
@click.option("--json", "as_json", is_flag=True)
def workspaces_diff(as_json: bool) -> None:
    """What apply would change in the delivered manifests, per project and file."""
    from hdh_cli.workspaces import diff

    result = _workspace_call(lambda: diff(platform_home().ensure()))
    if as_json:
        print_json(result)
        return
    if not result["changes"]:
        console.print(f"no change ({result['target']})")
    for project, change in result["changes"].items():
        console.print(f"[bold]{project}[/]: {change['status']}")
        for kind in ("added", "changed", "removed"):
            for name in change.get(kind, []):
                console.print(f"  {kind:8} {name}")


@workspaces.command("apply")
@click.option("--force", is_flag=True, help="Provision every project, changed or not.")
@click.option("--json", "as_json", is_flag=True)
def workspaces_apply(force: bool, as_json: bool) -> None:
    """Provision changed projects and deliver to the target (GitOps repository by default)."""
    from hdh_cli.instance import platform_instance
    from hdh_cli.workspaces import apply

    home = platform_home().ensure()
    result = _workspace_call(lambda: apply(home, platform_instance(home), force=force))
    if as_json:
        print_json(result)
    else:
        delivery = result["delivery"]
        console.print(
            f"provisioned: {', '.join(result['provisioned']) or '-'}; "
            f"delivered to {delivery.get('target')}: {delivery.get('summary')} "
            f"(commit {delivery.get('commit')})"
        )
        for project in result["failed"]:
            console.print(f"[red]failed[/]: {project} (see the run in the Dagster UI)")
        for refused in result["refused_specs"]:
            console.print(f"[yellow]refused[/] {refused}")
    sys.exit(0 if result["success"] else 1)


@workspaces.command("decommission")
@click.argument("project")
@click.option("--json", "as_json", is_flag=True)
def workspaces_decommission(project: str, as_json: bool) -> None:
    """Retire a project whose spec was removed or expired: prune, delete grants, report."""
    from hdh_cli.instance import platform_instance
    from hdh_cli.workspaces import retire

    home = platform_home().ensure()
    result = _workspace_call(lambda: retire(home, platform_instance(home), project))
    if as_json:
        print_json(result)
    else:
        console.print(f"{project}: decommissioned ({result['summary']})")
