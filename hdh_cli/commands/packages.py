"""``hdh packages``: request, list, show, approve, refuse, revet and serve project packages."""

from __future__ import annotations

import sys

import click

from hdh_cli.console import console, platform_home, print_json

STATUS_COLOURS = {"approved": "green", "needs_review": "yellow", "refused": "red", "pending": "dim"}


@click.group()
def packages() -> None:
    """Python and R packages for research projects: requested, vetted, served per project."""


def _print_runs(processed, as_json: bool) -> None:
    if as_json:
        return
    if processed.left_to_daemon:
        console.print("The daemon runs: package_requests_sensor vets it within a minute.")
    for outcome in processed.runs:
        mark = "[green]ok[/]" if outcome.success else "[red]FAILED[/]"
        console.print(f"  {mark} {outcome.selection} {outcome.partition}")


def _instance(home):
    from hdh_cli.instance import platform_instance

    return platform_instance(home)


@packages.command("request")
@click.argument("project")
@click.argument("requirement", metavar="NAME[==VERSION]")
@click.option("--ecosystem", type=click.Choice(["pypi", "cran"]), default="pypi", show_default=True)
@click.option(
    "--reason", required=True, help="What the project needs it for (the referents read it)."
)
@click.option("--by", "requested_by", default=None, help="The member asking (default: $USER).")
@click.option("--json", "as_json", is_flag=True)
def request(
    project: str,
    requirement: str,
    ecosystem: str,
    reason: str,
    requested_by: str | None,
    as_json: bool,
) -> None:
    """File a request, then resolve and vet it here unless the daemon runs."""
    import getpass

    from hdh_cli.packages import process_here
    from package_manager import service
    from package_manager.requests import RequestError, file_request, make_request

    home = platform_home().ensure()
    try:
        filed = make_request(
            project,
            requirement,
            ecosystem=ecosystem,
            reason=reason,
            requested_by=requested_by or getpass.getuser(),
        )
    except RequestError as refused:
        raise click.ClickException(str(refused)) from None
    file_request(filed, service.package_store(home).filed_requests)
    processed = process_here(home, _instance(home), [filed.request_id])
    vetting = service.package_store(home).vetting(filed.request_id)
    status = vetting.status if vetting else "pending"
    if as_json:
        print_json(
            {
                "request_id": filed.request_id,
                "status": status,
                "runs": [r.to_json() for r in processed.runs],
            }
        )
    else:
        console.print(f"Request {filed.request_id}: [{STATUS_COLOURS[status]}]{status}[/]")
        _print_runs(processed, as_json)
        if vetting and vetting.reason:
            console.print(f"  reason: {vetting.reason}")
    sys.exit(0 if all(r.success for r in processed.runs) else 1)


@packages.command("list")
@click.option("--project", default=None, help="Only this project's requests.")
@click.option(
    "--status", type=click.Choice(["approved", "needs_review", "refused", "pending"]), default=None
)
@click.option("--json", "as_json", is_flag=True)
def list_packages(project: str | None, status: str | None, as_json: bool) -> None:
    """One line per package of each request's closure, with its status and reasons."""
    from package_manager import service

    rows = [
        r
        for r in service.package_rows(platform_home())
        if (project is None or r["project"] == project)
        and (status is None or r["status"] == status)
    ]
    if as_json:
        print_json({"packages": rows})
        return
    from rich.table import Table

    table = Table("project", "ecosystem", "package", "version", "status", "reasons")
    for r in rows:
        colour = STATUS_COLOURS.get(r["status"], "white")
        table.add_row(
            r["project"],
            r["ecosystem"],
            r["name"],
            r["version"] or "",
            f"[{colour}]{r['status']}[/]",
            "; ".join(r["reasons"])[:120],
        )
    console.print(table)


