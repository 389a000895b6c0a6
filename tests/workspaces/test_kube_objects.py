"""One apply order, labels and YAML for the renderer and every delivery target."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hdh_assets.workspaces import delivery, kube_objects, manifests
from hdh_assets.workspaces.kube_objects import (
    KIND_ORDER,
    MANAGED_SELECTOR,
    ObjectRef,
    apply_order,
    in_apply_order,
    is_project_object,
    kind_rank,
    object_from_yaml,
    object_yaml,
    objects_from_yaml,
    platform_labels,
    project_of,
    to_yaml,
)
from hdh_assets.workspaces.manifests import RenderSettings, render_project
from hdh_assets.workspaces.specs import ProjectSpec, load_specs

REPO = Path(__file__).resolve().parents[2]


def obj(api_version: str, kind: str, name: str, namespace: str | None = "hdh-ws-alpha") -> dict:
    meta: dict = {"name": name, "labels": platform_labels("alpha")}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    specs: dict[str, ProjectSpec] = load_specs(REPO / "workspaces" / "projects")
    return {pid: render_project(spec, RenderSettings()) for pid, spec in specs.items()}


# A workspace's kinds and two unknown ones, in the order they must be applied.
MIXED = [
    obj("v1", "Namespace", "hdh-ws-alpha", None),
    obj("v1", "ResourceQuota", "workspace-quota"),
    obj("v1", "LimitRange", "workspace-limits"),
    obj("networking.k8s.io/v1", "NetworkPolicy", "allow-dns"),
    obj("networking.k8s.io/v1", "NetworkPolicy", "default-deny"),
    obj("v1", "ServiceAccount", "workspace"),
    obj("rbac.authorization.k8s.io/v1", "Role", "workspace-owner"),
    obj("rbac.authorization.k8s.io/v1", "RoleBinding", "workspace-owner"),
    obj("v1", "Secret", "jupyterlab-token"),
    obj("v1", "ConfigMap", "workspace-image"),
    obj("v1", "PersistentVolume", "hdh-ws-alpha-grants", None),
    obj("v1", "PersistentVolumeClaim", "work", "hdh-ws-alpha"),
    obj("v1", "PersistentVolumeClaim", "grants", "hdh-ws-beta"),  # by namespace first
    obj("v1", "Service", "jupyterlab"),
    obj("apps/v1", "Deployment", "jupyterlab"),
    obj("networking.k8s.io/v1", "Ingress", "workspace"),
    obj("batch/v1", "CronJob", "nightly"),  # unknown kinds after every known one, by kind
    obj("example.org/v1", "Widget", "a", None),
    obj("example.org/v1", "Widget", "b"),
]


def test_a_mixed_set_sorts_dependencies_first_and_unknown_kinds_last() -> None:
    shuffled = list(MIXED)
    random.Random(7).shuffle(shuffled)

    ordered = in_apply_order(shuffled)

    assert [str(ObjectRef.of(o)) for o in ordered] == [str(ObjectRef.of(o)) for o in MIXED]
    assert sorted(shuffled, key=delivery.apply_order) == MIXED


def test_an_unknown_kind_ranks_after_every_known_one() -> None:
    known = [kind_rank(ref.kind) for ref in KIND_ORDER]
    assert known == list(range(len(KIND_ORDER)))  # each kind listed once
    assert kind_rank("Widget") == kind_rank("CronJob") > max(known)
    widget = obj("example.org/v1", "Widget", "a")
    ingress = obj("networking.k8s.io/v1", "Ingress", "z")
    assert apply_order(ingress) < apply_order(widget)


def test_the_order_puts_what_others_refer_to_first() -> None:
    kinds = [ref.kind for ref in KIND_ORDER]
    assert kinds[0] == "Namespace" and kinds[-1] == "Ingress"
    for first, then in [
        ("NetworkPolicy", "Deployment"),  # default-deny before any pod
        ("ResourceQuota", "Deployment"),
        ("LimitRange", "PersistentVolumeClaim"),
        ("ServiceAccount", "Deployment"),
        ("Role", "RoleBinding"),
        ("Secret", "Deployment"),
        ("ConfigMap", "Deployment"),
        ("PersistentVolume", "PersistentVolumeClaim"),
        ("PersistentVolumeClaim", "Deployment"),
        ("Service", "Deployment"),
        ("Service", "Ingress"),
    ]:
        assert kinds.index(first) < kinds.index(then), (first, then)


def test_manifests_and_delivery_share_one_order(rendered: dict[str, list[dict]]) -> None:
    assert delivery.KIND_ORDER is kube_objects.KIND_ORDER
    assert delivery.apply_order is kube_objects.apply_order
    assert manifests.to_yaml is kube_objects.to_yaml
    mixed = list(MIXED)
    random.Random(11).shuffle(mixed)
    in_yaml = objects_from_yaml(manifests.to_yaml(mixed))
    assert [ObjectRef.of(o) for o in in_yaml] == [
        ObjectRef.of(o) for o in sorted(mixed, key=delivery.apply_order)
    ]
    for pid, objects in rendered.items():
        shuffled = list(objects)
        random.Random(pid).shuffle(shuffled)
        assert sorted(shuffled, key=delivery.apply_order) == objects  # rendered in apply order
        assert delivery.validate_desired({pid: shuffled})[pid] == objects
        files = delivery.project_files(pid, shuffled)
        resources = object_from_yaml(files[delivery.KUSTOMIZATION])["resources"]
        assert resources == [delivery.manifest_file_name(o) for o in objects]
        documents = objects_from_yaml(manifests.to_yaml(shuffled))
        assert [ObjectRef.of(o) for o in documents] == [ObjectRef.of(o) for o in objects]


def test_every_rendered_kind_is_listed_with_its_api_version(
    rendered: dict[str, list[dict]],
) -> None:
    """Pruning lists the kinds of :data:`KIND_ORDER`: a rendered kind missing there would leak."""
    kinds = {ObjectRef.of(o).kind_ref for objects in rendered.values() for o in objects}
    assert kinds <= set(KIND_ORDER)


def test_platform_labels_select_the_project() -> None:
    alpha = obj("v1", "ConfigMap", "notes")
    assert is_project_object(alpha, "alpha") and not is_project_object(alpha, "beta")
    assert not is_project_object(obj("v1", "ConfigMap", "notes") | {"metadata": {}}, "alpha")
    assert project_of(alpha) == "alpha"
    assert project_of({"metadata": {"name": "x", "namespace": "hdh-ws-beta"}}) == "hdh-ws-beta"
    assert MANAGED_SELECTOR == "app.kubernetes.io/managed-by=hdh-platform"


def test_yaml_round_trips_in_apply_order(rendered: dict[str, list[dict]]) -> None:
    objects = rendered["cardio-imaging"]
    reversed_objects = list(reversed(objects))
    assert objects_from_yaml(to_yaml(reversed_objects)) == objects
    for o in objects:
        assert object_from_yaml(object_yaml(o)) == o
