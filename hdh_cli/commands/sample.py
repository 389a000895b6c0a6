"""``hdh sample``: the synthetic sample in the landing zone; its options are the demo's too."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
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
                help="Claims events to generate (thousands to a billion and more).",
            ),
            click.option(
                "--chunk-rows",
                default=1_000_000,
                show_default=True,
                help="Claims rows per Parquet file at most (files are per month); bounds memory.",
            ),
            click.option("--batch", default="", help="Batch name (default sample-seed<SEED>)."),
        ]
    ):
        function = option(function)
    return function


def sample_config(
    seed: int,
    people: int,
    claims_rows: int,
    chunk_rows: int,
    batch: str,
    claims_months: int | None = None,
) -> SampleConfig:
    from synthetic.sample import SampleConfig

    config = SampleConfig(
        seed=seed, people=people, claims_rows=claims_rows, claims_chunk_rows=chunk_rows, batch=batch
    )
    if claims_months is not None:
        config = replace(config, claims_months=claims_months)
    return config


@click.command()
@sample_options
@click.option(
    "--claims-months",
    default=24,
    show_default=True,
    type=click.IntRange(1, 1200),
    help="Months of claims event dates from 2023-01; the extract has files per month.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def sample(
    seed: int,
    people: int,
    claims_rows: int,
    chunk_rows: int,
    batch: str,
    claims_months: int,
    as_json: bool,
) -> None:
    """Generate the synthetic sample into HDH_HOME/landing (DICOM, FHIR, claims)."""
    from rich.table import Table

    from synthetic.sample import generate_sample

    home = platform_home().ensure()
    config = sample_config(seed, people, claims_rows, chunk_rows, batch, claims_months)
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
