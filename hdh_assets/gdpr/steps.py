"""Which run a rights request needs next: the one state machine behind the rights sensor and
``hdh rights process --wait``.

A request is processed in attempts (a retried request starts a new one). In an attempt:

1. ``prepare``: the exclusions snapshot and the request's plan (``gdpr/request_plans``);
2. ``rematerialise``: the planned runs, launched wave by wave (a run waits for the runs whose
   assets it depends on; runs of one wave are independent and may run side by side);
3. ``prove``: the proof checks, as their own run;
4. ``finish``: the request's outcome (``gdpr/request_outcomes``): releases re-issued, the
   request completed or failed with its report.

An access request only has ``finish``. The state is read from the instance's runs, tagged with
the request, the attempt and the step, so a daemon restart or a second caller never launches a
step twice (its run key says which step of which attempt it is). A failed step skips to
``finish``, which fails the request with the reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import dagster as dg

from hdh_assets.automation import RANGE_END_TAG, RANGE_START_TAG, RIGHTS_REQUEST_TAG
from hdh_assets.gdpr.exclusions import EXCLUSIONS_PATH
from hdh_assets.gdpr.rights import Status
from hdh_assets.gdpr.service import ACTOR
from hdh_assets.lineage import waves
from jobs.run_kinds import run_kind_tags

REQUEST_TAG = RIGHTS_REQUEST_TAG
ATTEMPT_TAG = "hdh/rights_attempt"
STEP_TAG = "hdh/rights_step"

REQUESTS = dg.DynamicPartitionsDefinition(name="rights_requests")
EXCLUSIONS_KEY = dg.AssetKey(list(EXCLUSIONS_PATH))
PLANS_KEY = dg.AssetKey(["gdpr", "request_plans"])
OUTCOMES_KEY = dg.AssetKey(["gdpr", "request_outcomes"])

ACTIVE = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}
PROOF_CHECK = "no_excluded_subject"


@dataclass(frozen=True)
class Step:
    name: str  # prepare, rematerialise:<wave>, prove, finish
    stage: str
    run_request: dg.RunRequest


def _tags(request_id: str, attempt: int, step: str) -> dict[str, str]:
    return {REQUEST_TAG: request_id, ATTEMPT_TAG: str(attempt), STEP_TAG: step}


def _run_request(request_id: str, attempt: int, step: str, **kwargs) -> dg.RunRequest:
    # Each step's run is a pod of the rights kind on Kubernetes (ignored by a local launcher).
    tags = {**run_kind_tags("rights"), **_tags(request_id, attempt, step), **kwargs.pop("tags", {})}
    return dg.RunRequest(run_key=f"{request_id}:{attempt}:{step}", tags=tags, **kwargs)


def _attempt_runs(instance: dg.DagsterInstance, request_id: str, attempt: int) -> list:
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={REQUEST_TAG: request_id, ATTEMPT_TAG: str(attempt)})
    )
    return list(reversed(list(runs)))  # oldest first


def runs_of(instance: dg.DagsterInstance, request_id: str, attempt: int) -> dict[str, object]:
    """The attempt's runs by step name (the latest run of each step). A cancelled run (its
    process died before it ended, for instance) does not count: the step runs again."""
    found: dict[str, object] = {}
    for run in _attempt_runs(instance, request_id, attempt):
        if run.status is not dg.DagsterRunStatus.CANCELED:
            found[run.tags[STEP_TAG]] = run
    return found


def _relaunched(instance, request_id: str, attempt: int, launch: list[Step]) -> list[Step]:
    """A step whose earlier runs were cancelled gets a run key of its own."""
    cancelled = Counter(
        run.tags[STEP_TAG]
        for run in _attempt_runs(instance, request_id, attempt)
        if run.status is dg.DagsterRunStatus.CANCELED
    )
    steps = []
    for step in launch:
        request = step.run_request
        if cancelled[step.name]:
            request = dg.RunRequest(
                run_key=f"{request.run_key}:again{cancelled[step.name]}",
                tags=request.tags,
                asset_selection=request.asset_selection,
                asset_check_keys=request.asset_check_keys,
                partition_key=request.partition_key,
            )
        steps.append(Step(step.name, step.stage, request))
    return steps


def planned_runs(instance: dg.DagsterInstance, request_id: str, attempt: int) -> list[dict] | None:
    """The plan the attempt's prepare step recorded, or None before it."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=PLANS_KEY, asset_partitions=[request_id]), limit=1
    ).records
    if not records:
        return None
    metadata = records[0].asset_materialization.metadata
    if int(metadata["attempt"].value) != attempt:
        return None
    return metadata["plan"].value["runs"]


def _planned_request(request_id: str, attempt: int, wave: int, index: int, run: dict):
    keys = [dg.AssetKey.from_user_string(a) for a in run["assets"]]
    span = run.get("partitions")
    kwargs: dict = {"asset_selection": keys}
    if span and span[0] == span[1]:
        kwargs["partition_key"] = span[0]
    elif span:
        kwargs["tags"] = {RANGE_START_TAG: span[0], RANGE_END_TAG: span[1]}
    return _run_request(request_id, attempt, f"rematerialise:{wave}:{index}", **kwargs)


