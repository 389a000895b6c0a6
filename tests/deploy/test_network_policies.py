"""The network policies: default deny, then exactly the paths each component needs.

A small evaluator reads the rendered policies as the API server's semantics say (a pod is
isolated in a direction once a policy of that type selects it; a connection passes when the
source's egress and the destination's ingress both allow it) and the tests ask it who reaches
whom, on which port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hdh_cli.deployment import pods
from hdh_cli.deployment.settings import DeploymentSettings
from tests.deploy.conftest import manifest_objects

NAMESPACE = DeploymentSettings().namespace


@dataclass(frozen=True)
class Peer:
    """A pod (namespace, labels) or an address outside the cluster."""

    namespace: str | None = None
    labels: Mapping[str, str] | None = None
    ip: str | None = None


def component(name: str, namespace: str = NAMESPACE) -> Peer:
    return Peer(namespace, pods.labels(name))


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _peer_matches(rule_peer: Mapping[str, Any], peer: Peer, policy_ns: str) -> bool:
    if "ipBlock" in rule_peer:
        network = ipaddress.ip_network(rule_peer["ipBlock"]["cidr"])
        return peer.ip is not None and ipaddress.ip_address(peer.ip) in network
    if peer.labels is None:
        return False
    if "namespaceSelector" in rule_peer:
        ns_labels = {"kubernetes.io/metadata.name": peer.namespace or ""}
        if not _selects(rule_peer["namespaceSelector"], ns_labels):
            return False
    elif peer.namespace != policy_ns:
        return False
    return _selects(rule_peer.get("podSelector") or {}, peer.labels)


def _port_matches(ports: list[Mapping[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    return any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports)


class Policies:
    def __init__(self, objects: list[dict[str, Any]]):
        self.policies = [o for o in objects if o["kind"] == "NetworkPolicy"]

    def _allowed(self, pod: Peer, other: Peer, port: int, protocol: str, direction: str) -> bool:
        if pod.labels is None or pod.namespace != NAMESPACE:
            return True  # not fenced by these policies (another namespace, or outside)
        key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
        isolating = [
            p
            for p in self.policies
            if direction in p["spec"]["policyTypes"]
            and _selects(p["spec"]["podSelector"], pod.labels)
        ]
        if not isolating:
            return True
        for policy in isolating:
            for rule in policy["spec"].get(key, []):
                peers = rule.get(peers_key)
                if (
                    not peers or any(_peer_matches(r, other, NAMESPACE) for r in peers)
                ) and _port_matches(rule.get("ports"), port, protocol):
                    return True
        return False

    def reaches(self, source: Peer, target: Peer, port: int, protocol: str = "TCP") -> bool:
        return self._allowed(source, target, port, protocol, "Egress") and self._allowed(
            target, source, port, protocol, "Ingress"
        )


def _policies(settings: DeploymentSettings) -> Policies:
    from hdh_cli.deployment.render import render

    return Policies(manifest_objects(render(settings)))


def test_default_deny_selects_every_pod_in_both_directions(files):
    policies = [o for o in manifest_objects(files) if o["kind"] == "NetworkPolicy"]
    deny = next(p for p in policies if p["metadata"]["name"] == "default-deny")
    assert deny["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [],
    }
    stranger = Peer(NAMESPACE, {"app": "anything"})
    outside = Peer(ip="203.0.113.7")
    fenced = Policies(policies)
    assert not fenced.reaches(stranger, component(pods.CODE_LOCATION), pods.CODE_SERVER_PORT)
    assert not fenced.reaches(stranger, outside, 443)
    assert fenced.reaches(stranger, Peer("kube-system", {"k8s-app": "kube-dns"}), 53, "UDP")


def test_dagster_components_reach_postgresql_and_the_code_server(settings):
    policies = _policies(settings)
    postgres = Peer(ip=str(ipaddress.ip_network(settings.postgres_cidr)[1]))
    for name in (pods.WEBSERVER, pods.DAEMON, pods.CODE_LOCATION, pods.RUN):
        assert policies.reaches(component(name), postgres, settings.postgres_port), name
    assert not policies.reaches(component(pods.SPARK_EXECUTOR), postgres, settings.postgres_port)
    code = component(pods.CODE_LOCATION)
    for name in (pods.WEBSERVER, pods.DAEMON):
        assert policies.reaches(component(name), code, pods.CODE_SERVER_PORT), name
    for name in (pods.RUN, pods.SPARK_EXECUTOR):
        assert not policies.reaches(component(name), code, pods.CODE_SERVER_PORT), name
    assert not policies.reaches(component(pods.WEBSERVER), code, 22)


def test_only_the_gateway_reaches_the_webserver(settings):
    policies = _policies(settings)
    webserver = component(pods.WEBSERVER)
    gateway = Peer(settings.gateway_namespace, {"app.kubernetes.io/name": "hdh-gateway"})
    assert policies.reaches(gateway, webserver, pods.WEBSERVER_PORT)
    assert not policies.reaches(Peer("default", {"app": "x"}), webserver, pods.WEBSERVER_PORT)
    assert not policies.reaches(component(pods.RUN), webserver, pods.WEBSERVER_PORT)


def test_the_api_server_and_the_object_store_are_reached_by_who_needs_them(settings):
    policies = _policies(settings)
    api = Peer(ip=str(ipaddress.ip_network(settings.kube_api_cidr)[0]))
    store = Peer(ip=str(ipaddress.ip_network(settings.object_store_cidr)[1]))
    # The daemon launches run pods; a run pod starts executors or step pods; the webserver
    # terminates runs.
    for name in (pods.DAEMON, pods.RUN, pods.WEBSERVER):
        assert policies.reaches(component(name), api, 443), name
    assert not policies.reaches(component(pods.SPARK_EXECUTOR), api, 443)
    assert not policies.reaches(component(pods.CODE_LOCATION), api, 443)
    for name in (pods.RUN, pods.SPARK_EXECUTOR, pods.CODE_LOCATION):
        assert policies.reaches(component(name), store, settings.object_store_port), name
    assert not policies.reaches(component(pods.WEBSERVER), store, settings.object_store_port)


def test_spark_drivers_and_executors_reach_each_other_on_the_fixed_ports(settings):
    policies = _policies(settings)
    driver = component(pods.RUN if settings.spark_mode == "client" else pods.SPARK_CONNECT)
    executor = component(pods.SPARK_EXECUTOR)
    for port in (pods.SPARK_DRIVER_PORT, pods.SPARK_BLOCK_MANAGER_PORT):
        assert policies.reaches(executor, driver, port), port
    assert policies.reaches(driver, executor, pods.SPARK_BLOCK_MANAGER_PORT)
    assert policies.reaches(executor, executor, pods.SPARK_BLOCK_MANAGER_PORT)
    assert not policies.reaches(executor, driver, 8080)
    assert not policies.reaches(executor, component(pods.DAEMON), pods.SPARK_DRIVER_PORT)
    connect = component(pods.SPARK_CONNECT)
    reaches_connect = policies.reaches(component(pods.RUN), connect, pods.SPARK_CONNECT_PORT)
    assert reaches_connect == (settings.spark_mode == "connect")
    assert not policies.reaches(component(pods.WEBSERVER), connect, pods.SPARK_CONNECT_PORT)


def test_each_allow_policy_names_its_pods_and_ports(files):
    policies = [o for o in manifest_objects(files) if o["kind"] == "NetworkPolicy"]
    for policy in policies:
        spec = policy["spec"]
        name = policy["metadata"]["name"]
        if name in ("default-deny", "allow-dns"):
            continue
        assert spec["podSelector"], name  # an allow names the pods it opens
        for key in ("ingress", "egress"):
            for rule in spec.get(key, []):
                assert rule.get("ports"), f"{name}: every allow names its ports"
                assert rule.get("from" if key == "ingress" else "to"), name
