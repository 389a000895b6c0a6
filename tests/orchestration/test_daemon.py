"""The daemon alone drives the platform: after the demo, a late delivery reaches every asset
downstream, and a verified erasure is completed by the rights sensor, run by run, through the
instance's run queue; killing the daemon mid-way loses nothing and launches nothing twice.

These tests start a real ``dagster-daemon`` against a copy of a demo's HDH_HOME (no command-line
processing) and read what happened from the instance's run storage.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from hdh_assets.automation import claims_month_span
from hdh_assets.gdpr import steps
from hdh_assets.gdpr.rights import Status
from hdh_assets.gdpr.service import file_sample_erasure
from resources.home import HdhHome
from resources.pseudonymisation import PseudonymisationKeyResource
from resources.rights_registry import RightsRegistry
from tests.conftest import TEST_KEY
from tests.processes import stop_group

pytestmark = [pytest.mark.slow, pytest.mark.spark]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FINAL = {Status.COMPLETED, Status.FAILED, Status.REJECTED}
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HDH_", "DAGSTER_"))}
    return {
        **env,
        "HDH_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "HDH_PSEUDONYM_KEY": TEST_KEY,
    }


def _hdh(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "hdh"), *args],
        env=_env(home),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory) -> Path:
    """One demo run (ingestion, products, workspaces, an erasure) that every test copies."""
    home = tmp_path_factory.mktemp("demo") / "hdh"
    done = _hdh(home, "demo", "--people", "12", "--claims-rows", "3000", "--seed", "11", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return home


def _copy(demo_home: Path, tmp_path: Path, max_concurrent_runs: int | None = None) -> Path:
    home = tmp_path / "hdh"
    shutil.copytree(demo_home, home, symlinks=True)
    if max_concurrent_runs is not None:
        config = home / "dagster" / "dagster.yaml"
        text = config.read_text()
        assert "max_concurrent_runs: 2" in text
        config.write_text(
            text.replace("max_concurrent_runs: 2", f"max_concurrent_runs: {max_concurrent_runs}")
        )
    return home


@contextlib.contextmanager
def _instance(home: Path):
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        yield instance


def _start_daemon(home: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
        env=_env(home),
        cwd=ROOT,
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait(condition, timeout: float, what: str, log: Path, interval: float = 3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    tail = log.read_text()[-4000:] if log.exists() else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; daemon log:\n{tail}")


def _request_runs(instance: dg.DagsterInstance, request_id: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(tags={steps.REQUEST_TAG: request_id})))


def _file_erasure(home: Path, person_index: int) -> tuple[str, RightsRegistry]:
    hdh_home = HdhHome(home)
    registry = RightsRegistry.from_env(hdh_home)
    people = json.loads((hdh_home.sample / "identities.json").read_text())["people"]
    key = PseudonymisationKeyResource(secret_key=TEST_KEY)
    return file_sample_erasure(hdh_home, registry, people[person_index], key), registry


def _run_shape(runs: list[dg.DagsterRun]) -> list[tuple[str, str | None]]:
    shape = []
    for run in runs:
        partition = run.tags.get("dagster/partition")
        if steps.RANGE_START_TAG in run.tags:
            partition = f"{run.tags[steps.RANGE_START_TAG]}..{run.tags[steps.RANGE_END_TAG]}"
        if run.tags[steps.STEP_TAG] == "prepare" or run.tags[steps.STEP_TAG] == "finish":
            partition = "<request>"  # the request's own partition: its id differs per home
        shape.append((run.tags[steps.STEP_TAG], partition))
    return sorted(shape)


def _comparable(report: dict) -> dict:
    return {
        "assets": report["assets"],
        "partitions": report["partitions"],
        "checks": report["checks"],
        "files_removed": sorted(report["files_removed"]),
        "raw_copies_removed": len(report["raw_copies_removed"]),
        "releases_reissued": [r["product"] for r in report["releases_reissued"]],
        "runs": [(r["step"], r["selection"]) for r in report["runs"] if r["step"] != "prepare"],
    }


def test_the_daemon_alone_completes_an_erasure_one_run_at_a_time_across_a_restart(
    demo_home, tmp_path
):
    home = _copy(demo_home, tmp_path / "daemon", max_concurrent_runs=1)
    log = tmp_path / "daemon.log"
    request_id, registry = _file_erasure(home, person_index=4)
    daemon = _start_daemon(home, log)
    try:
        with _instance(home) as instance:
            # wait until the planned runs are under way, then kill the daemon outright
            _wait(
                lambda: any(
                    r.tags[steps.STEP_TAG].startswith("rematerialise")
                    for r in _request_runs(instance, request_id)
                ),
                600,
                "the first planned re-materialisation",
                log,
            )
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=30)
            launched_before_restart = len(_request_runs(instance, request_id))
            daemon = _start_daemon(home, log)
            _wait(
                lambda: registry.get(request_id).status in FINAL,
                1500,
                "the request to be completed",
                log,
            )
            runs = _request_runs(instance, request_id)
            queue_peaks = _max_concurrent(instance, runs)
    finally:
        stop_group(daemon)
    request = registry.get(request_id)
    assert request.status is Status.COMPLETED, request.report
    # one run per step: prepare, every planned run, the proofs, the outcome; none twice
    by_step = Counter(r.tags[steps.STEP_TAG] for r in runs)
    assert all(count == 1 for count in by_step.values()), by_step
    planned = request.report["runs"]
    rematerialised = [s for s in by_step if s.startswith("rematerialise")]
    assert len(rematerialised) == len([r for r in planned if r["step"].startswith("remat")]) > 2
    assert {"prepare", "prove", "finish"} <= set(by_step)
    assert all(r.status is dg.DagsterRunStatus.SUCCESS for r in runs)
    assert all(r.tags.get("dagster/sensor_name") == "rights_sensor" for r in runs)
    assert launched_before_restart < len(runs)  # the restarted daemon carried on
    assert queue_peaks == 1  # max_concurrent_runs: 1 held
    assert all(request.report["checks"].values()) and request.report["checks"]

    # the command line on the same data, without a daemon: the same runs, the same report
    other = _copy(demo_home, tmp_path / "cli")
    other_id, other_registry = _file_erasure(other, person_index=4)
    done = _hdh(other, "rights", "process", "--wait", "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with _instance(other) as instance:
        cli_runs = _request_runs(instance, other_id)
    assert _run_shape(cli_runs) == _run_shape(runs)
    assert _comparable(other_registry.get(other_id).report) == _comparable(request.report)


def _max_concurrent(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> int:
    """The largest number of the request's runs that were executing at the same moment."""
    spans = []
    for run in runs:
        record = instance.get_run_record_by_id(run.run_id)
        spans.append((record.start_time, record.end_time))
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


