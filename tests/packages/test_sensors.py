"""The package sensors over a store populated directly: what each tick asks to run, and why.

No run is launched: the ticks are evaluated with ``dg.build_sensor_context`` on a test instance.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from hdh_assets.packages.assets import REQUESTS
from hdh_assets.workspaces.assets import PROJECTS
from package_manager import service
from package_manager.requests import REQUESTS_FOLDER, file_request
from package_manager.settings import PackageSettings
from package_manager.store import write_json
from resources.home import HdhHome
from sensors.packages import package_requests_sensor, vulnerability_database_sensor
from tests.packages.test_approval import OTHER, PROJECT, request, resolved, save, vetting_of

REPO = Path(__file__).resolve().parents[2]


class Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def instance(hdh_home: HdhHome, specs: Path) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def tick(instance: dg.DagsterInstance, cursor: str | None = None, log: Messages | None = None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    if log is not None:
        context.log.addHandler(log)
    return package_requests_sensor(context)


def runs(result) -> list[tuple[str, str]]:
    return sorted((r.job_name, r.partition_key) for r in result.run_requests or [])


# --- package_requests_sensor ------------------------------------------------------------------


def test_a_new_filed_request_becomes_a_partition_and_a_vetting_run(
    hdh_home: HdhHome, instance: dg.DagsterInstance
) -> None:
    filed = request("hdh-tabular")
    file_request(filed, service.package_store(hdh_home).filed_requests)

    first = tick(instance)

    assert runs(first) == [("vet_package_requests", filed.request_id)]
    assert first.run_requests[0].run_key == f"vet-{filed.request_id}"
    assert instance.get_dynamic_partitions(REQUESTS.name) == [filed.request_id]
    assert json.loads(first.cursor) == {"decisions": 0}

    # the next tick: nothing new, nothing asked again
    again = tick(instance, first.cursor)
    assert again.run_requests in (None, []) and again.skip_reason is not None
    assert instance.get_dynamic_partitions(REQUESTS.name) == [filed.request_id]


def test_requests_of_the_specs_folder_become_partitions_too(
    hdh_home: HdhHome, instance: dg.DagsterInstance, specs: Path
) -> None:
    (specs / REQUESTS_FOLDER).mkdir()
    (specs / REQUESTS_FOLDER / "cardio.yaml").write_text(
        yaml.safe_dump(
            {
                "project": OTHER,
                "requests": [
                    {"package": "hdhsurv", "ecosystem": "cran", "reason": "km", "requested_by": "b"}
                ],
            }
        )
    )
    result = tick(instance)
    assert runs(result) == [("vet_package_requests", f"{OTHER}--cran--hdhsurv--latest")]


def test_a_bad_request_file_is_reported_and_the_others_still_run(
    hdh_home: HdhHome, instance: dg.DagsterInstance, specs: Path
) -> None:
    filed = request("hdh-tabular")
    file_request(filed, service.package_store(hdh_home).filed_requests)
    (specs / REQUESTS_FOLDER).mkdir()
    bad = specs / REQUESTS_FOLDER / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"project": PROJECT, "requests": [{"package": "pandas>=2", "reason": "x"}]})
    )
    log = Messages()

    result = tick(instance, log=log)

    assert runs(result) == [("vet_package_requests", filed.request_id)]
    refused = [m for m in log.messages if m.startswith("package request refused: ")]
    assert len(refused) == 1
    assert str(bad) in refused[0] and "request 1" in refused[0] and "pandas>=2" in refused[0]
    assert bad.exists()  # left where it is


def test_a_new_decision_revets_the_requests_it_touches_only(
    hdh_home: HdhHome, instance: dg.DagsterInstance
) -> None:
    store = service.package_store(hdh_home)
    waiting = resolved("hdh-unknown-licence", requested=True)
    core = resolved("hdh-core")
    holds, also, unrelated = request("hdh-unknown-licence"), request("hdh-b"), request("hdh-c")
    for each, members in (
        (holds, [(waiting, "needs_review"), (core, "passed")]),
        (also, [(resolved("hdh-b"), "passed"), (waiting, "needs_review")]),
        (unrelated, [(resolved("hdh-c"), "passed"), (core, "passed")]),
    ):
        file_request(each, store.filed_requests)
        save(store, each, members)
    first = tick(instance)
    assert len(first.run_requests) == 3  # their first vetting

    service.decide(
        hdh_home,
        ecosystem="pypi",
        name="hdh-unknown-licence",
        version="1.0.0",
        decision="approve",
        reason="licence confirmed in writing",
        decided_by="referent",
    )
    second = tick(instance, first.cursor)

    assert runs(second) == sorted(
        [
            ("revet_package_requests", holds.request_id),
            ("revet_package_requests", also.request_id),
        ]
    )
    assert {r.run_key for r in second.run_requests} == {
        f"decision-1-{holds.request_id}",
        f"decision-1-{also.request_id}",
    }
    assert json.loads(second.cursor) == {"decisions": 1}
    # the decision is not acted on twice
    third = tick(instance, second.cursor)
    assert not third.run_requests


def test_a_decision_on_a_new_request_does_not_ask_for_a_second_run(
    hdh_home: HdhHome, instance: dg.DagsterInstance
) -> None:
    store = service.package_store(hdh_home)
    filed = request("hdh-unknown-licence")
    file_request(filed, store.filed_requests)
    save(store, filed, [(resolved("hdh-unknown-licence"), "needs_review")])
    service.decide(
        hdh_home,
        ecosystem="pypi",
        name="hdh-unknown-licence",
        version="1.0.0",
        decision="approve",
        reason="confirmed",
        decided_by="referent",
    )
    result = tick(instance)
    assert runs(result) == [("vet_package_requests", filed.request_id)]
    assert json.loads(result.cursor) == {"decisions": 1}


def test_a_project_whose_approved_set_changed_gets_its_index_rebuilt(
    hdh_home: HdhHome, instance: dg.DagsterInstance
) -> None:
    store = service.package_store(hdh_home)
    mine, theirs = request("hdh-tabular"), request("hdh-plot", project=OTHER)
    for each in (mine, theirs):
        file_request(each, store.filed_requests)
        save(store, each, [(resolved(each.name), "passed")])
    instance.add_dynamic_partitions(REQUESTS.name, [mine.request_id, theirs.request_id])
    instance.add_dynamic_partitions(PROJECTS.name, [PROJECT])  # OTHER has no workspace yet

    result = tick(instance)

    assert runs(result) == [("publish_package_index", PROJECT)]
    token = service.stale_indexes(hdh_home, [mine, theirs])[PROJECT]
    digest = service.project_state(PROJECT, hdh_home, [mine, theirs]).digest
    assert token.startswith(f"{digest}-")
    assert result.run_requests[0].run_key == f"index-{PROJECT}-{token}"

    # once published with that digest, nothing more to do
    _publish(store, PROJECT, digest)
    assert PROJECT not in service.stale_indexes(hdh_home, [mine, theirs])
    assert not tick(instance, result.cursor).run_requests

    # a new approved member changes the digest: rebuilt again
    save(store, mine, [(resolved(mine.name), "passed"), (resolved("hdh-core"), "passed")])
    again = tick(instance, result.cursor)
    assert runs(again) == [("publish_package_index", PROJECT)]
    assert again.run_requests[0].run_key != result.run_requests[0].run_key


# --- vulnerability_database_sensor ------------------------------------------------------------


@pytest.fixture
def vetting_inputs(
    hdh_home: HdhHome, specs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict:
    """An OSV export folder, a policy file and two vetted requests."""
    osv = tmp_path / "osv"
    osv.mkdir()
    (osv / "HDH-2026-0001.json").write_text(json.dumps({"id": "HDH-2026-0001", "affected": []}))
    policy = tmp_path / "package-policy.yaml"
    shutil.copy(REPO / "workspaces" / "package-policy.yaml", policy)
    monkeypatch.setenv("HDH_OSV_EXPORT", str(osv))
    monkeypatch.setenv("HDH_PACKAGE_POLICY", str(policy))
    monkeypatch.delenv("HDH_OSV_URL", raising=False)
    store = service.package_store(hdh_home)
    current = service.vetting_inputs_fingerprint(hdh_home)
    first, second = request("hdh-tabular"), request("hdhsurv", OTHER, "cran")
    # vetted against the current inputs, as vet() stamps them
    store.save_vetting(
        vetting_of(first.request_id, [(resolved("hdh-tabular"), "passed")], inputs=current)
    )
    store.save_vetting(
        vetting_of(
            second.request_id,
            [(resolved("hdhsurv", ecosystem="cran"), "passed")],
            inputs=current,
        )
    )
    return {"osv": osv, "policy": policy, "ids": sorted([first.request_id, second.request_id])}


def vulnerability_tick(instance: dg.DagsterInstance, cursor: str | None):
    return vulnerability_database_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))


def test_the_fingerprint_is_the_one_vetting_stamps(hdh_home: HdhHome, vetting_inputs: dict):
    """vet() stamps ``extra.inputs`` as database[:32]-policy[:16]: the sensor compares the same."""
    from package_manager.vetting.osv_server import database_fingerprint

    fingerprint = service.vetting_inputs_fingerprint(hdh_home)
    settings = PackageSettings.from_env()
    assert settings.osv_export == vetting_inputs["osv"].resolve()
    assert settings.policy_path == vetting_inputs["policy"].resolve()
    assert fingerprint.startswith(database_fingerprint(vetting_inputs["osv"])[:32] + "-")
    assert service.vetted_against_other(hdh_home, fingerprint) == {}


def test_requests_are_revetted_when_the_osv_folder_changes_and_not_otherwise(
    hdh_home: HdhHome, instance: dg.DagsterInstance, vetting_inputs: dict
) -> None:
    first = vulnerability_tick(instance, None)
    # first tick: everything was vetted against these inputs, nothing to do
    assert not first.run_requests
    fingerprint = first.cursor
    assert fingerprint == service.vetting_inputs_fingerprint(hdh_home)

    unchanged = vulnerability_tick(instance, fingerprint)
    assert isinstance(unchanged, dg.SkipReason)
    assert "unchanged" in unchanged.skip_message

    (vetting_inputs["osv"] / "HDH-2026-0101.json").write_text(
        json.dumps({"id": "HDH-2026-0101", "affected": [{"package": {"name": "hdhsurv"}}]})
    )
    changed = vulnerability_tick(instance, fingerprint)

    assert changed.cursor != fingerprint
    assert sorted(r.partition_key for r in changed.run_requests) == vetting_inputs["ids"]
    assert {r.job_name for r in changed.run_requests} == {"revet_package_requests"}
    assert {r.tags[service.REVET_TAG] for r in changed.run_requests} == {"true"}
    assert all(r.run_key.startswith(f"revet-{changed.cursor}-") for r in changed.run_requests)
    assert isinstance(vulnerability_tick(instance, changed.cursor), dg.SkipReason)

    # an advisory edited in place changes the database too
    (vetting_inputs["osv"] / "HDH-2026-0001.json").write_text(json.dumps({"id": "edited"}))
    edited = vulnerability_tick(instance, changed.cursor)
    assert edited.cursor != changed.cursor and len(edited.run_requests) == 2


def test_requests_are_revetted_when_the_policy_changes_and_not_on_a_mere_touch(
    hdh_home: HdhHome, instance: dg.DagsterInstance, vetting_inputs: dict
) -> None:
    fingerprint = service.vetting_inputs_fingerprint(hdh_home)
    policy: Path = vetting_inputs["policy"]
    policy.touch()  # same bytes, newer time: nothing changed
    assert isinstance(vulnerability_tick(instance, fingerprint), dg.SkipReason)

    policy.write_text(policy.read_text() + "\n# a referent's reviewed change\n")
    changed = vulnerability_tick(instance, fingerprint)
    assert changed.cursor != fingerprint
    assert changed.cursor.split("-")[0] == fingerprint.split("-")[0]  # same database
    assert sorted(r.partition_key for r in changed.run_requests) == vetting_inputs["ids"]


def test_only_requests_vetted_against_older_inputs_are_revetted(
    hdh_home: HdhHome, instance: dg.DagsterInstance, vetting_inputs: dict
) -> None:
    store = service.package_store(hdh_home)
    behind = request("hdh-plot")
    store.save_vetting(
        vetting_of(behind.request_id, [(resolved("hdh-plot"), "passed")], inputs="old")
    )
    result = vulnerability_tick(instance, None)
    assert [r.partition_key for r in result.run_requests] == [behind.request_id]


def _publish(store, project: str, digest: str) -> None:
    """What publish_project records once the index serves that approved set, and when."""
    at = f"2026-01-05T12:00:00.{next(_PUBLICATIONS):06d}Z"
    write_json(store.root / "indexes" / f"{project}.json", {"digest": digest, "at": at})


_PUBLICATIONS = itertools.count()  # each publication has its own time, as publish_project's


def test_an_index_going_back_to_an_earlier_approved_set_is_rebuilt_again(
    hdh_home: HdhHome, instance: dg.DagsterInstance
) -> None:
    """Dagster launches at most one run per run key and sensor (a repeated key is skipped): a
    set going X -> Y -> X (a referent approves, then refuses) must not repeat X's key, or the
    index would keep serving the refused package. The key holds when the last one was
    published."""
    store = service.package_store(hdh_home)
    tabular, licence = request("hdh-tabular"), request("hdh-unknown-licence")
    for each in (tabular, licence):
        file_request(each, store.filed_requests)
    save(store, tabular, [(resolved("hdh-tabular"), "passed")])
    instance.add_dynamic_partitions(REQUESTS.name, [tabular.request_id, licence.request_id])
    instance.add_dynamic_partitions(PROJECTS.name, [PROJECT])
    keys, digests = [], []
    cursor = None
    # X (waits for review), Y (a referent approved it), X again (the referent refused it)
    for status in ("needs_review", "passed", "refused"):
        save(store, licence, [(resolved("hdh-unknown-licence"), status)])
        result = tick(instance, cursor)
        cursor = result.cursor
        (publish,) = [r for r in result.run_requests if r.job_name == "publish_package_index"]
        keys.append(publish.run_key)
        digests.append(service.project_state(PROJECT, hdh_home, [tabular, licence]).digest)
        _publish(store, PROJECT, digests[-1])
    assert digests[0] == digests[2] != digests[1]  # the approved set went back to X
    assert len(set(keys)) == 3, f"run key repeated, its run would be skipped: {keys}"


def test_a_vulnerability_database_changing_back_again_revets_again(
    hdh_home: HdhHome, instance: dg.DagsterInstance, vetting_inputs: dict
) -> None:
    """Inputs A -> B -> A -> B (a policy change reverted, then made again) must not repeat the
    first B's run keys, or Dagster would skip those runs and the requests stay vetted against
    A while B is in force: the key holds when each request was last vetted."""
    store = service.package_store(hdh_home)
    policy: Path = vetting_inputs["policy"]
    original = policy.read_text()
    keys: list[str] = []
    cursor = service.vetting_inputs_fingerprint(hdh_home)
    for text in (original + "\n# B\n", original, original + "\n# B\n"):
        policy.write_text(text)
        result = vulnerability_tick(instance, cursor)
        cursor = result.cursor
        keys += [r.run_key for r in result.run_requests]
        for run in result.run_requests:  # the revet runs vet against the new inputs, now
            vetting = store.vetting(run.partition_key)
            store.save_vetting(
                dataclasses.replace(  # type: ignore[arg-type]
                    vetting,
                    extra={"inputs": cursor},
                    vetted_at=f"2026-01-05T12:00:{len(keys):02d}Z",
                )
            )
    assert len(keys) == 6
    assert len(set(keys)) == 6, f"run keys repeated, their runs would be skipped: {keys}"


def test_a_project_whose_last_request_is_withdrawn_gets_its_index_emptied(
    hdh_home: HdhHome, instance: dg.DagsterInstance, specs: Path
) -> None:
    """A project whose only request file is removed from the specs folder has its published
    index compared again (projects with a published index count too), so it stops serving the
    withdrawn request's packages."""
    store = service.package_store(hdh_home)
    (specs / REQUESTS_FOLDER).mkdir()
    request_file = specs / REQUESTS_FOLDER / "diabetes.yaml"
    request_file.write_text(
        yaml.safe_dump(
            {
                "project": PROJECT,
                "requests": [{"package": "hdh-tabular", "reason": "x", "requested_by": "a"}],
            }
        )
    )
    (loaded,) = service.all_requests(hdh_home).requests.values()
    save(store, loaded, [(resolved("hdh-tabular"), "passed")])
    instance.add_dynamic_partitions(REQUESTS.name, [loaded.request_id])
    instance.add_dynamic_partitions(PROJECTS.name, [PROJECT])
    first = tick(instance)
    assert runs(first) == [("publish_package_index", PROJECT)]
    _publish(store, PROJECT, service.project_state(PROJECT, hdh_home, [loaded]).digest)
    assert not tick(instance, first.cursor).run_requests

    request_file.unlink()  # the request is withdrawn (a reviewed change of the specs folder)
    assert service.project_state(PROJECT, hdh_home).approved == {}

    after = tick(instance, first.cursor)
    assert runs(after) == [("publish_package_index", PROJECT)]


