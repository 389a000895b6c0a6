"""The rights sensor's state machine: each verified request goes through its steps as runs,
one step at a time, never launched twice; a backlog drains oldest first."""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg
import pytest
import sqlalchemy as sa

from hdh_assets.definitions import build_definitions
from hdh_assets.gdpr import steps
from hdh_assets.gdpr.rights import RequestType, Status, validate_submission
from resources.platform import HomeResource
from resources.rights_registry import RightsRegistry, RightsRegistryResource, requests_table
from sensors.rights import MAX_REQUESTS_PER_TICK, rights_sensor

SECRET = "k" * 32


@pytest.fixture
def registry(tmp_path) -> RightsRegistry:
    return RightsRegistry(f"sqlite:///{tmp_path / 'registry.db'}", SECRET.encode())


@pytest.fixture
def graph(hdh_home):
    return build_definitions(hdh_home).resolve_asset_graph()


def _file(registry, kind="erasure") -> str:
    request_type, identity = validate_submission(
        kind, "Laurent", "Hélène", "2012-02-06", "212023197298779", "h@example.fr"
    )
    return registry.submit(request_type, identity, "p" * 32)[0]


def test_a_verified_erasure_starts_with_its_plan_and_nothing_is_launched_twice(
    registry, graph, hdh_home
):
    erasure, access, unverified = _file(registry), _file(registry, "access"), _file(registry)
    registry.verify(erasure, "dpo")
    registry.verify(access, "dpo")
    with dg.instance_for_test() as instance:
        (prepare,) = steps.advance(instance, graph, registry, erasure)
        request = prepare.run_request
        assert prepare.name == "prepare" and request.run_key == f"{erasure}:1:prepare"
        assert set(request.asset_selection) == {steps.EXCLUSIONS_KEY, steps.PLANS_KEY}
        assert request.partition_key == erasure
        assert request.tags[steps.REQUEST_TAG] == erasure
        assert registry.get(erasure).status is Status.PROCESSING
        assert instance.has_dynamic_partition(steps.REQUESTS.name, erasure)
        # an access request has one step: its outcome (the archive)
        (finish,) = steps.advance(instance, graph, registry, access)
        assert finish.name == "finish"
        assert finish.run_request.asset_selection == [steps.OUTCOMES_KEY]
        assert registry.get(unverified).status is Status.RECEIVED
        # the prepare run is queued: the next tick launches nothing for the request
        run = instance.create_run_for_job(
            build_definitions(hdh_home).resolve_implicit_global_asset_job_def(),
            tags=request.tags,
        )
        assert steps.advance(instance, graph, registry, erasure) == []
        # it failed: the request goes to its outcome (which fails it), not to re-materialisation
        instance.report_run_failed(run)
        (after_failure,) = steps.advance(instance, graph, registry, erasure)
        assert after_failure.name == "finish"
        assert after_failure.run_request.run_key == f"{erasure}:1:finish"
        stages = [a["detail"] for a in registry.audit(erasure) if a["action"] == "stage"]
        assert stages == [{"stage": "planned", "attempt": 1}, {"stage": "finishing", "attempt": 1}]


def test_a_retried_request_is_a_new_attempt_with_new_run_keys(registry, graph):
    erasure = _file(registry)
    registry.verify(erasure, "dpo")
    with dg.instance_for_test() as instance:
        assert steps.advance(instance, graph, registry, erasure)[0].run_request.run_key == (
            f"{erasure}:1:prepare"
        )
        registry.fail(erasure, "a proof failed", "sensor")
        assert steps.advance(instance, graph, registry, erasure) == []  # failed: it waits
        registry.retry(erasure, "dpo")
        (prepare,) = steps.advance(instance, graph, registry, erasure)
        assert prepare.run_request.run_key == f"{erasure}:2:prepare"
        assert prepare.run_request.tags[steps.ATTEMPT_TAG] == "2"


def test_planned_runs_are_launched_wave_by_wave(graph):
    """A run waits for the runs feeding it; independent runs go together."""
    planned = [
        {"assets": ["imaging/dicom_instances", "imaging/landed_files"], "partitions": ["b", "b"]},
        {"assets": ["clinical/patients"], "partitions": ["j", "j"]},
        {"assets": ["imaging/dicom_series", "imaging/dicom_studies"], "partitions": None},
        {"assets": ["gdpr/subject_index"], "partitions": None},
    ]
    assert steps.waves(planned, graph) == [[0, 1], [2], [3]]


def test_a_backlog_of_10000_requests_drains_over_ticks_oldest_first(registry, hdh_home):
    start = dt.datetime(2026, 1, 1)
    rows = [
        {
            "id": f"HDH-BULK{i:06d}",
            "token_sha256": "0" * 64,
            "type": RequestType.OBJECTION.value,
            "status": Status.VERIFIED.value,
            "subject_pseudonym": f"{i:032x}",
            "identity": b"sealed",
            "received_at": start + dt.timedelta(seconds=i),
            "deadline": start + dt.timedelta(days=31),
            "updated_at": start,
        }
        for i in range(10_000)
    ]
    with registry.engine.begin() as db:
        db.execute(sa.insert(requests_table), rows)
    defs = build_definitions(hdh_home)
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance,
            definitions=defs,
            resources={
                "hdh_home": HomeResource(root=str(hdh_home.root)),
                "rights_registry": RightsRegistryResource(url=str(registry.engine.url), key=SECRET),
            },
        )
        result = rights_sensor(context)
    requests = result.run_requests
    assert len(requests) == MAX_REQUESTS_PER_TICK
    assert [r.tags[steps.REQUEST_TAG] for r in requests] == [
        f"HDH-BULK{i:06d}" for i in range(MAX_REQUESTS_PER_TICK)
    ]
    assert {r.tags[steps.STEP_TAG] for r in requests} == {"prepare"}


@pytest.mark.slow
def test_a_run_left_by_a_killed_hdh_is_cancelled_and_its_step_runs_again(registry, graph, hdh_home):
    import socket
    import subprocess

    from hdh_cli.runs import CLI_PROCESS_TAG, cancel_orphans

    dead = subprocess.Popen(["true"])
    dead.wait()
    erasure = _file(registry)
    registry.verify(erasure, "dpo")
    job = build_definitions(hdh_home).resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        (prepare,) = steps.advance(instance, graph, registry, erasure)
        host = socket.gethostname()
        orphan = instance.create_run_for_job(
            job, tags={**prepare.run_request.tags, CLI_PROCESS_TAG: f"{host}:{dead.pid}"}
        )
        alive = instance.create_run_for_job(
            job, tags={steps.REQUEST_TAG: "other", CLI_PROCESS_TAG: f"{host}:{os.getpid()}"}
        )
        assert steps.advance(instance, graph, registry, erasure) == []  # in flight, it seems
        assert cancel_orphans(instance, {steps.REQUEST_TAG: erasure}) == [orphan.run_id]
        assert cancel_orphans(instance, {steps.REQUEST_TAG: "other"}) == []
        assert instance.get_run_by_id(alive.run_id).status is dg.DagsterRunStatus.NOT_STARTED
        (again,) = steps.advance(instance, graph, registry, erasure)
        assert again.name == "prepare"
        assert again.run_request.run_key == f"{erasure}:1:prepare:again1"
