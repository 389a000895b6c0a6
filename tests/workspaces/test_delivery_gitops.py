"""GitOps delivery against a real Git repository: one commit per change, none otherwise."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from hdh_assets.workspaces import delivery
from hdh_assets.workspaces.delivery import (
    GitOpsTarget,
    ObjectRef,
    validate_desired,
)


def _meta(project: str, name: str, namespaced: bool = True) -> dict:
    meta = {
        "name": name,
        "labels": {
            "app.kubernetes.io/managed-by": "hdh-platform",
            "hdh.platform/project": project,
        },
    }
    if namespaced:
        meta["namespace"] = f"hdh-ws-{project}"
    return meta


def sample_project(project: str, *, image: str = "jupyter:1", secret: bool = False) -> list[dict]:
    """One object of each kind the renderer produces (Secret optional), in a shuffled order."""
    ns = f"hdh-ws-{project}"
    objects = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(project, "jupyterlab"),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "jupyterlab"}},
                "template": {
                    "metadata": {"labels": {"app": "jupyterlab"}},
                    "spec": {
                        "serviceAccountName": "workspace",
                        "containers": [{"name": "lab", "image": image}],
                    },
                },
            },
        },
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(project, ns, False)},
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": _meta(project, "quota"),
            "spec": {"hard": {"requests.cpu": "4", "requests.memory": "16Gi"}},
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": _meta(project, "defaults"),
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "1"}}]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(project, "deny-egress"),
            "spec": {"podSelector": {}, "policyTypes": ["Egress"]},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(project, "workspace")},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(project, "reader"),
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(project, "reader"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "workspace", "namespace": ns}],
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _meta(project, "home"),
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "10Gi"}},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(project, "grants"),
            "data": {"products": "claims@1.2.0", "version": "1"},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(project, "jupyterlab"),
            "spec": {"selector": {"app": "jupyterlab"}, "ports": [{"port": 8888}]},
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": _meta(project, f"{ns}-grants", False),
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": _meta(project, "workspace"),
            "spec": {"rules": [{"host": f"jupyterlab-{project}.example.org"}]},
        },
    ]
    if secret:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": _meta(project, "lake-token"),
                "stringData": {"token": "s3cr3t"},
            }
        )
    return objects


def by_kind(objects: list[dict], kind: str) -> dict:
    return next(o for o in objects if o["kind"] == kind)


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout


def commit_count(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "HEAD"))


def tracked_files(repo: Path) -> set[str]:
    return set(git(repo, "ls-files").split())


def expected_files(desired: dict[str, list[dict]]) -> set[str]:
    names = {"kustomization.yaml"}
    for project, objects in desired.items():
        names.add(f"{project}/kustomization.yaml")
        names |= {f"{project}/{delivery.manifest_file_name(o)}" for o in objects}
    return names


@pytest.fixture(autouse=True)
def hermetic_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """No user or system git configuration: the target must not need any."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def target(tmp_path: Path) -> GitOpsTarget:
    return GitOpsTarget.for_home(tmp_path / "hdh")


def test_first_delivery_commits_each_project_as_a_kustomization(target: GitOpsTarget) -> None:
    desired = {"alpha": sample_project("alpha"), "beta": sample_project("beta", secret=True)}

    report = target.deliver(desired, run_id="run-1")

    repo = target.repo
    assert report.commit == git(repo, "rev-parse", "HEAD").strip()
    assert commit_count(repo) == 1
    assert git(repo, "symbolic-ref", "--short", "HEAD").strip() == "main"
    assert git(repo, "log", "-1", "--format=%an <%ae>").strip() == (
        "hdh-platform <hdh-platform@localhost>"
    )
    assert tracked_files(repo) == expected_files(desired)
    assert {p: d.status for p, d in report.projects.items()} == {"alpha": "added", "beta": "added"}
    assert "Secret hdh-ws-beta/lake-token" in report.projects["beta"].added

    message = git(repo, "log", "-1", "--format=%B")
    assert message.splitlines()[0] == "provision: 2 projects added"
    assert "alpha (added)" in message and "  + Deployment hdh-ws-alpha/jupyterlab" in message
    assert "Run-Id: run-1" in git(repo, "log", "-1", "--format=%(trailers)")

    kustomization = yaml.safe_load((repo / "alpha" / "kustomization.yaml").read_text())
    assert kustomization["resources"][0] == "namespace-hdh-ws-alpha.yaml"  # applied first
    assert sorted(kustomization["resources"]) == sorted(
        delivery.manifest_file_name(o) for o in desired["alpha"]
    )
    assert yaml.safe_load((repo / "kustomization.yaml").read_text())["resources"] == [
        "alpha",
        "beta",
    ]
    assert target.delivered() == validate_desired(desired)


