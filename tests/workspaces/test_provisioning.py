"""Provisioning through Dagster: specs -> grants -> manifests -> one GitOps commit per change."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from hdh_assets.products.releases import ReleaseStore
from hdh_cli.main import cli

REPO_SPECS = Path(__file__).resolve().parents[2] / "workspaces"
pytestmark = pytest.mark.slow


def _hdh(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, (result.stdout if "--json" in args else result.output)


def _commits(repo: Path) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(repo), "log", "--format=%s"], capture_output=True, text=True, check=True
    )
    return out.stdout.splitlines()


def _release_everything_granted(home, specs: Path) -> None:
    """The releases the example projects are granted, with a few pseudonymised subjects."""
    store = ReleaseStore(home.releases)
    for spec_file in sorted(specs.glob("*.yaml")):
        for grant in yaml.safe_load(spec_file.read_text())["grants"]:
            if any(r.version == grant["version"] for r in store.releases(grant["product"])):
                continue
            source = home.root / "tmp" / grant["product"]
            source.mkdir(parents=True)
            pl.DataFrame({"subject_pseudonym": ["s1", "s2", "s3"], "n": [1, 2, 3]}).write_parquet(
                source / "part-0.parquet"
            )
            store.create(
                grant["product"], grant["version"], source, {"subject_column": "subject_pseudonym"}
            )


@pytest.fixture
def specs(hdh_home, tmp_path, monkeypatch):
    folder = tmp_path / "ws"
    shutil.copytree(REPO_SPECS, folder)
    monkeypatch.setenv("HDH_WORKSPACE_SPECS", str(folder / "projects"))
    _release_everything_granted(hdh_home, folder / "projects")
    return folder / "projects"


def test_apply_provisions_both_projects_then_changes_nothing(hdh_home, specs):
    code, out = _hdh("workspaces", "apply", "--json")
    assert code == 0, out
    first = json.loads(out)
    assert first["provisioned"] == ["cardio-imaging", "diabetes-outcomes"]
    assert first["delivery"]["summary"] == "2 projects added"
    repo = hdh_home.gitops
    folders = sorted(p.name for p in repo.iterdir() if p.is_dir() and p.name != ".git")
    assert folders == ["cardio-imaging", "diabetes-outcomes"]
    assert len(_commits(repo)) == 1
    # the grants are there, read-only, with their manifest
    grants = hdh_home.workspaces / "diabetes-outcomes" / "grants"
    manifest = json.loads((grants / "manifest.json").read_text())
    assert {g["product"] for g in manifest["grants"]} == {
        "diabetes_patients",
        "hba1c_trajectory",
        "care_consumption_per_month",
    }
    assert (grants / "diabetes_patients" / "1.0.0" / "data" / "part-0.parquet").exists()

    code, out = _hdh("workspaces", "apply", "--json")
    again = json.loads(out)
    assert code == 0 and again["provisioned"] == []
    assert again["delivery"]["summary"] == "no change" and len(_commits(repo)) == 1
    code, out = _hdh("workspaces", "diff", "--json")
    assert json.loads(out)["changes"] == {}


def test_a_changed_spec_makes_one_commit_touching_only_its_project(hdh_home, specs):
    assert _hdh("workspaces", "apply")[0] == 0
    spec_file = specs / "cardio-imaging.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["members"].append({"user": "new.analyst", "role": "analyst"})
    spec_file.write_text(yaml.safe_dump(spec))
    code, out = _hdh("workspaces", "diff", "--json")
    changes = json.loads(out)["changes"]
    assert list(changes) == ["cardio-imaging"] and changes["cardio-imaging"]["status"] == "update"
    code, out = _hdh("workspaces", "apply", "--json")
    result = json.loads(out)
    assert code == 0 and result["provisioned"] == ["cardio-imaging"]
    assert result["delivery"]["summary"] == "1 project updated"
    repo = hdh_home.gitops
    assert len(_commits(repo)) == 2
    touched = subprocess.run(
        ["git", "-C", str(repo), "show", "--name-only", "--format=", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert touched and all(path.startswith("cardio-imaging/") for path in touched)


def test_a_removed_or_expired_project_is_decommissioned(hdh_home, specs):
    assert _hdh("workspaces", "apply")[0] == 0
    (specs / "cardio-imaging.yaml").unlink()
    expiring = specs / "diabetes-outcomes.yaml"
    spec = yaml.safe_load(expiring.read_text())
    spec["expires"] = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    expiring.write_text(yaml.safe_dump(spec))
    code, out = _hdh("workspaces", "apply", "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["delivery"]["summary"] == "2 projects decommissioned"
    assert not (hdh_home.gitops / "cardio-imaging").exists()
    assert not (hdh_home.gitops / "diabetes-outcomes").exists()
    assert not (hdh_home.workspaces / "diabetes-outcomes" / "grants").exists()
    reports = sorted(p.stem for p in (hdh_home.workspaces / ".decommissioned").glob("*.json"))
    assert reports == ["cardio-imaging", "diabetes-outcomes"]
    assert len(_commits(hdh_home.gitops)) == 2


def test_a_refused_spec_names_file_field_and_reason_and_never_tears_down(hdh_home, specs):
    assert _hdh("workspaces", "apply")[0] == 0
    spec_file = specs / "cardio-imaging.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["grants"].append({"product": "chronic_medication_cohort", "version": "1.0.0"})
    spec_file.write_text(yaml.safe_dump(spec))
    code, out = _hdh("workspaces", "apply", "--json")
    result = json.loads(out)
    (refused,) = result["refused_specs"]
    assert "cardio-imaging.yaml" in refused and "grants[2].product" in refused
    assert "not approved by authorisation" in refused
    assert (hdh_home.gitops / "cardio-imaging").exists()  # still delivered as it was
    code, out = _hdh("workspaces", "render", "cardio-imaging")
    assert code != 0 and "not approved" in out


def test_the_sensor_keeps_partitions_in_step_and_runs_each_spec_version_once(hdh_home, specs):
    from hdh_assets.definitions import defs
    from sensors.workspaces import workspace_specs_sensor

    with dg.instance_for_test() as instance:

        def tick(cursor):
            context = dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor)
            return workspace_specs_sensor(context)

        first = tick(None)
        assert sorted(r.partition_key for r in first.run_requests) == [
            "cardio-imaging",
            "diabetes-outcomes",
        ]
        (added,) = first.dynamic_partitions_requests
        assert sorted(added.partition_keys) == ["cardio-imaging", "diabetes-outcomes"]
        instance.add_dynamic_partitions("workspace_projects", list(added.partition_keys))
        assert tick(first.cursor).run_requests == []  # nothing changed: nothing runs
        # A -> B -> A: the revert is provisioned again (a run key per change, not per content)
        spec_file = specs / "cardio-imaging.yaml"
        original = spec_file.read_text()
        spec_file.write_text(original.replace("Cardiac imaging", "Cardiac imaging (v2)"))
        second = tick(first.cursor)
        spec_file.write_text(original)
        third = tick(second.cursor)
        keys = [r.run_key for r in [*second.run_requests, *third.run_requests]]
        assert [k.split(":")[0] for k in keys] == ["cardio-imaging", "cardio-imaging"]
        assert len(set(keys)) == 2
        # an approvals change re-provisions every project
        approvals = specs.parent / "approvals.yaml"
        approvals.write_text(approvals.read_text() + "\n# revised\n")
        fourth = tick(third.cursor)
        assert len(fourth.run_requests) == 2
        # a removed spec: its partition goes and a delivery decommissions it
        spec_file.unlink()
        fifth = tick(fourth.cursor)
        assert [r.job_name for r in fifth.run_requests] == ["deliver_workspaces"]
        (deleted,) = fifth.dynamic_partitions_requests
        assert list(deleted.partition_keys) == ["cardio-imaging"]


def test_a_missing_specs_folder_changes_nothing(hdh_home, specs, monkeypatch):
    from hdh_assets.definitions import defs
    from sensors.workspaces import workspace_specs_sensor

    assert _hdh("workspaces", "apply")[0] == 0
    monkeypatch.setenv("HDH_WORKSPACE_SPECS", str(specs.parent / "not-mounted"))
    code, out = _hdh("workspaces", "apply")
    assert code != 0 and "is missing: nothing was changed" in out
    assert (hdh_home.gitops / "cardio-imaging").exists()
    assert (hdh_home.workspaces / "cardio-imaging" / "grants").exists()
    from hdh_cli.instance import platform_instance

    instance = platform_instance(hdh_home)
    result = workspace_specs_sensor(dg.build_sensor_context(instance=instance, definitions=defs))
    assert isinstance(result, dg.SkipReason)


def test_a_retired_project_leaves_nothing_an_erasure_could_trip_on(hdh_home, specs):
    from hdh_cli.instance import platform_instance

    assert _hdh("workspaces", "apply")[0] == 0
    ledger = hdh_home.lake / "workspaces" / "workspace_data_grants" / "project=cardio-imaging"
    assert ledger.exists()
    (specs / "cardio-imaging.yaml").unlink()
    assert _hdh("workspaces", "apply")[0] == 0
    assert not ledger.exists() and not (hdh_home.workspaces / "cardio-imaging").exists()
    instance = platform_instance(hdh_home)
    assert "cardio-imaging" not in instance.get_dynamic_partitions("workspace_projects")
    report = hdh_home.workspaces / ".decommissioned" / "cardio-imaging.json"
    first = report.read_text()
    assert _hdh("workspaces", "apply")[0] == 0
    assert report.read_text() == first  # recorded once
    code, out = _hdh("materialize", 'key:"gdpr/subject_index"', "--json")
    assert code == 0, out
    index = pl.read_parquet(hdh_home.lake / "gdpr" / "subject_index")
    assert "cardio-imaging" not in index["partition"].to_list()


def test_with_a_kubeconfig_apply_goes_to_the_cluster_and_a_rerun_applies_nothing(
    hdh_home, specs, tmp_path, monkeypatch
):
    from tests.workspaces.fake_apiserver import APPLY_PATCH, FakeApiServer

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    with FakeApiServer(token="t0ken") as server:
        monkeypatch.setenv("HDH_KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kube")))
        code, out = _hdh("workspaces", "apply", "--json")
        assert code == 0, out
        assert json.loads(out)["delivery"]["target"] == "kubernetes"
        namespaces = {o["metadata"]["name"] for o in server.objects() if o["kind"] == "Namespace"}
        assert namespaces == {"hdh-ws-cardio-imaging", "hdh-ws-diabetes-outcomes"}
        applies = [r for r in server.requests if r.content_type == APPLY_PATCH]
        assert applies and all(r.query.get("fieldManager") == ["hdh-platform"] for r in applies)
        assert not (hdh_home.gitops / "cardio-imaging").exists()  # not the GitOps target
        server.clear_requests()
        code, out = _hdh("workspaces", "apply", "--json")
        assert json.loads(out)["delivery"]["summary"] == "no change"
        assert [r for r in server.requests if r.method == "PATCH"] == []
        code, out = _hdh("workspaces", "diff", "--json")
        assert json.loads(out)["changes"] == {}
