"""The network-policy and security-context fragments the deployment and every workspace share."""

from __future__ import annotations

from pathlib import Path

from hdh_assets.workspaces.kube_objects import (
    egress_to_cidr,
    network_policy,
    restricted_container_security,
    restricted_pod_security,
    tcp_ports,
)
from hdh_assets.workspaces.manifests import RenderSettings, render_project
from hdh_assets.workspaces.specs import load_specs
from hdh_cli.deployment import kubernetes, pods
from hdh_cli.deployment.settings import DeploymentSettings

REPO = Path(__file__).resolve().parents[2]
META = {"name": "allow-x", "namespace": "hdh-ws-alpha"}


def test_tcp_ports_by_number_or_by_name() -> None:
    assert tcp_ports(443, "http") == [
        {"protocol": "TCP", "port": 443},
        {"protocol": "TCP", "port": "http"},
    ]
    assert tcp_ports() == []


def test_egress_to_cidr() -> None:
    assert egress_to_cidr("10.0.0.0/24", 5432) == {
        "to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
        "ports": [{"protocol": "TCP", "port": 5432}],
    }


def test_a_policy_lists_exactly_the_directions_it_is_given() -> None:
    deny = network_policy(META, {}, ingress=[], egress=[])
    assert deny == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": META,
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [],
        },
    }
    rule = egress_to_cidr("10.0.0.1/32", 443)
    egress_only = network_policy(META, {"matchLabels": {"a": "b"}}, egress=[rule])
    assert egress_only["spec"] == {
        "podSelector": {"matchLabels": {"a": "b"}},
        "policyTypes": ["Egress"],
        "egress": [rule],
    }
    assert network_policy(META, {}, ingress=[rule])["spec"]["policyTypes"] == ["Ingress"]


def test_pod_security_with_and_without_a_fixed_user() -> None:
    assert restricted_pod_security(10001) == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert restricted_pod_security() == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_container_security_as_the_deployment_and_the_workspaces_write_it() -> None:
    locked = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert restricted_container_security(1000, gid=1000) == {
        **locked,
        "runAsUser": 1000,
        "runAsGroup": 1000,
    }
    assert restricted_container_security(65534, gid=65534, read_only_root=True) == {
        **locked,
        "runAsUser": 65534,
        "runAsGroup": 65534,
        "readOnlyRootFilesystem": True,
    }
    deployment = {**locked, "privileged": False, "runAsUser": pods.APP_UID}
    assert pods.container_security_context() == {**deployment, "readOnlyRootFilesystem": True}
    assert pods.container_security_context(read_only_root=False) == {
        **deployment,
        "readOnlyRootFilesystem": False,
    }
    # Each call is a new dict: a caller amending its copy changes no other pod.
    first, second = restricted_container_security(1), restricted_container_security(1)
    first["capabilities"]["drop"].append("X")
    first["seccompProfile"]["type"] = "Unconfined"
    assert second == restricted_container_security(1)


def _containers(objects: list[dict]) -> list[dict]:
    return [
        container
        for obj in objects
        if obj["kind"] == "Deployment"
        for container in obj["spec"]["template"]["spec"]["containers"]
    ]


def test_every_container_the_renderers_produce_is_restricted() -> None:
    """Whatever the callers' parameters, the fence itself is the same in every container."""
    containers = [kubernetes.executor_pod_template(DeploymentSettings())["spec"]["containers"][0]]
    for mode in ("client", "connect"):
        containers += _containers(kubernetes.all_objects(DeploymentSettings(spark_mode=mode)))
    for spec in load_specs(REPO / "workspaces" / "projects").values():
        containers += _containers(render_project(spec, RenderSettings()))
    names = {container["name"] for container in containers}
    assert {"spark-executor", "spark-connect", "hub", "proxy"} <= names
    for container in containers:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["runAsNonRoot"] is True and context["runAsUser"] > 0
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
