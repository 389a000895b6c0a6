"""The command line as a client of the code location: execute the run requests that the
sensors and automation conditions would launch, in this process, or leave them to the daemon.

Both paths start from the same ``dg.RunRequest`` objects (asset selection, partition key or
range tags, run tags), so they produce the same runs.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import time
from dataclasses import dataclass

import dagster as dg

from hdh_assets.automation import RANGE_END_TAG, RANGE_START_TAG, requested_by, run_groups

RUN_KEY_TAG = "dagster/run_key"
LAUNCHED_BY_TAG = "hdh/launched_by"
CLI_PROCESS_TAG = "hdh/cli_process"  # host:pid of the hdh process executing the run
AUTOMATION_TAG = "hdh/automation"  # a run requested by the automation conditions
DAEMON_FRESH_SECONDS = 60


@dataclass
class RunOutcome:
    selection: str
    partition: str | None
    run_id: str
    success: bool
    materializations: int
    checks_failed: list[str]

    def to_json(self) -> dict:
        return self.__dict__.copy()


def _selection_text(request: dg.RunRequest) -> str:
    keys = sorted(k.to_user_string() for k in request.asset_selection or [])
    if keys:
        return " or ".join(f'key:"{k}"' for k in keys)
    return "checks: " + ", ".join(sorted(k.to_user_string() for k in request.asset_check_keys))


def execute(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    request: dg.RunRequest,
    log_level: str = "WARNING",
) -> RunOutcome:
    """Execute one run request in this process, against the platform's instance."""
    job = defs.get_repository_def().get_implicit_global_asset_job_def()
    if request.asset_selection:
        job = job.get_subset(asset_selection=set(request.asset_selection))
    else:
        job = job.get_subset(
            asset_selection=set(), asset_check_selection=set(request.asset_check_keys)
        )
    tags = {
        LAUNCHED_BY_TAG: "hdh-cli",
        CLI_PROCESS_TAG: f"{socket.gethostname()}:{os.getpid()}",
        **request.tags,
    }
    if request.run_key:
        tags[RUN_KEY_TAG] = request.run_key
    result = job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=tags,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
    )
    failed_checks = [
        f"{e.asset_key.to_user_string()}:{e.check_name}"
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    ]
    partition = request.partition_key
    if RANGE_START_TAG in tags:
        partition = f"{tags[RANGE_START_TAG]}..{tags[RANGE_END_TAG]}"
    return RunOutcome(
        selection=_selection_text(request),
        partition=partition,
        run_id=result.run_id,
        success=result.success,
        materializations=len(result.get_asset_materialization_events()),
        checks_failed=failed_checks,
    )


class SelectionError(ValueError):
    """A selection that matches no asset: running it would report success for nothing."""