def test_files_are_deterministic_yaml_with_sorted_keys(target: GitOpsTarget) -> None:
    objects = sample_project("alpha")
    target.deliver({"alpha": objects})

    text = (target.repo / "alpha" / "configmap-grants.yaml").read_text()
    assert text.splitlines()[0] == "apiVersion: v1"
    assert text.index("data:") < text.index("kind:") < text.index("metadata:")
    assert yaml.safe_load(text) == by_kind(objects, "ConfigMap")
    assert "'1'" in text  # a string that looks like a number stays a string


def test_identical_delivery_makes_no_commit(target: GitOpsTarget) -> None:
    desired = {"alpha": sample_project("alpha"), "beta": sample_project("beta")}
    first = target.deliver(desired, run_id="run-1")

    again = target.deliver(copy.deepcopy(desired), run_id="run-2")

    assert again.commit is None and not again.changed
    assert again.summary() == "no change"
    assert {d.status for d in again.projects.values()} == {"unchanged"}
    assert commit_count(target.repo) == 1
    assert target.head() == first.commit


def test_changing_one_object_commits_only_that_project(target: GitOpsTarget) -> None:
    target.deliver({"alpha": sample_project("alpha"), "beta": sample_project("beta")})

    report = target.deliver(
        {"alpha": sample_project("alpha", image="jupyter:2"), "beta": sample_project("beta")},
        run_id="run-2",
    )

    assert commit_count(target.repo) == 2
    touched = git(target.repo, "show", "--name-only", "--format=", "HEAD").split()
    assert touched == ["alpha/deployment-jupyterlab.yaml"]
    alpha = report.projects["alpha"]
    assert alpha.status == "updated"
    assert alpha.changed == ("Deployment hdh-ws-alpha/jupyterlab",)
    assert alpha.added == alpha.removed == ()
    assert report.projects["beta"].status == "unchanged"
    message = git(target.repo, "log", "-1", "--format=%B")
    assert message.startswith("provision: 1 project updated\n")
    assert "  ~ Deployment hdh-ws-alpha/jupyterlab" in message
    assert "beta" not in message


def test_objects_no_longer_desired_are_removed(target: GitOpsTarget) -> None:
    target.deliver({"alpha": sample_project("alpha", secret=True)})

    report = target.deliver({"alpha": sample_project("alpha")})

    assert report.projects["alpha"].removed == ("Secret hdh-ws-alpha/lake-token",)
    assert "alpha/secret-lake-token.yaml" not in tracked_files(target.repo)
    kustomization = yaml.safe_load((target.repo / "alpha" / "kustomization.yaml").read_text())
    assert "secret-lake-token.yaml" not in kustomization["resources"]
    assert commit_count(target.repo) == 2


def test_a_project_absent_from_the_desired_set_is_decommissioned(target: GitOpsTarget) -> None:
    target.deliver({"alpha": sample_project("alpha"), "beta": sample_project("beta")})

    report = target.deliver({"alpha": sample_project("alpha")}, run_id="run-3")

    assert not (target.repo / "beta").exists()
    assert tracked_files(target.repo) == expected_files({"alpha": sample_project("alpha")})
    assert report.projects["beta"].status == "decommissioned"
    assert len(report.projects["beta"].removed) == len(sample_project("beta"))
    assert commit_count(target.repo) == 2
    message = git(target.repo, "log", "-1", "--format=%B")
    assert message.startswith("provision: 1 project decommissioned\n")
    assert "beta (decommissioned)" in message and "  - Namespace hdh-ws-beta" in message


def test_summary_counts_every_kind_of_change(target: GitOpsTarget) -> None:
    target.deliver({p: sample_project(p) for p in ("alpha", "beta", "gamma")})

    report = target.deliver(
        {
            "alpha": sample_project("alpha", image="jupyter:2"),
            "beta": sample_project("beta", secret=True),
            "delta": sample_project("delta"),
        }
    )

    assert report.summary() == "2 projects updated, 1 added, 1 decommissioned"
    subject = git(target.repo, "log", "-1", "--format=%s").strip()
    assert subject == f"provision: {report.summary()}"
    assert commit_count(target.repo) == 2


def test_partial_delivery_keeps_the_other_projects(target: GitOpsTarget) -> None:
    target.deliver({"alpha": sample_project("alpha"), "beta": sample_project("beta")})

    updated = target.deliver_partial({"beta": sample_project("beta", image="jupyter:3")})
    assert set(updated.projects) == {"alpha", "beta"}
    assert updated.projects["alpha"].status == "unchanged"
    assert updated.projects["beta"].changed == ("Deployment hdh-ws-beta/jupyterlab",)

    gone = target.decommission(["alpha"])
    assert gone.projects["alpha"].status == "decommissioned"
    assert set(target.delivered()) == {"beta"}
    assert commit_count(target.repo) == 3


