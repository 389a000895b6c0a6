"""``hdh materialize``: a selection executed in this process, as one run."""

from __future__ import annotations

import sys

import click

from hdh_cli.console import console, platform_home, print_json


@click.command()
@click.argument("selection")
@click.option("--partition", help="One partition key.")
@click.option("--from", "range_start", help="First partition key of a range (one run).")
@click.option("--to", "range_end", help="Last partition key of a range.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def materialize(
    selection: str,
    partition: str | None,
    range_start: str | None,
    range_end: str | None,
    as_json: bool,
) -> None:
    """Materialise SELECTION in-process, e.g. 'key:claims/events' or 'group:imaging'."""
    from hdh_cli.catalog import load_definitions
    from hdh_cli.instance import platform_instance
    from hdh_cli.runs import SelectionError, execute, selection_request

    if bool(range_start) != bool(range_end):
        raise click.UsageError("--from and --to go together")
    if partition and range_start:
        raise click.UsageError("give --partition or --from/--to, not both")
    home = platform_home().ensure()
    defs = load_definitions(home)
    span = (range_start, range_end) if range_start and range_end else None
    try:
        request = selection_request(defs, selection, partition, span)
    except SelectionError as error:
        raise click.ClickException(str(error)) from None
    outcome = execute(defs, platform_instance(home), request)
    if as_json:
        print_json(outcome.to_json())
    else:
        colour = "green" if outcome.success else "red"
        console.print(
            f"[{colour}]{'succeeded' if outcome.success else 'FAILED'}[/]: run "
            f"{outcome.run_id}, {outcome.materializations} materialisation(s)"
        )
    sys.exit(0 if outcome.success else 1)
