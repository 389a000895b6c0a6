"""``hdh status``: read-only, from the asset catalog and the instance; the code location stays
unloaded while its snapshot is current."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from hdh_cli.console import console, platform_home, print_json, table_console

if TYPE_CHECKING:
    from rich.table import Table

    from hdh_cli.status import PlatformStatus


def status_table(status: PlatformStatus) -> Table:
    """One row per asset; the demo prints the same table at its end."""
    from rich.table import Table

    table = Table(title=f"Assets under {status.home}")
    for column in ("asset", "group", "rows", "partitions", "last materialised", "checks"):
        table.add_column(column, justify="right" if column in ("rows", "partitions") else "left")
    for item in status.assets:
        partitions = (
            f"{item.partitions_materialized}/{item.partitions_total}"
            if item.partitions_total is not None
            else "-"
        )
        checks = (
            ", ".join(
                [f"[green]{c} ok[/]" for c in item.checks_passed]
                + [f"[red]{c} FAILED[/]" for c in item.checks_failed]
                + [f"[yellow]{c} warn[/]" for c in item.checks_warned]
                + [f"[dim]{c} not run[/]" for c in item.checks_not_run]
            )
            or "-"
        )
        last = (item.last_materialization or "never").replace("T", " ")[:16]
        table.add_row(item.asset, item.group, f"{item.rows:,}", partitions, last, checks)
    return table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json: bool) -> None:
    """Assets, partitions, rows in the lake, last materialisation, failing checks."""
    from hdh_cli.catalog import asset_catalog
    from hdh_cli.instance import platform_instance
    from hdh_cli.status import catalog_status

    home = platform_home()
    result = catalog_status(asset_catalog(home), platform_instance(home), home)
    if as_json:
        print_json(result.to_json())
        return
    table_console.print(status_table(result))
    console.print(f"Quarantined files: {result.quarantined_files}")
    if result.failing_checks:
        console.print(f"[red]Failing checks: {', '.join(result.failing_checks)}[/]")
