"""``hdh rights``: file GDPR rights requests as the portal does, and the DPO's side of them.

Known refusals (an invalid form, a transition the state machine refuses, an unknown request)
become one clear line, never a stack.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from hdh_cli.console import console, platform_home, print_json, table_console

if TYPE_CHECKING:
    from resources.rights_registry import RightsRegistry

Result = TypeVar("Result")


@click.group()
def rights() -> None:
    """GDPR rights requests: file them as the portal does, and the DPO's side."""


def _registry() -> RightsRegistry:
    from resources.rights_registry import RightsRegistry

    return RightsRegistry.from_env(platform_home().ensure())


def _actor(by: str | None) -> str:
    import getpass

    return by or getpass.getuser()


def _rights_call(action: Callable[[], Result]) -> Result:
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
    request_type: str,
    nir: str,
    family_name: str,
    given_names: str,
    birth_date: str,
    email: str,
    project: str | None,
    free_text: str,
    as_json: bool,
) -> None:
    """File a request exactly as the web form does; print its tracking number and token."""
    from hdh_assets.gdpr.rights import validate_submission
    from resources.pseudonymisation import PseudonymisationKeyResource

    def submit() -> tuple[str, str]:
        kind, identity = validate_submission(
            request_type, family_name, given_names, birth_date, nir, email, free_text
        )
        pseudonym = PseudonymisationKeyResource().pseudonymiser().subject_pseudonym(identity.nir)
        return _registry().submit(kind, identity, pseudonym, free_text, project, actor="cli")

    request_id, token = _rights_call(submit)
    if as_json:
        print_json({"id": request_id, "token": token})
        return
    console.print(f"[green]received[/]: tracking number {request_id}, token {token}")
    console.print("Keep both: the status page asks for them.")


@rights.command("list")
@click.option("--status", "status_filter", default=None, help="Only requests in this state.")
@click.option("--json", "as_json", is_flag=True)
def rights_list(status_filter: str | None, as_json: bool) -> None:
    """Requests by receipt date, with their deadline and urgency (due_soon, overdue)."""
    from rich.table import Table

    from hdh_assets.gdpr.rights import Status

    status = _rights_call(lambda: Status(status_filter)) if status_filter else None
    found = _registry().list(status)
    if as_json:
        print_json({"requests": [r.to_json() for r in found]})
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
def rights_show(request_id: str, as_json: bool) -> None:
    """One request: status, pseudonym, deadline, completion report and audit trail."""
    registry = _registry()
    request = _rights_call(lambda: registry.get(request_id))
    payload = {**request.to_json(), "audit": registry.audit(request_id)}
    if as_json:
        print_json(payload)
        return
    for key in ("id", "type", "status", "subject_pseudonym", "received_at", "deadline", "urgency"):
        console.print(f"{key}: {payload[key]}")
    for entry in payload["audit"]:
        console.print(f"  {entry['at']} {entry['actor']}: {entry['action']}")


@rights.command("verify")
@click.argument("request_id")
@click.option("--by", default=None, help="Who verified the identity (default: your user).")
def rights_verify(request_id: str, by: str | None) -> None:
    """Mark the identity verified: the request becomes processable."""
    request = _rights_call(lambda: _registry().verify(request_id, _actor(by)))
    console.print(f"[green]verified[/]: {request.id} ({request.type.value})")


@rights.command("reject")
@click.argument("request_id")
@click.option("--reason", required=True)
@click.option("--by", default=None)
def rights_reject(request_id: str, reason: str, by: str | None) -> None:
    """Reject a request, with the reason the individual will be told."""
    request = _rights_call(lambda: _registry().reject(request_id, reason, _actor(by)))
    console.print(f"rejected: {request.id}")


@rights.command("extend")
@click.argument("request_id")
@click.option("--reason", required=True)
@click.option("--by", default=None)
def rights_extend(request_id: str, reason: str, by: str | None) -> None:
    """Extend the deadline by two months, once, with a recorded reason."""
    request = _rights_call(lambda: _registry().extend(request_id, reason, _actor(by)))
    console.print(f"extended: {request.id}, new deadline {request.deadline:%Y-%m-%d}")


