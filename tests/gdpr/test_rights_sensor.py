"""The rights sensor launches each verified objection, erasure or access request once, and
resumes killed ones; a rectification or restriction waits for the DPO (not automated yet)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import sqlalchemy as sa

from hdh_assets.gdpr.rights import RequestType, Status, validate_submission
from jobs.rights import REQUEST_TAG, gdpr_process_request_job
from resources.rights_registry import RightsRegistry, requests_table
from sensors.rights import MAX_RUNS_PER_TICK, rights_run_requests


def _registry(tmp_path) -> RightsRegistry:
    return RightsRegistry(f"sqlite:///{tmp_path / 'registry.db'}", b"k" * 32)


def _file(registry, kind="erasure") -> str:
    request_type, identity = validate_submission(
        kind, "Laurent", "Hélène", "2012-02-06", "212023197298779", "h@example.fr"
    )
    return registry.submit(request_type, identity, "p" * 32)[0]


def test_verified_objections_and_erasures_are_launched_once(tmp_path):
    registry = _registry(tmp_path)
    erasure, objection, access, unverified = (
        _file(registry, "erasure"),
        _file(registry, "objection"),
        _file(registry, "access"),
        _file(registry, "erasure"),
    )
    for request_id in (erasure, objection, access):
        registry.verify(request_id, "dpo")
    with dg.instance_for_test() as instance:
        requests = rights_run_requests(instance, registry)
        assert [r.tags[REQUEST_TAG] for r in requests] == [erasure, objection, access]
        assert [r.run_key for r in requests] == [f"{erasure}:0", f"{objection}:0", f"{access}:0"]
        assert unverified not in {r.tags[REQUEST_TAG] for r in requests}
        # a run is queued for the erasure: the next tick does not launch it again
        run = instance.create_run_for_job(
            gdpr_process_request_job,
            run_config=requests[0].run_config,
            tags=requests[0].tags,
        )
        queued = [r.tags[REQUEST_TAG] for r in rights_run_requests(instance, registry)]
        assert queued == [objection, access]
        # the run is killed mid-way, the request stays in processing: one new attempt
        registry.start_processing(erasure, "sensor")
        instance.report_run_failed(run)
        again = rights_run_requests(instance, registry)
        assert [r.run_key for r in again] == [f"{erasure}:1", f"{objection}:0", f"{access}:0"]


def test_a_backlog_of_10000_requests_drains_over_ticks_oldest_first(tmp_path):
    registry = _registry(tmp_path)
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
    with dg.instance_for_test() as instance:
        requests = rights_run_requests(instance, registry)
    assert len(requests) == MAX_RUNS_PER_TICK
    assert [r.tags[REQUEST_TAG] for r in requests] == [
        f"HDH-BULK{i:06d}" for i in range(MAX_RUNS_PER_TICK)
    ]