@packages.command("show")
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True)
def show(request_id: str, as_json: bool) -> None:
    """A request with its closure and every check's evidence."""
    from package_manager import service

    home = platform_home()
    try:
        filed = service.request_of(home, request_id)
    except LookupError as missing:
        raise click.ClickException(str(missing)) from None
    store = service.package_store(home)
    closure, vetting = store.closure(request_id), store.vetting(request_id)
    payload = {
        "request": filed.to_json(),
        "closure": closure.to_json() if closure else None,
        "vetting": vetting.to_json() if vetting else None,
    }
    if as_json:
        print_json(payload)
        return
    console.print(f"[bold]{request_id}[/]: {filed.reason} (asked by {filed.requested_by})")
    if vetting is None:
        console.print("  not vetted yet")
        return
    console.print(
        f"  status: [{STATUS_COLOURS[vetting.status]}]{vetting.status}[/] {vetting.reason or ''}"
    )
    for v in vetting.verdicts:
        console.print(
            f"  {v.package.name} {v.package.version} [{STATUS_COLOURS[v.status]}]{v.status}[/] sha256 {v.package.sha256[:16]}"
        )
        for c in v.checks:
            console.print(f"    {c.check}: {c.status} {'; '.join(c.reasons)}")


def _decide(
    name: str,
    version: str,
    ecosystem: str,
    reason: str,
    by: str | None,
    decision: str,
    as_json: bool,
):
    import getpass

    from hdh_cli.packages import process_here
    from package_manager import service
    from package_manager.decisions import DecisionError

    home = platform_home().ensure()
    try:
        decided = service.decide(
            home,
            ecosystem=ecosystem,
            name=name,
            version=version,
            decision=decision,
            reason=reason,
            decided_by=by or getpass.getuser(),
        )
    except (DecisionError, LookupError) as refused:
        raise click.ClickException(str(refused)) from None
    touched = sorted(service.requests_touched_by(home, decided))
    processed = process_here(home, _instance(home), touched, revet=True)
    if as_json:
        print_json(
            {
                "decisions": len(decided),
                "requests": touched,
                "runs": [r.to_json() for r in processed.runs],
            }
        )
    else:
        console.print(
            f"{decision}d {name} {version} ({len(decided)} file(s)); requests vetted again: {', '.join(touched) or '-'}"
        )
        _print_runs(processed, as_json)
    sys.exit(0 if all(r.success for r in processed.runs) else 1)


def _decision_command(decision: str):
    @click.argument("name")
    @click.argument("version")
    @click.option(
        "--ecosystem", type=click.Choice(["pypi", "cran"]), default="pypi", show_default=True
    )
    @click.option("--reason", required=True, help="Why (recorded in the audit trail).")
    @click.option("--by", default=None, help="The referent deciding (default: $USER).")
    @click.option("--json", "as_json", is_flag=True)
    def command(
        name: str, version: str, ecosystem: str, reason: str, by: str | None, as_json: bool
    ):
        _decide(name, version, ecosystem, reason, by, decision, as_json)

    command.__doc__ = (
        f"A referent's decision to {decision} a package that waits for review (audited)."
    )
    return command


packages.command("approve")(_decision_command("approve"))
packages.command("refuse")(_decision_command("refuse"))


@packages.command("revet")
@click.argument("request_ids", nargs=-1)
@click.option("--json", "as_json", is_flag=True)
def revet(request_ids: tuple[str, ...], as_json: bool) -> None:
    """Run every check again (all requests unless some are named), e.g. after the vulnerability
    database changed."""
    from hdh_cli.packages import process_here
    from package_manager import service

    home = platform_home().ensure()
    wanted = list(request_ids) or sorted(service.package_store(home).vettings())
    processed = process_here(home, _instance(home), wanted, revet=True, recheck=True)
    if as_json:
        print_json({"requests": wanted, "runs": [r.to_json() for r in processed.runs]})
    else:
        _print_runs(processed, as_json)
    sys.exit(0 if all(r.success for r in processed.runs) else 1)


@packages.command("serve")
@click.option("--json", "as_json", is_flag=True)
def serve(as_json: bool) -> None:
    """Start every project's Python index (devpi) and R repository; stop with Ctrl-C."""
    from hdh_cli.packages import serving, wait_for_interrupt

    with serving(platform_home().ensure()) as urls:
        if as_json:
            print_json({"projects": urls})
        else:
            for project, u in urls.items():
                console.print(
                    f"{project}: pip index [bold]{u['python_index']}[/], R repository "
                    f"[bold]{u['r_repository']}[/] ({u['approved']} approved packages)"
                )
            console.print("Serving; Ctrl-C stops.")
        sys.stdout.flush()
        wait_for_interrupt()
