"""The specs sensor's first tick (empty cursor) after ``hdh demo`` / ``hdh workspaces apply``:
what the instance says was provisioned is not provisioned again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from hdh_assets.products.releases import ReleaseStore

REPO_SPECS = Path(__file__).resolve().parents[2] / "workspaces"
PROJECTS = ["cardio-imaging", "diabetes-outcomes"]
pytestmark = pytest.mark.slow


@pytest.fixture
def specs(hdh_home, tmp_path, monkeypatch):
    """The example specs in a folder of their own, with the releases they are granted."""
    folder = tmp_path / "ws"
    shutil.copytree(REPO_SPECS, folder)
    monkeypatch.setenv("HDH_WORKSPACE_SPECS", str(folder / "projects"))
    store = ReleaseStore(hdh_home.releases)
    for spec_file in sorted((folder / "projects").glob("*.yaml")):
        for grant in yaml.safe_load(spec_file.read_text())["grants"]:
            if any(r.version == grant["version"] for r in store.releases(grant["product"])):
                continue
            source = hdh_home.root / "tmp" / grant["product"]
            source.mkdir(parents=True)
            pl.DataFrame({"subject_pseudonym": ["s1", "s2"], "n": [1, 2]}).write_parquet(
                source / "part-0.parquet"
            )
            store.create(
                grant["product"], grant["version"], source, {"subject_column": "subject_pseudonym"}
            )
    return folder / "projects"


@pytest.fixture
def provisioned(hdh_home, specs):
    """An instance where both example projects were provisioned in-process, as the demo does:
    each project's spec, grants and manifests materialised in its partition, then delivered
    (here by the job the sensor itself launches)."""
    from hdh_assets.definitions import build_definitions

    job = build_definitions(hdh_home).resolve_job_def("provision_workspaces")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("workspace_projects", PROJECTS)
        for project in PROJECTS:
            assert job.execute_in_process(instance=instance, partition_key=project).success
        yield instance


def _tick(instance, cursor=None):
    from hdh_assets.definitions import defs
    from sensors.workspaces import workspace_specs_sensor

    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return workspace_specs_sensor(context)


def _provisioned_projects(result) -> list[str]:
    return sorted(r.partition_key for r in result.run_requests if r.partition_key)


def test_the_first_tick_after_the_demo_provisions_nothing_and_a_change_only_its_project(
    provisioned, specs
):
    from hdh_assets.workspaces.assets import SPEC_FILE_DIGEST, SPECS_KEY
    from sensors.workspaces import spec_digests

    # the materialisation carries the digest the sensor computes
    digests = spec_digests()
    for project in PROJECTS:
        (record,) = provisioned.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SPECS_KEY, asset_partitions=[project]), limit=1
        ).records
        metadata = record.asset_materialization.metadata
        assert metadata[SPEC_FILE_DIGEST].value == digests[project]

    first = _tick(provisioned)  # the daemon starts: empty cursor
    assert first.run_requests == [] and first.dynamic_partitions_requests == []
    assert json.loads(first.cursor)["seen"] == digests  # the cache is filled

    spec_file = specs / "cardio-imaging.yaml"
    spec_file.write_text(spec_file.read_text().replace("Cardiac imaging", "Cardiac imaging v2"))
    for cursor in (None, first.cursor):  # whether the cursor knows the project or not
        changed = _tick(provisioned, cursor)
        assert _provisioned_projects(changed) == ["cardio-imaging"]
        assert [r.job_name for r in changed.run_requests] == ["provision_workspaces"]


def test_with_an_empty_cursor_the_approvals_file_still_counts(provisioned, specs):
    approvals = specs.parent / "approvals.yaml"
    approvals.write_text(approvals.read_text() + "\n# revised\n")
    assert _provisioned_projects(_tick(provisioned)) == PROJECTS


def test_a_provisioning_that_stopped_half_way_is_done_again(hdh_home, provisioned, specs):
    from hdh_assets.definitions import build_resources
    from hdh_assets.workspaces.assets import workspace_specs

    # a newer spec materialisation without manifests after it: the run stopped half-way
    spec_file = specs / "diabetes-outcomes.yaml"
    spec_file.write_text(spec_file.read_text() + "\n# edited\n")
    outcome = dg.materialize(
        [workspace_specs],
        instance=provisioned,
        partition_key="diabetes-outcomes",
        resources=build_resources(hdh_home),
    )
    assert outcome.success
    assert _provisioned_projects(_tick(provisioned)) == ["diabetes-outcomes"]


def test_a_decommissioned_project_whose_spec_comes_back_is_provisioned(
    hdh_home, provisioned, specs
):
    from hdh_assets.workspaces.assets import decommission

    spec_file = specs / "cardio-imaging.yaml"
    text = spec_file.read_text()
    spec_file.unlink()
    removal = _tick(provisioned)
    assert [r.job_name for r in removal.run_requests] == ["deliver_workspaces"]
    # what that delivery does: everything of the project goes, its partition among them
    decommission(hdh_home, provisioned, {"cardio-imaging"}, "test", None)
    spec_file.write_text(text)  # the very same spec comes back
    back = _tick(provisioned)  # the cursor of a restarted daemon, or a fresh one
    assert _provisioned_projects(back) == ["cardio-imaging"]
    (added,) = back.dynamic_partitions_requests
    assert list(added.partition_keys) == ["cardio-imaging"]