def next_steps(
    instance: dg.DagsterInstance,
    graph,
    request_id: str,
    request_type: str,
    attempt: int,
    proof_checks: list[dg.AssetCheckKey],
) -> tuple[str, list[Step]]:
    """(stage, steps to launch now). No step while a run of the attempt is in flight, or once
    ``finish`` ran (stage ``done``)."""
    runs = runs_of(instance, request_id, attempt)
    if any(run.status in ACTIVE for run in runs.values()):
        return _stage_of(runs), []
    if "finish" in runs:
        return "done", []
    finish = Step(
        "finish",
        "finishing",
        _run_request(
            request_id, attempt, "finish", asset_selection=[OUTCOMES_KEY], partition_key=request_id
        ),
    )
    failed = any(run.status is not dg.DagsterRunStatus.SUCCESS for run in runs.values())
    if request_type == "access" or failed:
        return "finishing", [finish]
    if "prepare" not in runs:
        prepare = _run_request(
            request_id,
            attempt,
            "prepare",
            asset_selection=_prepare_selection(request_type),
            partition_key=request_id,
        )
        return "planned", [Step("prepare", "planned", prepare)]
    planned = planned_runs(instance, request_id, attempt) or []
    for wave, members in enumerate(waves(planned, graph)):
        todo = [
            _planned_request(request_id, attempt, wave, i, planned[i])
            for i in members
            if f"rematerialise:{wave}:{i}" not in runs
        ]
        if todo and _busy(instance, {k for r in todo for k in r.asset_selection}):
            return "re-materialising", []  # another run writes these assets: next tick
        if todo:
            return "re-materialising", [Step(r.tags[STEP_TAG], "re-materialising", r) for r in todo]
    if "prove" not in runs:
        prove = _run_request(
            request_id, attempt, "prove", asset_selection=[], asset_check_keys=proof_checks
        )
        return "proving", [Step("prove", "proving", prove)]
    return "finishing", [finish]


def _busy(instance: dg.DagsterInstance, keys: set[dg.AssetKey]) -> bool:
    """Whether a queued or running run (of anyone) materialises one of ``keys``."""
    active = instance.get_runs(dg.RunsFilter(statuses=list(ACTIVE)))
    return any(keys & set(run.asset_selection or ()) for run in active)


def _stage_of(runs: dict) -> str:
    steps = set(runs)
    if "finish" in steps:
        return "finishing"
    if "prove" in steps:
        return "proving"
    if any(s.startswith("rematerialise") for s in steps):
        return "re-materialising"
    return "planned"


def _prepare_selection(request_type: str) -> list[dg.AssetKey]:
    """A rectification excludes nobody: its prepare step only plans."""
    return [PLANS_KEY] if request_type == "rectification" else [EXCLUSIONS_KEY, PLANS_KEY]


def _step_assets(step: str, planned: list[dict], request_type: str) -> list[str]:
    if step == "prepare":
        return [k.to_user_string() for k in _prepare_selection(request_type)]
    if step.startswith("rematerialise:"):
        return sorted(planned[int(step.rsplit(":", 1)[1])]["assets"])
    return []


def run_summaries(
    instance: dg.DagsterInstance, request_id: str, request_type: str, attempt: int
) -> list[dict]:
    """What the attempt launched, for the report: step, selection, partitions, run id, success
    (in launch order)."""
    planned = planned_runs(instance, request_id, attempt) or []
    summaries = []
    runs = runs_of(instance, request_id, attempt)
    for step, run in sorted(runs.items(), key=lambda item: _order(item[0])):
        if step == "finish":
            continue
        tags = run.tags
        partition = tags.get("dagster/partition")
        if RANGE_START_TAG in tags:
            partition = f"{tags[RANGE_START_TAG]}..{tags[RANGE_END_TAG]}"
        assets = _step_assets(step, planned, request_type)
        summaries.append(
            {
                "step": step,
                "selection": " or ".join(f'key:"{k}"' for k in assets) or "proof checks",
                "partition": partition,
                "run_id": run.run_id,
                "success": run.status is dg.DagsterRunStatus.SUCCESS,
            }
        )
    return summaries


def _order(step: str) -> tuple:
    if step == "prepare":
        return (0,)
    if step.startswith("rematerialise:"):
        _, wave, index = step.split(":")
        return (1, int(wave), int(index))
    return (2,) if step == "prove" else (3,)


def proof_results(instance: dg.DagsterInstance, request_id: str, attempt: int) -> dict[str, bool]:
    """check -> passed, as the attempt's proof run evaluated them."""
    run = runs_of(instance, request_id, attempt).get("prove")
    if run is None:
        return {}
    results = {}
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        results[name] = bool(evaluation.passed)
    return results


def proof_check_keys(graph) -> list[dg.AssetCheckKey]:
    return sorted(
        (k for k in graph.asset_check_keys if k.name == PROOF_CHECK),
        key=lambda k: k.to_user_string(),
    )


def advance(instance: dg.DagsterInstance, graph, registry, request_id: str) -> list[Step]:
    """Take a pending request one step further: start its attempt if it is only verified,
    record its stage in the registry's audit when it changes, and say what to launch now."""
    request = registry.get(request_id)
    if request.status is Status.VERIFIED:
        registry.start_processing(request_id, ACTOR)
    elif request.status is not Status.PROCESSING:
        return []
    if not instance.has_dynamic_partition(REQUESTS.name, request_id):
        instance.add_dynamic_partitions(REQUESTS.name, [request_id])
    attempt = registry.attempt(request_id)
    stage, launch = next_steps(
        instance, graph, request_id, request.type.value, attempt, proof_check_keys(graph)
    )
    if stage == "done":
        finish = runs_of(instance, request_id, attempt)["finish"]
        if finish.status is not dg.DagsterRunStatus.SUCCESS:  # the outcome never got written
            registry.fail(request_id, f"the outcome run {finish.run_id} did not succeed", ACTOR)
        return []
    stages = [a["detail"] for a in registry.audit(request_id) if a["action"] == "stage"]
    if not stages or stages[-1] != {"stage": stage, "attempt": attempt}:
        registry.note(request_id, ACTOR, "stage", {"stage": stage, "attempt": attempt})
    return _relaunched(instance, request_id, attempt, launch)
