"""``hdh demo``: the main job, from an empty HDH_HOME to a summary of everything it built."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from hdh_cli.commands.sample import sample_config, sample_options
from hdh_cli.commands.status import status_table
from hdh_cli.console import console, platform_home, print_json, progress_bar, table_console

if TYPE_CHECKING:
    from hdh_cli.runs import RunOutcome


@click.command()
@sample_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def demo(
    seed: int, people: int, claims_rows: int, chunk_rows: int, batch: str, as_json: bool
) -> None:
    """The main job: sample into the landing zone, materialise every asset, print a summary."""
    from hdh_cli.demo import DemoRefused, run_demo
    from hdh_cli.instance import platform_instance

    home = platform_home().ensure()
    instance = platform_instance(home)
    config = sample_config(seed, people, claims_rows, chunk_rows, batch)

    def on_run(outcome: RunOutcome) -> None:
        if not as_json:
            mark = "[green]ok[/]" if outcome.success else "[red]FAILED[/]"
            console.print(
                f"  {mark} {outcome.selection} {outcome.partition or ''} "
                f"({outcome.materializations} materialisations)"
            )

    try:
        with progress_bar(not as_json) as progress:
            report = run_demo(home, instance, config, progress, on_run)
    except DemoRefused as refused:
        raise click.ClickException(str(refused)) from None
    if as_json:
        print_json(report.to_json())
    else:
        table_console.print(status_table(report.status))
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
        if report.packages:
            for project, p in report.packages["projects"].items():
                approved = sum(len(names) for names in p["approved"].values())
                counts = {}
                for status in report.packages["requests"].values():
                    counts[status] = counts.get(status, 0) + 1
                console.print(
                    f"Packages of {project}: {approved} approved "
                    f"(requests: {', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}); "
                    f"pip index {p['python_index']}, R repository {p['r_repository']} "
                    "(served by make ui or hdh packages serve; hdh packages list shows why)"
                )
        if report.erasure:
            e = report.erasure
            console.print(
                f"Erasure {e['id']} of a sample person: {e['status']} ({len(e['assets'])} assets "
                f"re-materialised in {e['runs']} runs, {e['files_removed']} stored files removed, "
                f"{len(e['raw_copies_removed'])} landed or quarantined files cleaned, "
                f"{e['studies_no_longer_served']} studies no longer served to viewers)"
            )
        console.print(
            "Open the Dagster UI with [bold]make ui[/] (http://127.0.0.1:3080/dagster/, signed in "
            "with a demo account it prints)."
        )
        if report.viewer:
            v = report.viewer
            who = f"as {v['sign_in_as']}, " if v["sign_in_as"] else "as a member, "
            console.print(
                f"Then project {v['project']}'s images ({v['studies']} studies) in the viewer at "
                f"{v['url']}: sign in {who}one study at {v['study']}"
            )
    sys.exit(0 if report.success else 1)