def selection_request(
    defs: dg.Definitions,
    selection: str,
    partition: str | None = None,
    span: tuple[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> dg.RunRequest:
    """A run request for a Dagster selection string (``key:claims/events``, ``group:imaging``),
    one partition or a range of partitions (one run). Refuses a selection that matches nothing."""
    from dagster._core.definitions.asset_selection import DagsterInvalidAssetSelectionError

    graph = defs.resolve_asset_graph()
    try:
        keys = dg.AssetSelection.from_string(selection).resolve(graph)
    except DagsterInvalidAssetSelectionError:
        raise SelectionError(
            f"the selection {selection!r} cannot be parsed; write e.g. 'key:claims/events', "
            "'group:imaging' or 'key:\"claims/*\"'"
        ) from None
    if not keys:
        names = sorted(k.to_user_string() for k in graph.get_all_asset_keys())
        groups = sorted({graph.get(k).group_name or "default" for k in graph.get_all_asset_keys()})
        raise SelectionError(no_match_message(selection, names, groups))
    tags = dict(tags or {})
    if span:
        tags.update({RANGE_START_TAG: span[0], RANGE_END_TAG: span[1]})
    return dg.RunRequest(
        asset_selection=sorted(keys, key=lambda k: k.to_user_string()),
        partition_key=partition,
        tags=tags,
    )


_SELECTION_TERM = re.compile(r'(?:(\w+):)?(?:"([^"]*)"|([^\s()"]+))')
_SELECTION_WORDS = {"and", "or", "not", "sinks", "roots"}


def near_selection(
    selection: str, names: list[str], groups: list[str], limit: int = 5
) -> list[str]:
    """Asset keys and groups spelled like the terms of the selection: what the user likely meant."""
    found: list[str] = []
    for attribute, quoted, bare in _SELECTION_TERM.findall(selection):
        value = (quoted or bare).strip("*+")
        if not value or (not attribute and value.lower() in _SELECTION_WORDS):
            continue
        if attribute == "group":
            candidates = [f"group:{g}" for g in difflib.get_close_matches(value, groups, limit)]
        else:
            last = {name.rsplit("/", 1)[-1]: name for name in names}
            candidates = [n for n in names if value.lower() in n.lower()]
            candidates += difflib.get_close_matches(value, names, limit, cutoff=0.6)
            candidates += [last[n] for n in difflib.get_close_matches(value, list(last), limit)]
            candidates = [f'key:"{n}"' for n in candidates]
        found += candidates
    return list(dict.fromkeys(found))[:limit]


def no_match_message(selection: str, names: list[str], groups: list[str]) -> str:
    near = near_selection(selection, names, groups)
    hint = f"; did you mean {', '.join(near)}?" if near else "."
    return (
        f"the selection {selection!r} matches no asset{hint} "
        "`hdh status` lists every asset and its group."
    )


def cancel_orphans(instance: dg.DagsterInstance, filters_tags: dict[str, str]) -> list[str]:
    """Runs this host's ``hdh`` left started when it died (killed mid-run): cancelled, so that
    what launched them runs their step again. Returns their run ids."""
    host = socket.gethostname()
    cancelled = []
    active = instance.get_runs(
        dg.RunsFilter(
            tags=filters_tags,
            statuses=[
                dg.DagsterRunStatus.NOT_STARTED,  # killed before its first event
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
        )
    )
    for run in active:
        where = run.tags.get(CLI_PROCESS_TAG, "")
        run_host, _, pid = where.rpartition(":")
        if run_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        instance.report_run_canceled(run, message=f"the hdh process {pid} that ran it died")
        # the pools' slots it held (json_ingestion, workspace_delivery) would never come back
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        cancelled.append(run.run_id)
    return cancelled


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def daemon_running(instance: dg.DagsterInstance) -> bool:
    """Whether a Dagster daemon with a sensor loop beats against this instance now."""
    beats = instance.get_daemon_heartbeats()
    sensor = beats.get("SENSOR")
    return sensor is not None and time.time() - sensor.timestamp < DAEMON_FRESH_SECONDS


def wait_for(condition, timeout: float, interval: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@dataclass
class Followed:
    """What following the automation conditions did: each evaluation's request and the runs."""

    requested: list[dict[str, list[str | None]]]
    runs: list[RunOutcome]
    cursor: object = None  # the last evaluation's, to start the next from


def evaluate(defs: dg.Definitions, instance: dg.DagsterInstance, cursor=None):
    return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)


def follow(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    cursor,
    on_run=lambda outcome: None,
    max_rounds: int = 10,
) -> Followed:
    """Evaluate the assets' automation conditions from ``cursor`` (an evaluation made before
    this process's own runs) and execute what they request, until they request nothing."""
    graph = defs.resolve_asset_graph()
    followed = Followed([], [])
    for _ in range(max_rounds):
        result = evaluate(defs, instance, cursor)
        cursor = result.cursor
        requested = requested_by(result, graph)
        if not requested:
            break
        followed.requested.append(
            {k.to_user_string(): sorted(v, key=str) for k, v in sorted(requested.items())}
        )
        for group in run_groups(requested, graph):
            outcome = execute(defs, instance, group.run_request({AUTOMATION_TAG: "hdh-cli"}))
            followed.runs.append(outcome)
            on_run(outcome)
    followed.cursor = cursor
    return followed
