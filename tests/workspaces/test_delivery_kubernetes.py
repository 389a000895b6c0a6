"""Server-side apply delivery through the real ``kubernetes`` client against a fake API server."""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.dynamic.exceptions import UnauthorizedError

from hdh_assets.workspaces.delivery import (
    DIGEST_ANNOTATION,
    GitOpsTarget,
    KubernetesTarget,
    ObjectRef,
    delivery_target,
    object_digest,
)
from hdh_assets.workspaces.kubernetes_api import KubernetesClusterApi
from tests.workspaces.fake_apiserver import APPLY_PATCH, FakeApiServer, parse_bool
from tests.workspaces.test_delivery_gitops import by_kind, sample_project

MANAGED = "app.kubernetes.io/managed-by=hdh-platform"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client honours proxy variables; the fake server is local."""
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer(token="t0ken") as fake:
        yield fake


@pytest.fixture
def api(server: FakeApiServer, tmp_path: Path) -> Iterator[KubernetesClusterApi]:
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    with KubernetesClusterApi.from_kubeconfig(
        kubeconfig, discovery_cache=tmp_path / "discovery.json"
    ) as cluster:
        yield cluster


@pytest.fixture
def target(api: KubernetesClusterApi) -> KubernetesTarget:
    return KubernetesTarget(api)


def stored(server: FakeApiServer, obj: dict) -> dict | None:
    ref = ObjectRef.of(obj)
    return server.get(ref.api_version, ref.kind, ref.namespace, ref.name)


def patches(server: FakeApiServer) -> list:
    return [r for r in server.requests if r.method == "PATCH"]


def deletes(server: FakeApiServer) -> list[str]:
    return [r.path for r in server.requests if r.method == "DELETE"]


def foreign_configmap(name: str, namespace: str, labels: dict | None = None) -> dict:
    meta = {"name": name, "namespace": namespace, "labels": labels or {}}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"a": "b"}}


def test_first_delivery_applies_everything_server_side(
    target: KubernetesTarget, server: FakeApiServer
) -> None:
    desired = {"alpha": sample_project("alpha"), "beta": sample_project("beta", secret=True)}

    report = target.deliver(desired, run_id="run-1")

    assert report.target == "kubernetes" and report.commit is None
    assert {p: d.status for p, d in report.projects.items()} == {"alpha": "added", "beta": "added"}
    assert len(report.projects["beta"].added) == len(desired["beta"])
    for obj in [*desired["alpha"], *desired["beta"]]:
        found = stored(server, obj)
        assert found is not None, obj
        assert found["metadata"]["annotations"][DIGEST_ANNOTATION] == object_digest(obj)
        assert found["metadata"]["managedFields"][0]["manager"] == "hdh-platform"
        assert found["metadata"]["uid"] and found["metadata"]["resourceVersion"]

    applied = patches(server)
    assert len(applied) == len(desired["alpha"]) + len(desired["beta"])
    assert {r.content_type for r in applied} == {APPLY_PATCH}
    assert {r.query["fieldManager"][0] for r in applied} == {"hdh-platform"}
    assert {parse_bool(r.query["force"][0]) for r in applied} == {True}
    kinds_in_order = [r.path.split("/")[-2] for r in applied]
    assert kinds_in_order[:2] == ["namespaces", "namespaces"]  # before anything inside them
    assert kinds_in_order[-4:] == ["deployments", "deployments", "ingresses", "ingresses"]
    assert "/apis/apps/v1/namespaces/hdh-ws-alpha/deployments/jupyterlab" in {
        r.path for r in applied
    }
    assert {r.authorization for r in server.requests} == {"Bearer t0ken"}  # from the kubeconfig
    assert {"/version", "/apis", "/api/v1", "/apis/apps/v1"} <= {r.path for r in server.requests}
    lists = [r for r in server.requests if r.method == "GET" and "labelSelector" in r.query]
    assert {r.query["labelSelector"][0] for r in lists} == {MANAGED}
    assert "/api/v1/configmaps" in {r.path for r in lists}  # across namespaces
    assert deletes(server) == []


def test_an_identical_second_delivery_reports_no_change(
    target: KubernetesTarget, server: FakeApiServer
) -> None:
    desired = {"alpha": sample_project("alpha"), "beta": sample_project("beta")}
    target.deliver(desired)
    versions = {o["metadata"]["uid"]: o["metadata"]["resourceVersion"] for o in server.objects()}
    server.clear_requests()

    report = target.deliver(copy.deepcopy(desired), run_id="run-2")

    assert not report.changed and report.summary() == "no change"
    assert {d.status for d in report.projects.values()} == {"unchanged"}
    after = {o["metadata"]["uid"]: o["metadata"]["resourceVersion"] for o in server.objects()}
    assert after == versions  # the server saw identical applies
    assert patches(server) == []  # a run with no change makes no apply
    assert deletes(server) == []


def test_a_changed_object_is_reported_and_updated(
    target: KubernetesTarget, server: FakeApiServer
) -> None:
    target.deliver({"alpha": sample_project("alpha"), "beta": sample_project("beta")})

    changed = sample_project("alpha", image="jupyter:2")
    report = target.deliver({"alpha": changed, "beta": sample_project("beta")})

    alpha = report.projects["alpha"]
    assert alpha.status == "updated"
    assert alpha.changed == ("Deployment hdh-ws-alpha/jupyterlab",)
    assert alpha.added == alpha.removed == alpha.repaired == ()
    assert report.projects["beta"].status == "unchanged"
    deployment = stored(server, by_kind(changed, "Deployment"))
    assert deployment is not None and deployment["metadata"]["generation"] == 2
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "jupyter:2"


def test_removal_prunes_by_label_and_deletes_the_namespace(
    target: KubernetesTarget, server: FakeApiServer
) -> None:
    target.deliver({"alpha": sample_project("alpha", secret=True), "beta": sample_project("beta")})
    server.clear_requests()

    report = target.deliver({"alpha": sample_project("alpha")}, run_id="run-3")

    assert report.summary() == "1 project updated, 1 decommissioned"
    assert report.projects["alpha"].removed == ("Secret hdh-ws-alpha/lake-token",)
    beta = report.projects["beta"]
    assert beta.status == "decommissioned"
    assert len(beta.removed) == len(sample_project("beta"))
    assert deletes(server) == [  # reverse apply order
        "/api/v1/persistentvolumes/hdh-ws-beta-grants",  # cluster-scoped: deleted by itself
        "/api/v1/namespaces/hdh-ws-alpha/secrets/lake-token",
        "/api/v1/namespaces/hdh-ws-beta",  # its objects go with it
    ]
    remaining = {ObjectRef.of(o) for o in server.objects()}
    assert remaining == {ObjectRef.of(o) for o in sample_project("alpha")}


def test_objects_without_our_label_are_never_deleted(
    target: KubernetesTarget, server: FakeApiServer
) -> None:
    target.deliver({"alpha": sample_project("alpha")})
    foreign = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-x"}},
        foreign_configmap("notes", "hdh-ws-alpha"),
        foreign_configmap("helm", "hdh-ws-alpha", {"app.kubernetes.io/managed-by": "Helm"}),
        foreign_configmap("lookalike", "hdh-ws-alpha", {"hdh.platform/project": "alpha"}),
    ]
    for obj in foreign:
        server.put(obj)

    report = target.deliver(
        {"alpha": [o for o in sample_project("alpha") if o["kind"] != "Service"]}
    )

    assert report.projects["alpha"].removed == ("Service hdh-ws-alpha/jupyterlab",)
    for obj in foreign:
        assert stored(server, obj) is not None, obj
    assert deletes(server) == ["/api/v1/namespaces/hdh-ws-alpha/services/jupyterlab"]


def test_fields_edited_by_someone_else_are_taken_back(
    target: KubernetesTarget, server: FakeApiServer
) -> None:
    desired = {"alpha": sample_project("alpha")}
    target.deliver(desired)
    configmap = stored(server, by_kind(desired["alpha"], "ConfigMap"))
    assert configmap is not None and configmap["kind"] == "ConfigMap"
    configmap["data"]["products"] = "everything"  # a hand edit keeping our labels and digest
    server.put(configmap, manager="kubectl-edit")
    assert not target.deliver(desired).changed  # an ordinary run does not even look

    report = dataclasses.replace(target, repair=True).deliver(desired)  # the daily drift run

    assert report.projects["alpha"].status == "updated"
    assert report.projects["alpha"].repaired == ("ConfigMap hdh-ws-alpha/grants",)
    restored = stored(server, by_kind(desired["alpha"], "ConfigMap"))
    assert restored is not None and restored["data"]["products"] == "claims@1.2.0"
    assert restored["metadata"]["managedFields"][0]["manager"] == "hdh-platform"


def test_status_written_by_controllers_is_not_drift(
    target: KubernetesTarget, server: FakeApiServer
) -> None:
    desired = {"alpha": sample_project("alpha")}
    target.deliver(desired)
    deployment = by_kind(desired["alpha"], "Deployment")
    before = server.write_status(deployment, {"readyReplicas": 1})

    report = dataclasses.replace(target, repair=True).deliver(desired)

    assert not report.changed
    after = stored(server, deployment)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_partial_delivery_touches_only_the_named_projects(
    target: KubernetesTarget, server: FakeApiServer
) -> None:
    target.deliver({"alpha": sample_project("alpha"), "beta": sample_project("beta")})
    server.clear_requests()

    report = target.decommission(["beta"], run_id="cli")

    assert set(report.projects) == {"beta"}
    assert report.projects["beta"].status == "decommissioned"
    assert patches(server) == []
    assert deletes(server) == [
        "/api/v1/persistentvolumes/hdh-ws-beta-grants",
        "/api/v1/namespaces/hdh-ws-beta",
    ]
    alpha = {ObjectRef.of(o) for o in sample_project("alpha")}
    assert {ObjectRef.of(o) for o in server.objects()} == alpha


def test_a_wrong_token_is_refused(server: FakeApiServer, tmp_path: Path) -> None:
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    kubeconfig.write_text(kubeconfig.read_text().replace("t0ken", "wrong"))
    with pytest.raises(UnauthorizedError):
        KubernetesClusterApi.from_kubeconfig(kubeconfig, discovery_cache=tmp_path / "cache.json")


def test_a_namespace_still_holding_desired_objects_is_kept(
    target: KubernetesTarget, server: FakeApiServer
) -> None:
    target.deliver({"alpha": sample_project("alpha")})
    without_namespace = [o for o in sample_project("alpha") if o["kind"] != "Namespace"]

    report = target.deliver({"alpha": without_namespace})

    assert deletes(server) == []
    assert report.projects["alpha"].status == "unchanged"
    assert server.get("v1", "Namespace", None, "hdh-ws-alpha") is not None


def test_delivery_target_picks_kubernetes_when_a_kubeconfig_is_given(
    server: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the client's discovery cache
    assert isinstance(delivery_target(tmp_path), GitOpsTarget)
    chosen = delivery_target(tmp_path, kubeconfig=server.write_kubeconfig(tmp_path / "kc"))
    assert isinstance(chosen, KubernetesTarget)
    assert isinstance(chosen.api, KubernetesClusterApi)
    chosen.api.close()


def raw_request(server: FakeApiServer, method: str, path: str, **headers: str) -> int:
    request = urllib.request.Request(
        f"{server.url}{path}", method=method, data=b"{}" if method == "PATCH" else None
    )
    for name, value in {"Authorization": f"Bearer {server.token}", **headers}.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_fake_answers_what_it_does_not_serve_as_a_real_server() -> None:
    aggregated = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    with FakeApiServer() as server:
        assert raw_request(server, "GET", "/apis", Accept=aggregated) == 406
        assert raw_request(server, "GET", "/apis", Accept=f"{aggregated},application/json") == 200
        assert raw_request(server, "GET", "/openapi/v2") == 404
        assert raw_request(server, "GET", "/api/v1", Authorization="Bearer nope") == 401
        merge = {"Content-Type": "application/merge-patch+json"}
        assert raw_request(server, "PATCH", "/api/v1/namespaces/x", **merge) == 415
        no_manager = {"Content-Type": APPLY_PATCH}
        assert raw_request(server, "PATCH", "/api/v1/namespaces/x", **no_manager) == 400


def test_delivered_digests_say_what_each_project_holds(
    target: KubernetesTarget, server: FakeApiServer
) -> None:
    desired = {"alpha": sample_project("alpha"), "beta": sample_project("beta")}
    target.deliver(desired)
    held = target.delivered_digests()
    assert sorted(held) == ["alpha", "beta"]
    assert held["alpha"] == {str(ObjectRef.of(o)): object_digest(o) for o in desired["alpha"]}