def test_the_settings_the_sensors_read(tmp_path: Path) -> None:
    defaults = PackageSettings.from_env({})
    assert defaults.osv_export is None and defaults.osv_url is None
    assert defaults.devpi_url == "http://127.0.0.1:3141"
    assert defaults.r_repos_url == "http://127.0.0.1:3142"
    assert defaults.policy_path.name == "package-policy.yaml" and defaults.policy_path.exists()
    assert (defaults.upstream_retries, defaults.upstream_retry_seconds) == (5, 60)
    configured = PackageSettings.from_env(
        {
            "HDH_OSV_EXPORT": str(tmp_path / "osv"),
            "HDH_PACKAGE_POLICY": str(tmp_path / "policy.yaml"),
            "HDH_DEVPI_URL": "http://packages.test:3141/",
            "HDH_PYPI_UPSTREAM": "http://upstream.test/simple/",
            "HDH_CRAN_UPSTREAM": "",
        }
    )
    assert configured.osv_export == (tmp_path / "osv").resolve()
    assert configured.policy_path == (tmp_path / "policy.yaml").resolve()
    assert configured.devpi_url == "http://packages.test:3141"
    assert configured.upstream("pypi") == "http://upstream.test/simple/"
    assert configured.upstream("cran") is None  # empty means not configured


