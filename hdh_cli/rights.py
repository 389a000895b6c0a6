"""``hdh rights process``: a client of the rights sensor's state machine.

With a Dagster daemon beating against the instance, the sensor launches the runs and this
waits for the requests to finish. Without one, this process executes the very run requests the
sensor would launch, step by step, until each request is completed or failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from hdh_assets.gdpr.rights import Status
from hdh_assets.gdpr.service import pending
from hdh_assets.gdpr.steps import REQUEST_TAG, advance
from hdh_cli.runs import RunOutcome, cancel_orphans, daemon_running, execute, wait_for
from resources.home import HdhHome
from resources.rights_registry import RightsRegistry

FINAL = {Status.COMPLETED, Status.FAILED, Status.REJECTED}
DAEMON_TIMEOUT_SECONDS = 3600


@dataclass
class Outcome:
    request_id: str
    status: str
    report: dict = field(default_factory=dict)
    runs: list[RunOutcome] = field(default_factory=list)


def _outcome(registry: RightsRegistry, request_id: str, runs=()) -> Outcome:
    request = registry.get(request_id)
    report = {}
    for entry in reversed(registry.audit(request_id)):
        detail = entry["detail"] or {}
        if entry["action"] in ("completed", "failed") and detail:
            report = {**(detail.get("report") or {}), "reason": detail.get("reason")}
            report = {k: v for k, v in report.items() if v is not None}
            break
    return Outcome(request_id, request.status.value, report, list(runs))


def process_here(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    registry: RightsRegistry,
    request_id: str,
    on_run: Callable[[RunOutcome], None] = lambda outcome: None,
) -> Outcome:
    """Execute, in this process, every run the rights sensor would launch for the request."""
    graph = defs.resolve_asset_graph()
    cancel_orphans(instance, {REQUEST_TAG: request_id})  # an earlier hdh killed mid-run
    runs: list[RunOutcome] = []
    while steps := advance(instance, graph, registry, request_id):
        for step in steps:
            outcome = execute(defs, instance, step.run_request)
            runs.append(outcome)
            on_run(outcome)
    return _outcome(registry, request_id, runs)


def process(
    defs_loader: Callable[[], dg.Definitions],
    instance: dg.DagsterInstance,
    registry: RightsRegistry,
    home: HdhHome,
    on_run: Callable[[RunOutcome], None] = lambda outcome: None,
    timeout: float = DAEMON_TIMEOUT_SECONDS,
) -> list[Outcome]:
    """Every pending request to the end: through the daemon when one runs, here otherwise."""
    waiting = pending(registry, home)
    if daemon_running(instance):
        wait_for(lambda: all(registry.get(r).status in FINAL for r in waiting), timeout)
        return [_outcome(registry, r) for r in waiting]
    defs = defs_loader()
    return [process_here(defs, instance, registry, r, on_run) for r in waiting]