@rights.command("retry")
@click.argument("request_id")
@click.option("--by", default=None, help="Who sends it back (default: the OS user).")
def rights_retry(request_id: str, by: str | None) -> None:
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
def rights_rectify(
    request_id: str, path: Path, source: str, provider: str | None, by: str | None
) -> None:
    """Attach the corrected source data of a verified rectification; processing replaces the
    person's records of that source with it and rebuilds everything downstream."""
    from hdh_assets.gdpr.service import attach_correction

    home = platform_home().ensure()
    batch = _rights_call(
        lambda: attach_correction(home, _registry(), request_id, source, path, _actor(by), provider)
    )
    console.print(
        f"corrected {source} data landed as batch {batch}; "
        "hdh rights process --wait (or the rights sensor) applies it"
    )


@rights.group("operator")
def rights_operator() -> None:
    """Break-glass local accounts of the DPO's pages (/dpo), used only with HDH_PORTAL_BREAK_GLASS=1."""


@rights_operator.command("add")
@click.argument("username")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (scripts)."
)
@click.option("--by", default=None, help="Who creates the account (default: the OS user).")
def rights_operator_add(username: str, password_stdin: bool, by: str | None) -> None:
    """Create an operator account, or set a new password for an existing one."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    _rights_call(lambda: _registry().add_operator(username, password, _actor(by)))
    console.print(
        f"operator {username} can sign in at /dpo while break-glass is on "
        "(HDH_PORTAL_BREAK_GLASS=1)"
    )


@rights_operator.command("remove")
@click.argument("username")
def rights_operator_remove(username: str) -> None:
    """Remove an operator account; its open sessions end at once."""
    if not _registry().remove_operator(username):
        raise click.ClickException(f"no operator {username}")
    console.print(f"operator {username} removed")


@rights_operator.command("list")
@click.option("--json", "as_json", is_flag=True)
def rights_operator_list(as_json: bool) -> None:
    operators = _registry().operators()
    if as_json:
        print_json({"operators": operators})
        return
    for o in operators:
        console.print(f"{o['username']}  created {o['created_at']} by {o['created_by']}")


@rights.command("process")
@click.option("--wait", is_flag=True, help="Run what processing needs to the end, here.")
@click.option("--json", "as_json", is_flag=True)
def rights_process(wait: bool, as_json: bool) -> None:
    """Process verified requests: exclude, re-materialise, prove, complete (or export, for
    access). With a running daemon the rights sensor launches the runs and --wait waits for
    them; without one, --wait executes the same runs here."""
    from hdh_assets.gdpr.service import pending
    from hdh_cli.catalog import load_definitions
    from hdh_cli.instance import platform_instance
    from hdh_cli.rights import process
    from hdh_cli.runs import daemon_running

    home = platform_home().ensure()
    registry = _registry()
    instance = platform_instance(home)
    if not wait:  # what the rights sensor takes next; the daemon (make ui) runs it
        waiting = pending(registry, home)
        if as_json:
            print_json({"pending": waiting, "daemon_running": daemon_running(instance)})
        else:
            console.print(
                f"{len(waiting)} request(s) waiting: {', '.join(waiting) or '-'}; the daemon of "
                "make ui processes them, or run hdh rights process --wait"
            )
        return
    outcomes = process(lambda: load_definitions(home), instance, registry, home)
    if not as_json:
        for o in outcomes:
            colour = "green" if o.status == "completed" else "red"
            console.print(f"[{colour}]{o.status}[/]: {o.request_id}")
    if as_json:
        print_json(
            {
                "processed": [
                    {"id": o.request_id, "status": o.status, "report": o.report} for o in outcomes
                ]
            }
        )
    sys.exit(0 if all(o.status == "completed" for o in outcomes) else 1)
