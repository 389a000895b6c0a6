"""``hdh viewer``: the OHIF viewer for one project (or, for operators, every study), served with
a same-origin proxy to the DICOMweb service that adds the project's token server-side."""

from __future__ import annotations

import click

from hdh_cli.console import console, platform_home


@click.command()
@click.option("--project", default=None, help="The project whose studies the viewer shows.")
@click.option("--all", "all_studies", is_flag=True, help="Every study (for operators).")
@click.option(
    "--sign-in",
    "sign_in",
    is_flag=True,
    help="People sign in at the provider and see what their own groups grant (no token here).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3003, show_default=True)
@click.option(
    "--dicomweb-url",
    default="http://127.0.0.1:3002/dicom-web",
    show_default=True,
    help="The DICOMweb service's root, as this server reaches it.",
)
def viewer(
    project: str | None,
    all_studies: bool,
    sign_in: bool,
    host: str,
    port: int,
    dicomweb_url: str,
) -> None:
    """The OHIF viewer on the pseudonymised images, reading through the DICOMweb service."""
    if sum((all_studies, project is not None, sign_in)) != 1:
        raise click.UsageError("give one of --project P, --all or --sign-in")
    from hdh_cli.commands.dicomweb import known_project

    if project is not None and not known_project(project):
        raise click.ClickException(f"unknown project '{project}': no workspace and no spec")
    from viewer.server import serve

    home = platform_home().ensure()
    if sign_in:
        scope = "each person's own studies, after sign-in"
    else:
        scope = "all studies" if project is None else f"project {project}"
    console.print(f"Viewer on http://{host}:{port} ({scope}, data from {dicomweb_url})")
    try:
        serve(home, project, host=host, port=port, dicomweb_url=dicomweb_url, sign_in=sign_in)
    except FileNotFoundError as error:
        raise click.ClickException(str(error)) from None
