"""``hdh ingest``: land a delivery as a batch and ingest it now, then report what happened."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from hdh_cli.console import platform_home, print_json, spinner, table_console


@click.group()
def ingest() -> None:
    """Land a delivery as a batch and ingest it now (the sensors do the same on their own)."""


@ingest.command("dicom")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--batch", help="Batch name (default: the folder or archive name).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def ingest_dicom_command(path: Path, batch: str | None, as_json: bool) -> None:
    """Land PATH (a folder, an archive or a file) under landing/dicom/<batch>/ and ingest it."""
    from hdh_cli.ingest import ingest_dicom
    from hdh_cli.instance import platform_instance

    home = platform_home().ensure()
    with spinner("ingesting DICOM", not as_json):
        summary = ingest_dicom(home, platform_instance(home), path, batch)
    extra = [("studies / series", f"{summary['studies']} / {summary['series']}")]
    report_ingestion(
        summary,
        as_json,
        f"DICOM batch '{summary['batch']}'",
        "files",
        ("landed", "ingested", "duplicates", "quarantined"),
        extra,
    )


@ingest.command("json")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--batch", help="Batch name (default: the folder or archive name).")
@click.option(
    "--provider", help="Provider profile from HDH_PROVIDERS (default: the default profile)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def ingest_json_command(path: Path, batch: str | None, provider: str | None, as_json: bool) -> None:
    """Land PATH (FHIR NDJSON, Bundles) under landing/json/<batch>/ and ingest it."""
    from hdh_assets.clinical.providers import ProviderConfigError
    from hdh_cli.ingest import ingest_json
    from hdh_cli.instance import platform_instance

    home = platform_home().ensure()
    try:
        with spinner("ingesting JSON", not as_json):
            summary = ingest_json(home, platform_instance(home), path, batch, provider)
    except ProviderConfigError as error:
        raise click.UsageError(str(error)) from None
    tables = [
        (f"table {name}", str(rows)) for name, rows in summary["rows_by_table"].items() if rows
    ]
    title = f"JSON batch '{summary['batch']}' (provider {summary['provider']})"
    report_ingestion(
        summary,
        as_json,
        title,
        "records",
        ("files", "records_in", "ingested", "duplicates", "quarantined"),
        tables,
    )


def report_ingestion(
    summary: dict[str, Any],
    as_json: bool,
    title: str,
    unit: str,
    counts: Iterable[str],
    extra: Iterable[tuple[str, str]],
) -> None:
    """The summary of `hdh ingest ...`: JSON for scripts or a table; exit 1 if a run failed."""
    if as_json:
        print_json(summary)
    else:
        from rich.table import Table

        table = Table(title=title)
        table.add_column("what")
        table.add_column(unit, justify="right")
        for name in counts:
            table.add_row(name, str(summary[name]))
        for reason, count in summary["quarantined_by_reason"].items():
            table.add_row(f"  {reason}", str(count))
        for row in extra:
            table.add_row(*row)
        table_console.print(table)
    sys.exit(0 if summary["success"] else 1)