def test_a_version_approved_for_another_project_makes_a_multi_version_index_stale(
    hdh_home: HdhHome, specs: Path
) -> None:
    """A project served two versions of a name excludes the pool's others by name; when
    another project gets a third version approved, the first project's line must exclude it
    too, so its index is stale again."""
    store = service.package_store(hdh_home)
    old, new = request("hdh-core==1.0.0"), request("hdh-core==1.2.0")
    for filed, version in ((old, "1.0.0"), (new, "1.2.0")):
        file_request(filed, store.filed_requests)
        save(store, filed, [(resolved("hdh-core", version), "passed")])
    mine = [old, new]
    state = service.project_state(PROJECT, hdh_home, mine)
    assert state.constraints == ["hdh-core", "*"]  # both versions, the only ones in the pool
    _publish(store, PROJECT, state.digest)
    assert PROJECT not in service.stale_indexes(hdh_home, mine)

    theirs = request("hdh-core==2.0.0", project=OTHER)
    file_request(theirs, store.filed_requests)
    save(store, theirs, [(resolved("hdh-core", "2.0.0"), "passed")])
    assert PROJECT in service.stale_indexes(hdh_home, [*mine, theirs])
    again = service.project_state(PROJECT, hdh_home, [*mine, theirs])
    assert again.constraints == ["hdh-core !=2.0.0", "*"]
