"""Many workspaces side by side: nothing of one project appears in, or is reachable from, another."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hdh_assets.workspaces.manifests import (
    PROJECT_LABEL,
    RenderSettings,
    hub_host,
    member_group,
    render_projects,
    to_yaml,
)
from hdh_assets.workspaces.specs import ProjectSpec, load_specs, load_specs_report
from hdh_assets.workspaces.validation import validate_objects
from tests.workspaces import PRODUCTS, project_document, write_projects

PROJECTS = 48  # the ids include bare topics ("cardio") that prefix others ("cardio-008")
SETTINGS = RenderSettings()
SHARED_NAMESPACES = {"kube-system", SETTINGS.gateway_namespace, SETTINGS.oidc_namespace}


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ProjectSpec]:
    root = tmp_path_factory.mktemp("generated")
    return load_specs(write_projects(root, PROJECTS))


@pytest.fixture(scope="module")
def rendered(specs: dict[str, ProjectSpec]) -> dict[str, list[dict]]:
    return render_projects(specs, SETTINGS)


def identifying_strings(spec: ProjectSpec) -> set[str]:
    """What names a project: id, namespace, volume, member group, Hub host and callback, members."""
    host = hub_host(spec, SETTINGS)
    strings = {spec.id, spec.namespace, f"{spec.namespace}-grants", member_group(spec, SETTINGS)}
    strings |= {host, f"https://{host}/hub/oauth_callback"}
    return strings | {member.user for member in spec.members}


def words(text: str) -> set[str]:
    """Every token of the text, split both at and inside dots, @, colons and slashes (a whole
    URL is one token too)."""
    return (
        set(re.findall(r"[A-Za-z0-9_-]+", text))
        | set(re.findall(r"[A-Za-z0-9_.@:-]+", text))
        | set(re.findall(r"https://[A-Za-z0-9_.@:/-]+", text))
    )


def walk(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of nested dicts and lists."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def test_the_generated_projects_are_all_valid(rendered: dict[str, list[dict]]) -> None:
    assert len(rendered) == PROJECTS
    assert {"cardio", "cardio-008"} <= set(rendered)
    for objects in rendered.values():
        assert validate_objects(objects) == []


def test_no_project_mentions_another(
    specs: dict[str, ProjectSpec], rendered: dict[str, list[dict]]
) -> None:
    tokens = {
        pid: words(to_yaml(objects) + json.dumps(objects)) for pid, objects in rendered.items()
    }
    names = {pid: identifying_strings(spec) for pid, spec in specs.items()}
    for pid, found in tokens.items():
        assert names[pid] & found  # the check sees a project's own names
        for other, theirs in names.items():
            if other != pid:
                leaked = theirs & found
                assert not leaked, f"{pid} mentions {other}: {sorted(leaked)}"


def test_every_object_stays_in_its_project(rendered: dict[str, list[dict]]) -> None:
    seen: dict[tuple[str, str, str], str] = {}
    for pid, objects in rendered.items():
        namespace = f"hdh-ws-{pid}"
        for obj in objects:
            meta = obj["metadata"]
            assert meta["labels"][PROJECT_LABEL] == pid
            assert meta.get("namespace", namespace) == namespace or obj["kind"] == "Namespace"
            key = (obj["kind"], meta.get("namespace", ""), meta["name"])
            assert key not in seen, f"{key} rendered by {seen.get(key)} and {pid}"
            seen[key] = pid
            for field, value in walk(obj):
                if field == "namespace" and isinstance(value, str):
                    assert value == namespace, f"{pid}: {obj['kind']} {meta['name']} names {value}"
                if field == PROJECT_LABEL:
                    assert value == pid


def test_every_namespace_denies_by_default(rendered: dict[str, list[dict]]) -> None:
    for pid, objects in rendered.items():
        deny = [
            o
            for o in objects
            if o["kind"] == "NetworkPolicy"
            and o["spec"]["podSelector"] == {}
            and o["spec"]["policyTypes"] == ["Ingress", "Egress"]
            and o["spec"].get("ingress") == []
            and o["spec"].get("egress") == []
        ]
        assert len(deny) == 1, pid


def test_network_peers_are_this_project_or_shared_services(rendered: dict[str, list[dict]]) -> None:
    for pid, objects in rendered.items():
        for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
            assert (
                policy["spec"]["podSelector"].get("matchLabels", {PROJECT_LABEL: pid})[
                    PROJECT_LABEL
                ]
                == pid
            )
            rules = policy["spec"].get("ingress", []) + policy["spec"].get("egress", [])
            for peer in (p for rule in rules for p in rule.get("from", []) + rule.get("to", [])):
                if "namespaceSelector" in peer:
                    selected = peer["namespaceSelector"]["matchLabels"][
                        "kubernetes.io/metadata.name"
                    ]
                    assert selected in SHARED_NAMESPACES, f"{pid} opens to {selected}"
                elif "podSelector" in peer:  # same namespace: must select this project's pods
                    assert peer["podSelector"]["matchLabels"][PROJECT_LABEL] == pid
                else:
                    cidr = peer["ipBlock"]["cidr"]
                    assert cidr in {
                        SETTINGS.package_proxy_cidr,
                        SETTINGS.data_store_cidr,
                        SETTINGS.kube_api_cidr,
                    }


def test_volumes_belong_to_the_same_project(rendered: dict[str, list[dict]]) -> None:
    for pid, objects in rendered.items():
        claims = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolumeClaim"}
        volumes = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolume"}
        configs = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
        assert list(volumes) == [f"hdh-ws-{pid}-grants"]
        volume = volumes[f"hdh-ws-{pid}-grants"]["spec"]
        assert volume["claimRef"] == {"namespace": f"hdh-ws-{pid}", "name": "grants"}
        assert volume["csi"]["volumeAttributes"]["share"].endswith(f"/{pid}/grants")
        for claim in claims.values():  # the work claim is provisioned, the grants one bound
            assert claim["spec"].get("volumeName") in (None, *volumes)
        for obj in (o for o in objects if o["kind"] == "Deployment"):
            for volume_ref in obj["spec"]["template"]["spec"]["volumes"]:
                if "persistentVolumeClaim" in volume_ref:
                    assert volume_ref["persistentVolumeClaim"]["claimName"] in claims
                if "configMap" in volume_ref:
                    assert volume_ref["configMap"]["name"] in configs


def test_role_bindings_bind_only_the_projects_members(
    specs: dict[str, ProjectSpec], rendered: dict[str, list[dict]]
) -> None:
    for pid, objects in rendered.items():
        members = {(m.user, m.role) for m in specs[pid].members}
        bindings = [o for o in objects if o["kind"] == "RoleBinding"]
        bound = {
            (subject["name"], o["roleRef"]["name"].removeprefix("workspace-"))
            for o in bindings
            if o["metadata"]["name"] != "jupyterhub"
            for subject in o["subjects"]
        }
        assert bound == members
        for binding in bindings:
            assert binding["roleRef"]["kind"] == "Role"  # never a ClusterRole
            if binding["metadata"]["name"] == "jupyterhub":  # KubeSpawner's, in this namespace
                assert binding["subjects"] == [
                    {"kind": "ServiceAccount", "name": "jupyterhub", "namespace": f"hdh-ws-{pid}"}
                ]
            else:
                assert all(s["kind"] == "User" for s in binding["subjects"])


def test_an_unapproved_grant_is_refused_and_not_rendered(tmp_path: Path) -> None:
    projects = write_projects(tmp_path, 6)
    document = project_document(2)
    approvals = yaml.safe_load((tmp_path / "approvals.yaml").read_text())
    approved = set(approvals[document["authorisation"]]["products"])
    outside = next(p for p in PRODUCTS if p not in approved)
    document["grants"].append({"product": outside, "version": "1.0.0"})
    (projects / f"{document['id']}.yaml").write_text(yaml.safe_dump(document))
    specs, errors = load_specs_report(projects)
    assert document["id"] not in specs and len(specs) == 5
    assert [str(e) for e in errors] == [
        f"{projects}/{document['id']}.yaml: grants[{len(document['grants']) - 1}].product: "
        f"'{outside}' is not approved by authorisation '{document['authorisation']}'"
    ]
    assert document["id"] not in render_projects(specs)