def test_with_the_daemon_alone_a_late_delivery_reaches_every_asset_downstream(demo_home, tmp_path):
    home = _copy(demo_home, tmp_path)
    log = tmp_path / "daemon.log"
    with _instance(home) as instance:
        runs_after_demo = instance.get_runs_count()
    daemon = _start_daemon(home, log)
    try:
        with _instance(home) as instance:
            # right after the demo, the daemon finds nothing to do: every sensor ticks, none
            # launches a run (the demo already did the work)
            sensors = _wait(lambda: _ticked_sensors(instance, 2), 300, "two ticks per sensor", log)
            assert {
                "automation_sensor",
                "rights_sensor",
                "workspace_specs_sensor",
                "claims_months_sensor",
                "dicom_landing_sensor",
            } <= sensors
            assert instance.get_runs_count() == runs_after_demo

            landed_at = time.time()
            late = _hdh(
                home,
                "sample",
                "--batch",
                "late-delivery",
                "--people",
                "3",
                "--claims-rows",
                "600",
                "--seed",
                "23",
            )
            assert late.returncode == 0, late.stderr[-2000:]
            downstream = [
                dg.AssetKey(["imaging", "dicom_series"]),
                dg.AssetKey(["imaging", "dicom_studies"]),
                dg.AssetKey(["products", "imaging_clinical_linkage"]),
                dg.AssetKey(["products", "diabetes_patients"]),
                dg.AssetKey(["products", "chronic_medication_cohort"]),
                dg.AssetKey(["products", "care_consumption_per_month"]),
                dg.AssetKey(["gdpr", "subject_index"]),
            ]
            months = claims_month_span(
                HdhHome(home).landing_for("claims") / "late-delivery",
                PseudonymisationKeyResource().max_date_shift_days,
            )

            def followed() -> bool:
                if instance.get_runs(dg.RunsFilter(statuses=ACTIVE)):
                    return False
                fresh = all(_built_after(instance, k, landed_at) for k in downstream)
                events = _partitions_built_after(
                    instance, dg.AssetKey(["claims", "events"]), landed_at
                )
                return fresh and months[0] in events and months[1] in events

            _wait(followed, 1500, "the late delivery to reach every asset downstream", log)
            failed = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
            assert not failed, [r.run_id for r in failed]
            monthly = _partitions_built_after(
                instance, dg.AssetKey(["products", "care_consumption_per_subject_month"]), landed_at
            )
            assert months[0] in monthly and months[1] in monthly
    finally:
        stop_group(daemon)
    index = pl.read_parquet(home / "lake" / "gdpr" / "subject_index")
    late_rows = index.filter(pl.col("partition") == "late-delivery")
    assert {"imaging/dicom_instances", "clinical/patients"} <= set(late_rows["asset"])


def _built_after(instance: dg.DagsterInstance, key: dg.AssetKey, moment: float) -> bool:
    event = instance.get_latest_materialization_event(key)
    return event is not None and event.timestamp > moment


def _partitions_built_after(instance, key: dg.AssetKey, moment: float) -> set[str]:
    records = instance.fetch_materializations(key, limit=500).records
    return {r.partition_key for r in records if r.timestamp > moment}


EVERY_FIVE_MINUTES = {"dicomweb_health_sensor", "vulnerability_database_sensor"}


def _ticked_sensors(instance: dg.DagsterInstance, ticks: int) -> set[str] | None:
    """Names of the sensors that ticked at least ``ticks`` times, once all running ones did."""
    states = [
        s
        for s in instance.all_instigator_state()
        if s.instigator_type.value == "SENSOR" and s.status.value != "STOPPED"
    ]
    if not states:
        return None
    counts = {
        s.instigator_name: len(instance.get_ticks(s.instigator_origin_id, s.selector_id, limit=5))
        for s in states
    }
    # A sensor that ticks every five minutes has ticked once by then; the others ``ticks`` times.
    if any(n < (1 if name in EVERY_FIVE_MINUTES else ticks) for name, n in counts.items()):
        return None
    return set(counts)