def test_uncommitted_leftovers_are_discarded_and_the_rerun_commits_once(
    target: GitOpsTarget,
) -> None:
    desired = {"alpha": sample_project("alpha"), "beta": sample_project("beta")}
    target.deliver(desired)
    repo = target.repo
    # What a crashed delivery (or a hand edit) can leave: a truncated file, a temp file,
    # a deleted file, a stray folder, staged junk, and git's own lock.
    (repo / "alpha" / "deployment-jupyterlab.yaml").write_text("apiVersion: ap")
    (repo / "alpha" / ".configmap-grants.yaml.tmp").write_text("half")
    (repo / "beta" / "service-jupyterlab.yaml").unlink()
    (repo / "stray").mkdir()
    (repo / "stray" / "x.yaml").write_text("kind: Junk\n")
    (repo / "beta" / "staged.yaml").write_text("junk\n")
    git(repo, "add", "beta/staged.yaml")
    (repo / ".git" / "index.lock").write_text("")

    changed = {"alpha": sample_project("alpha", image="jupyter:2"), "beta": sample_project("beta")}
    report = target.deliver(changed)

    assert commit_count(repo) == 2
    assert git(repo, "status", "--porcelain") == ""
    assert tracked_files(repo) == expected_files(changed)
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == [
        "alpha/deployment-jupyterlab.yaml"
    ]
    assert report.projects["beta"].status == "unchanged"  # judged against the last commit
    assert target.delivered() == validate_desired(changed)


def test_a_crash_mid_write_converges_on_rerun(
    target: GitOpsTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    desired = {"alpha": sample_project("alpha"), "beta": sample_project("beta")}
    real_write = delivery._write_atomically
    written: list[Path] = []

    def crash_after_five(path: Path, content: str) -> None:
        if len(written) == 5:
            path.with_name(f".{path.name}.tmp").write_text(content[:10])  # torn temp file
            raise KeyboardInterrupt("killed mid-write")
        written.append(path)
        real_write(path, content)

    monkeypatch.setattr(delivery, "_write_atomically", crash_after_five)
    with pytest.raises(KeyboardInterrupt):
        target.deliver(desired)
    assert target.head() is None  # nothing committed

    monkeypatch.setattr(delivery, "_write_atomically", real_write)
    report = target.deliver(desired, run_id="rerun")

    assert commit_count(target.repo) == 1
    assert tracked_files(target.repo) == expected_files(desired)
    assert git(target.repo, "status", "--porcelain", "--ignored") == ""
    assert {d.status for d in report.projects.values()} == {"added"}


def test_invalid_input_is_refused_before_touching_the_repository(target: GitOpsTarget) -> None:
    unlabelled = sample_project("alpha")
    del unlabelled[0]["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    with pytest.raises(ValueError, match="managed-by"):
        target.deliver({"alpha": unlabelled})
    with pytest.raises(ValueError, match="DNS label"):
        target.deliver({"../etc": []})
    claimed_twice = copy.deepcopy(by_kind(sample_project("alpha"), "ConfigMap"))
    claimed_twice["metadata"]["labels"]["hdh.platform/project"] = "beta"
    with pytest.raises(ValueError, match="desired by both"):
        target.deliver(
            {"alpha": sample_project("alpha"), "beta": [*sample_project("beta"), claimed_twice]}
        )
    assert not target.repo.exists()


def test_a_non_empty_folder_that_is_not_a_repository_is_not_taken_over(
    target: GitOpsTarget,
) -> None:
    target.repo.mkdir(parents=True)
    (target.repo / "notes.txt").write_text("someone's files")
    with pytest.raises(RuntimeError, match="not a Git repository"):
        target.deliver({"alpha": sample_project("alpha")})
    assert (target.repo / "notes.txt").read_text() == "someone's files"


def test_the_report_is_json_for_dagster_metadata(target: GitOpsTarget) -> None:
    report = target.deliver({"alpha": sample_project("alpha")}, run_id="r")
    data = json.loads(json.dumps(report.as_dict()))
    assert data["commit"] == report.commit and data["summary"] == "1 project added"
    assert data["projects"]["alpha"]["status"] == "added"


def test_object_ref_reads_like_kubectl() -> None:
    objects = sample_project("alpha")
    assert str(ObjectRef.of(by_kind(objects, "Namespace"))) == "Namespace hdh-ws-alpha"
    deployment = by_kind(objects, "Deployment")
    assert str(ObjectRef.of(deployment)) == "Deployment hdh-ws-alpha/jupyterlab"
