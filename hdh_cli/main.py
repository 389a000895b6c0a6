"""``hdh``: sample, demo, status, materialize, ingest, products, rights, workspaces, packages, portal,
dicomweb, viewer, spark, deploy, ui.
Every reporting command has ``--json``.

This module is the root group only. Each command group is a thin click module in
``hdh_cli.commands`` over the logic beside it (``hdh_cli.status``, ``hdh_cli.ingest``, ...), and
imports what it needs when it runs: ``hdh --help`` and the read-only commands never load the
code location, Spark or pydicom.
"""

from __future__ import annotations

import click

from hdh_cli.catalog import remember_loaded_definitions
from hdh_cli.commands.demo import demo
from hdh_cli.commands.deploy import deploy
from hdh_cli.commands.dicomweb import dicomweb
from hdh_cli.commands.ingest import ingest
from hdh_cli.commands.materialize import materialize
from hdh_cli.commands.packages import packages
from hdh_cli.commands.portal import portal
from hdh_cli.commands.products import products
from hdh_cli.commands.rights import rights
from hdh_cli.commands.sample import sample
from hdh_cli.commands.spark import spark
from hdh_cli.commands.status import status
from hdh_cli.commands.ui import ui
from hdh_cli.commands.viewer import viewer
from hdh_cli.commands.workspaces import workspaces
from hdh_cli.console import platform_home
from hdh_cli.warning_filters import silence_known_warnings
from package_manager.processes import make_stoppable


@click.group()
@click.version_option(package_name="hdh-platform")
@click.pass_context
def cli(context: click.Context) -> None:
    """Health-data hub platform. Data lives under HDH_HOME (default ./.hdh)."""
    silence_known_warnings()
    make_stoppable()  # what it starts must stop on SIGTERM, even when run as a background job
    # A command that loaded the code location leaves its shape for the read-only ones.
    context.call_on_close(lambda: remember_loaded_definitions(platform_home()))


for command in (
    sample,
    demo,
    status,
    materialize,
    ingest,
    products,
    rights,
    workspaces,
    packages,
    deploy,
    portal,
    dicomweb,
    viewer,
    spark,
    ui,
):
    cli.add_command(command)


if __name__ == "__main__":
    cli()
