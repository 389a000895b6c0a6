"""``hdh sample``: the synthetic sample in the landing zone; its options are the demo's too."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click

from hdh_cli.console import console, platform_home, print_json, progress_bar, table_console

if TYPE_CHECKING:
    from synthetic.sample import SampleConfig

Command = TypeVar("Command", bound=Callable[..., object])


def sample_options(function: Command) -> Command:
    """The sample's size and seed, shared by ``hdh sample`` and ``hdh demo``."""
    for option in reversed(
        [
            click.option("--seed", default=42, show_default=True, help="Same seed, same bytes."),
            click.option("--people", default=40, show_default=True, help="Population size."),
            click.option(
                "--claims-rows",
                default=50_000,
                show_default=True,
                help="Claims events to generate (thousands to hundreds of millions).",
            ),
            click.option(
                "--chunk-rows",
                default=1_000_000,
                show_default=True,
                help="Claims rows per Parquet file; bounds memory.",
            ),
            click.option("--batch", default="", help="Batch name (default sample-seed<SEED>)."),
        ]
    ):
        function = option(function)
    return function


def sample_config(
    seed: int, people: int, claims_rows: int, chunk_rows: int, batch: str
) -> SampleConfig:
    from synthetic.sample import SampleConfig

    return SampleConfig(
        seed=seed, people=people, claims_rows=claims_rows, claims_chunk_rows=chunk_rows, batch=batch
    )


@click.command()
@sample_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def sample(
    seed: int, people: int, claims_rows: int, chunk_rows: int, batch: str, as_json: bool
) -> None:
    """Generate the synthetic sample into HDH_HOME/landing (DICOM, FHIR, claims)."""
    from rich.table import Table

    from synthetic.sample import generate_sample

    home = platform_home().ensure()
    config = sample_config(seed, people, claims_rows, chunk_rows, batch)
    with progress_bar(not as_json) as progress:
        summary = generate_sample(home.landing, home.sample, config, progress)
    if as_json:
        print_json(summary.to_json())
        return
    table = Table(title=f"Synthetic sample '{summary.batch}' (seed {seed})")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("people", str(summary.people))
    table.add_row(
        "DICOM studies / instances", f"{summary.dicom_studies} / {summary.dicom_instances}"
    )
    table.add_row("  with burned-in annotation", str(summary.dicom_burned_in_studies))
    table.add_row("  malformed files", str(summary.dicom_malformed_files))
    for kind, count in summary.fhir_resources.items():
        table.add_row(f"FHIR {kind}", str(count))
    table.add_row("claims rows / files", f"{summary.claims_rows} / {summary.claims_files}")
    table_console.print(table)
    console.print(
        f"Landed under [bold]{home.landing}[/]; identities (tests only): {summary.identities}"
    )
