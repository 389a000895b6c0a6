"""``hdh``: sample, demo, status, materialize, ingest, products, ui. Every reporting command has ``--json``."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import click
import dagster as dg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from resources.home import HdhHome

console = Console(stderr=True)
# Tables go to stdout; a pipe or CI log still gets them whole rather than cut at 80 columns.
table_console = Console(width=None if sys.stdout.isatty() else 160)


def _print_json(payload: dict) -> None:
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


@contextmanager
def _progress(enabled: bool):
    """A rich progress bar driven by the generator's (task, advance, total) callbacks."""
    if not enabled:
        yield lambda task, advance, total: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        tasks: dict[str, int] = {}

        def update(task: str, advance: int, total: int | None) -> None:
            if task not in tasks:
                tasks[task] = bar.add_task(task, total=total)
            bar.advance(tasks[task], advance)

        yield update


def _home() -> HdhHome:
    return HdhHome.from_env()


def _definitions(home: HdhHome):
    """The code location, loaded only by the commands that execute runs in this process."""
    from hdh_assets.definitions import build_definitions

    return build_definitions(home)


@click.group()
@click.version_option(package_name="hdh-platform")
def cli() -> None:
    """Health-data hub platform. Data lives under HDH_HOME (default ./.hdh)."""
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", module="pydicom")  # malformed input is reported, not warned
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def sample_options(function):
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


def _sample_config(seed, people, claims_rows, chunk_rows, batch):
    from synthetic.sample import SampleConfig

    return SampleConfig(
        seed=seed, people=people, claims_rows=claims_rows, claims_chunk_rows=chunk_rows, batch=batch
    )


@cli.command()
@sample_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def sample(seed, people, claims_rows, chunk_rows, batch, as_json) -> None:
    """Generate the synthetic sample into HDH_HOME/landing (DICOM, FHIR, claims)."""
    from synthetic.sample import generate_sample

    home = _home().ensure()
    config = _sample_config(seed, people, claims_rows, chunk_rows, batch)
    with _progress(not as_json) as progress:
        summary = generate_sample(home.landing, home.sample, config, progress)
    if as_json:
        _print_json(summary.to_json())
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


def _status_table(status) -> Table:
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


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json) -> None:
    """Assets, partitions, rows in the lake, last materialisation, failing checks."""
    from hdh_assets.definitions import build_definitions
    from hdh_cli.instance import platform_instance
    from hdh_cli.status import collect_status

    home = _home()
    result = collect_status(build_definitions(home), platform_instance(home), home)
    if as_json:
        _print_json(result.to_json())
        return
    table_console.print(_status_table(result))
    console.print(f"Quarantined files: {result.quarantined_files}")
    if result.failing_checks:
        console.print(f"[red]Failing checks: {', '.join(result.failing_checks)}[/]")


@cli.command()
@click.argument("selection")
@click.option("--partition", help="One partition key.")
@click.option("--from", "range_start", help="First partition key of a range (one run).")
@click.option("--to", "range_end", help="Last partition key of a range.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def materialize(selection, partition, range_start, range_end, as_json) -> None:
    """Materialise SELECTION in-process, e.g. 'key:claims/events' or 'group:imaging'."""
    from hdh_cli.instance import platform_instance
    from hdh_cli.runs import execute, selection_request

    if bool(range_start) != bool(range_end):
        raise click.UsageError("--from and --to go together")
    if partition and range_start:
        raise click.UsageError("give --partition or --from/--to, not both")
    home = _home().ensure()
    defs = _definitions(home)
    span = (range_start, range_end) if range_start else None
    request = selection_request(defs, selection, partition, span)
    outcome = execute(defs, platform_instance(home), request)
    if as_json:
        _print_json(outcome.to_json())
    else:
        colour = "green" if outcome.success else "red"
        console.print(
            f"[{colour}]{'succeeded' if outcome.success else 'FAILED'}[/]: run "
            f"{outcome.run_id}, {outcome.materializations} materialisation(s)"
        )
    sys.exit(0 if outcome.success else 1)


@cli.command()
@sample_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def demo(seed, people, claims_rows, chunk_rows, batch, as_json) -> None:
    """The main job: sample into the landing zone, materialise every asset, print a summary."""
    from hdh_cli.demo import run_demo
    from hdh_cli.instance import platform_instance

    home = _home().ensure()
    instance = platform_instance(home)
    config = _sample_config(seed, people, claims_rows, chunk_rows, batch)

    def on_run(outcome) -> None:
        if not as_json:
            mark = "[green]ok[/]" if outcome.success else "[red]FAILED[/]"
            console.print(
                f"  {mark} {outcome.selection} {outcome.partition or ''} "
                f"({outcome.materializations} materialisations)"
            )

    from hdh_cli.demo import DemoRefused

    try:
        with _progress(not as_json) as progress:
            report = run_demo(home, instance, config, progress, on_run)
    except DemoRefused as refused:
        raise click.ClickException(str(refused)) from None
    if as_json:
        _print_json(report.to_json())
    else:
        table_console.print(_status_table(report.status))
        checks = [c for a in report.status.assets for c in a.checks_passed]
        console.print(
            f"Runs: {len(report.runs)} ({sum(not r.success for r in report.runs)} failed); "
            f"checks passed: {len(checks)}, failed: {len(report.status.failing_checks)}; "
            f"quarantined files: {report.status.quarantined_files}"
        )
        if report.workspaces:
            w = report.workspaces
            console.print(
                f"Workspaces provisioned: {', '.join(w['provisioned']) or '-'}; delivered to "
                f"HDH_HOME/gitops: {w['delivery']} (commit {w['commit']})"
            )
        if report.erasure:
            e = report.erasure
            console.print(
                f"Erasure {e['id']} of a sample person: {e['status']} ({len(e['assets'])} assets "
                f"re-materialised in {e['runs']} runs, {e['files_removed']} stored files removed, "
                f"{len(e['raw_copies_removed'])} landed or quarantined files cleaned)"
            )
        console.print("Open the Dagster UI with [bold]make ui[/] (http://127.0.0.1:3000).")
    sys.exit(0 if report.success else 1)


@cli.group()
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

    home = _home().ensure()
    with console.status("ingesting DICOM", spinner="dots") if not as_json else _null():
        summary = ingest_dicom(home, platform_instance(home), path, batch)
    extra = [("studies / series", f"{summary['studies']} / {summary['series']}")]
    _report_ingestion(
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

    home = _home().ensure()
    try:
        with console.status("ingesting JSON", spinner="dots") if not as_json else _null():
            summary = ingest_json(home, platform_instance(home), path, batch, provider)
    except ProviderConfigError as error:
        raise click.UsageError(str(error)) from None
    tables = [
        (f"table {name}", str(rows)) for name, rows in summary["rows_by_table"].items() if rows
    ]
    title = f"JSON batch '{summary['batch']}' (provider {summary['provider']})"
    _report_ingestion(
        summary,
        as_json,
        title,
        "records",
        ("files", "records_in", "ingested", "duplicates", "quarantined"),
        tables,
    )


def _report_ingestion(summary: dict, as_json: bool, title: str, unit: str, counts, extra) -> None:
    """The summary of `hdh ingest ...`: JSON for scripts or a table; exit 1 if a run failed."""
    if as_json:
        _print_json(summary)
    else:
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


@contextmanager
def _null():
    yield


@cli.group()
def products() -> None:
    """Data products: list them, release a materialisation, verify releases."""


@products.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def products_list(as_json) -> None:
    """Every product with its engine, partitioning, declared release and released versions."""
    from hdh_assets.definitions import build_definitions
    from hdh_assets.products.assets import GROUP
    from hdh_assets.products.releases import ReleaseStore

    home = _home()
    graph = build_definitions(home).resolve_asset_graph()
    store = ReleaseStore(home.releases)
    rows = []
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        if node.group_name != GROUP:
            continue
        meta = {k: getattr(v, "value", v) for k, v in node.metadata.items()}
        rows.append(
            {
                "product": key.path[-1],
                "engine": meta.get("engine", "python"),
                "partitioned": node.partitions_def is not None,
                "subject_column": meta.get("subject_column"),
                "aggregate_only": bool(meta.get("aggregate_only")),
                "declared_release": meta.get("release"),
                "released": [r.version for r in store.releases(key.path[-1])],
                "checks": sorted(c.name for c in node.check_keys),
            }
        )
    if as_json:
        _print_json({"products": rows})
        return
    table = Table("product", "engine", "partitioned", "rows are", "declared", "released", "checks")
    for r in rows:
        table.add_row(
            r["product"],
            r["engine"],
            "monthly" if r["partitioned"] else "-",
            "aggregates" if r["aggregate_only"] else (r["subject_column"] or "-"),
            r["declared_release"] or "-",
            ", ".join(r["released"]) or "-",
            str(len(r["checks"])),
        )
    table_console.print(table)


@products.command("release")
@click.argument("name")
@click.argument("version", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def products_release(name, version, as_json) -> None:
    """Freeze the latest materialisation of products/NAME as VERSION (default: its YAML release)."""
    from hdh_assets.definitions import build_definitions
    from hdh_assets.products.publishing import release_product
    from hdh_assets.products.releases import ReleaseError
    from hdh_cli.instance import platform_instance

    home = _home().ensure()
    try:
        graph = build_definitions(home).resolve_asset_graph()
        release = release_product(home, graph, platform_instance(home), name, version)
    except ReleaseError as error:
        raise click.ClickException(str(error)) from None
    manifest = release.manifest
    if as_json:
        _print_json(manifest)
        return
    console.print(
        f"[green]released[/] products/{name} {release.version}: {manifest['rows']} rows in "
        f"{len(manifest['files'])} files, {len(manifest['checks'])} checks passed -> {release.path}"
    )


@products.command("releases")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def products_releases(name, as_json) -> None:
    """Released snapshots (of NAME, or of every product)."""
    from hdh_assets.products.releases import ReleaseStore

    releases = ReleaseStore(_home().releases).releases(name)
    payload = [
        {
            "product": r.product,
            "version": r.version,
            "rows": r.manifest["rows"],
            "released_at": r.manifest["released_at"],
            "code_version": r.manifest["code_version"],
            "path": str(r.path),
        }
        for r in releases
    ]
    if as_json:
        _print_json({"releases": payload})
        return
    table = Table("product", "version", "rows", "released at", "code version")
    for r in payload:
        table.add_row(
            r["product"], r["version"], str(r["rows"]), r["released_at"], r["code_version"] or "-"
        )
    table_console.print(table)


@products.command("verify")
@click.argument("name")
@click.argument("version")
def products_verify(name, version) -> None:
    """Check that a released snapshot is still exactly what its manifest lists."""
    from hdh_assets.products.releases import ReleaseError, ReleaseStore

    try:
        problems = ReleaseStore(_home().releases).verify(name, version)
    except ReleaseError as error:
        raise click.ClickException(str(error)) from None
    if problems:
        raise click.ClickException(f"products/{name} {version} was altered: {'; '.join(problems)}")
    console.print(f"[green]intact[/]: products/{name} {version}")


@products.command("delete")
@click.argument("name")
@click.argument("version")
def products_delete(name, version) -> None:
    """Refused: released snapshots are immutable (listed so that the refusal is explicit)."""
    from hdh_assets.products.releases import ReleaseError, ReleaseStore

    try:
        ReleaseStore(_home().releases).delete(name, version)
    except ReleaseError as error:
        raise click.ClickException(str(error)) from None


@cli.group()
def rights() -> None:
    """GDPR rights requests: file them as the portal does, and the DPO's side."""


def _registry():
    from resources.rights_registry import RightsRegistry

    return RightsRegistry.from_env(_home().ensure())


def _actor(by: str | None) -> str:
    import getpass

    return by or getpass.getuser()


def _rights_call(action):
    """Run a registry action; known refusals become one clear line, never a stack."""
    from hdh_assets.gdpr.rights import InvalidRequest, TransitionRefused
    from resources.rights_registry import UnknownRequest

    try:
        return action()
    except InvalidRequest as error:
        raise click.ClickException(
            "invalid request: " + "; ".join(f"{f}: {m}" for f, m in error.errors.items())
        ) from None
    except (TransitionRefused, UnknownRequest, ValueError) as error:
        raise click.ClickException(str(error)) from None


@rights.command("submit")
@click.option(
    "--type",
    "request_type",
    required=True,
    type=click.Choice(["objection", "erasure", "access", "rectification", "restriction"]),
)
@click.option("--nir", required=True, help="Social security number, 15 characters with its key.")
@click.option("--family-name", required=True)
@click.option("--given-names", required=True)
@click.option("--birth-date", required=True, help="YYYY-MM-DD")
@click.option("--email", required=True)
@click.option("--project", default=None, help="Limit the request to one project.")
@click.option("--text", "free_text", default="", help="Free text for the DPO.")
@click.option("--json", "as_json", is_flag=True, help='Print {"id": ..., "token": ...}.')
def rights_submit(
    request_type, nir, family_name, given_names, birth_date, email, project, free_text, as_json
):
    """File a request exactly as the web form does; print its tracking number and token."""
    from hdh_assets.gdpr.rights import validate_submission
    from resources.pseudonymisation import PseudonymisationKeyResource

    def submit():
        kind, identity = validate_submission(
            request_type, family_name, given_names, birth_date, nir, email, free_text
        )
        pseudonym = PseudonymisationKeyResource().pseudonymiser().subject_pseudonym(identity.nir)
        return _registry().submit(kind, identity, pseudonym, free_text, project, actor="cli")

    request_id, token = _rights_call(submit)
    if as_json:
        _print_json({"id": request_id, "token": token})
        return
    console.print(f"[green]received[/]: tracking number {request_id}, token {token}")
    console.print("Keep both: the status page asks for them.")


@rights.command("list")
@click.option("--status", "status_filter", default=None, help="Only requests in this state.")
@click.option("--json", "as_json", is_flag=True)
def rights_list(status_filter, as_json):
    """Requests by receipt date, with their deadline and urgency (due_soon, overdue)."""
    from hdh_assets.gdpr.rights import Status

    status = _rights_call(lambda: Status(status_filter)) if status_filter else None
    found = _registry().list(status)
    if as_json:
        _print_json({"requests": [r.to_json() for r in found]})
        return
    table = Table("id", "type", "status", "received", "deadline", "urgency", "subject")
    for r in found:
        table.add_row(
            r.id,
            r.type.value,
            r.status.value,
            f"{r.received_at:%Y-%m-%d}",
            f"{r.deadline:%Y-%m-%d}",
            r.urgency() or "-",
            r.subject_pseudonym[:12] + "...",
        )
    table_console.print(table)


@rights.command("show")
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True)
def rights_show(request_id, as_json):
    """One request: status, pseudonym, deadline, completion report and audit trail."""
    registry = _registry()
    request = _rights_call(lambda: registry.get(request_id))
    payload = {**request.to_json(), "audit": registry.audit(request_id)}
    if as_json:
        _print_json(payload)
        return
    for key in ("id", "type", "status", "subject_pseudonym", "received_at", "deadline", "urgency"):
        console.print(f"{key}: {payload[key]}")
    for entry in payload["audit"]:
        console.print(f"  {entry['at']} {entry['actor']}: {entry['action']}")


@rights.command("verify")
@click.argument("request_id")
@click.option("--by", default=None, help="Who verified the identity (default: your user).")
def rights_verify(request_id, by):
    """Mark the identity verified: the request becomes processable."""
    request = _rights_call(lambda: _registry().verify(request_id, _actor(by)))
    console.print(f"[green]verified[/]: {request.id} ({request.type.value})")


@rights.command("reject")
@click.argument("request_id")
@click.option("--reason", required=True)
@click.option("--by", default=None)
def rights_reject(request_id, reason, by):
    """Reject a request, with the reason the individual will be told."""
    request = _rights_call(lambda: _registry().reject(request_id, reason, _actor(by)))
    console.print(f"rejected: {request.id}")


@rights.command("extend")
@click.argument("request_id")
@click.option("--reason", required=True)
@click.option("--by", default=None)
def rights_extend(request_id, reason, by):
    """Extend the deadline by two months, once, with a recorded reason."""
    request = _rights_call(lambda: _registry().extend(request_id, reason, _actor(by)))
    console.print(f"extended: {request.id}, new deadline {request.deadline:%Y-%m-%d}")


@rights.command("retry")
@click.argument("request_id")
@click.option("--by", default=None, help="Who sends it back (default: the OS user).")
def rights_retry(request_id, by):
    """Send a failed request back to verified, once its cause is fixed; processing retakes it."""
    request = _rights_call(lambda: _registry().retry(request_id, _actor(by)))
    console.print(f"{request.id}: {request.status.value}; hdh rights process --wait retakes it")


@rights.command("rectify")
@click.argument("request_id")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--source", required=True, type=click.Choice(["dicom", "json", "claims"]), help="Its source."
)
@click.option("--provider", default=None, help="JSON provider profile of the corrected data.")
@click.option("--by", default=None, help="Who attaches it (default: the OS user).")
def rights_rectify(request_id, path, source, provider, by):
    """Attach the corrected source data of a verified rectification; processing replaces the
    person's records of that source with it and rebuilds everything downstream."""
    from hdh_assets.gdpr.service import attach_correction

    home = _home().ensure()
    batch = _rights_call(
        lambda: attach_correction(home, _registry(), request_id, source, path, _actor(by), provider)
    )
    console.print(
        f"corrected {source} data landed as batch {batch}; "
        "hdh rights process --wait (or the rights sensor) applies it"
    )


@rights.group("operator")
def rights_operator() -> None:
    """Local accounts of the DPO's web pages (http://127.0.0.1:3001/dpo)."""


@rights_operator.command("add")
@click.argument("username")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (scripts)."
)
@click.option("--by", default=None, help="Who creates the account (default: the OS user).")
def rights_operator_add(username, password_stdin, by):
    """Create an operator account, or set a new password for an existing one."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    _rights_call(lambda: _registry().add_operator(username, password, _actor(by)))
    console.print(f"operator {username} can sign in at /dpo")


@rights_operator.command("remove")
@click.argument("username")
def rights_operator_remove(username):
    """Remove an operator account; its open sessions end at once."""
    if not _registry().remove_operator(username):
        raise click.ClickException(f"no operator {username}")
    console.print(f"operator {username} removed")


@rights_operator.command("list")
@click.option("--json", "as_json", is_flag=True)
def rights_operator_list(as_json):
    operators = _registry().operators()
    if as_json:
        _print_json({"operators": operators})
        return
    for o in operators:
        console.print(f"{o['username']}  created {o['created_at']} by {o['created_by']}")


@rights.command("process")
@click.option("--wait", is_flag=True, help="Run what processing needs to the end, here.")
@click.option("--json", "as_json", is_flag=True)
def rights_process(wait, as_json):
    """Process verified requests: exclude, re-materialise, prove, complete (or export, for
    access). With a running daemon the rights sensor launches the runs and --wait waits for
    them; without one, --wait executes the same runs here."""
    from hdh_assets.gdpr.service import pending
    from hdh_cli.instance import platform_instance
    from hdh_cli.rights import process
    from hdh_cli.runs import daemon_running

    home = _home().ensure()
    registry = _registry()
    instance = platform_instance(home)
    if not wait:  # what the rights sensor takes next; the daemon (make ui) runs it
        waiting = pending(registry, home)
        if as_json:
            _print_json({"pending": waiting, "daemon_running": daemon_running(instance)})
        else:
            console.print(
                f"{len(waiting)} request(s) waiting: {', '.join(waiting) or '-'}; the daemon of "
                "make ui processes them, or run hdh rights process --wait"
            )
        return
    outcomes = process(lambda: _definitions(home), instance, registry, home)
    if not as_json:
        for o in outcomes:
            colour = "green" if o.status == "completed" else "red"
            console.print(f"[{colour}]{o.status}[/]: {o.request_id}")
    if as_json:
        _print_json(
            {
                "processed": [
                    {"id": o.request_id, "status": o.status, "report": o.report} for o in outcomes
                ]
            }
        )
    sys.exit(0 if all(o.status == "completed" for o in outcomes) else 1)


@cli.group()
def workspaces() -> None:
    """Research-project workspaces: specs in workspaces/projects/ (HDH_WORKSPACE_SPECS)."""


def _workspace_call(action):
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
def workspaces_render(projects, out, as_json):
    """Render and strictly validate the manifests of live projects (nothing is delivered)."""
    from hdh_cli.workspaces import render

    summary = _workspace_call(lambda: render(list(projects) or None, out))
    if as_json:
        _print_json(summary)
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
def workspaces_diff(as_json):
    """What apply would change in the delivered manifests, per project and file."""
    from hdh_cli.workspaces import diff

    result = _workspace_call(lambda: diff(_home().ensure()))
    if as_json:
        _print_json(result)
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
def workspaces_apply(force, as_json):
    """Provision changed projects and deliver to the target (GitOps repository by default)."""
    from hdh_cli.instance import platform_instance
    from hdh_cli.workspaces import apply

    home = _home().ensure()
    result = _workspace_call(lambda: apply(home, platform_instance(home), force=force))
    if as_json:
        _print_json(result)
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
def workspaces_decommission(project, as_json):
    """Retire a project whose spec was removed or expired: prune, delete grants, report."""
    from hdh_cli.instance import platform_instance
    from hdh_cli.workspaces import retire

    home = _home().ensure()
    result = _workspace_call(lambda: retire(home, platform_instance(home), project))
    if as_json:
        _print_json(result)
    else:
        console.print(f"{project}: decommissioned ({result['summary']})")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3001, show_default=True)
def portal(host, port) -> None:
    """The individuals' rights portal (form and status page), French and English."""
    import uvicorn

    from portal.app import app_from_env

    home = _home().ensure()
    console.print(f"Rights portal on http://{host}:{port}/fr/request (HDH_HOME={home.root})")
    # Access logs hold method and path only: every form is posted, so no identifier is in them.
    uvicorn.run(app_from_env(home), host=host, port=port, log_level="info")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True)
@click.option("--portal-port", default=3001, show_default=True, help="0: no portal.")
def ui(host, port, portal_port) -> None:
    """Dagster webserver and daemon (sensors, schedules) and the rights portal beside them."""
    import subprocess

    from hdh_cli.instance import prepare_dagster_home

    home = _home().ensure()
    if portal_port:
        # The portal stays in this process group, so stopping the group stops both servers.
        hdh = os.path.join(os.path.dirname(sys.executable), "hdh")
        subprocess.Popen([hdh, "portal", "--host", host, "--port", str(portal_port)])
        console.print(f"Rights portal on http://{host}:{portal_port}/fr/request")
    prepare_dagster_home(home)
    workspace = os.path.join(os.path.dirname(os.path.dirname(__file__)), "workspace.yaml")
    command = [
        os.path.join(os.path.dirname(sys.executable), "dagster"),
        "dev",
        "-h",
        host,
        "-p",
        str(port),
        "-w",
        workspace,
    ]
    console.print(f"Dagster UI on http://{host}:{port} (HDH_HOME={home.root})")
    # Replace this process, so the caller (make, a test) holds the pid of the server itself.
    os.execv(command[0], command)


if __name__ == "__main__":
    cli()
