"""Kubernetes objects as plain dicts: how they are named, labelled, ordered, written and hashed,
and the fragments every pod and namespace of the platform is fenced with.

The renderer and every delivery target share these, so the order a project's YAML is rendered
in, the order its GitOps files are listed in and the order a cluster is applied in are one order,
and the labels the renderer stamps are the labels pruning looks for. The platform's deployment
(``hdh_cli.deployment``) and every workspace build their network policies and security contexts
from the same functions, so the two cannot drift apart in what "restricted" means.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "hdh-platform"
PROJECT_LABEL = "hdh.platform/project"

_Object = TypeVar("_Object", bound=Mapping[str, Any])


# --- references ------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class KindRef:
    """A kind as the API serves it (``apiVersion`` + ``kind``)."""

    api_version: str
    kind: str


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Identity of one object: what a server keys it by."""

    api_version: str
    kind: str
    namespace: str | None
    name: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])

    @property
    def kind_ref(self) -> KindRef:
        return KindRef(self.api_version, self.kind)

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


# --- apply order -----------------------------------------------------------------------------

# What others refer to comes first, so nothing starts before what it needs exists: the
# namespace; its quota and limits, enforced on every later pod and claim; its network policies,
# so no pod ever runs before default-deny; identities and their rights; the Secrets and config
# pods mount; volumes, then the claims bound to them; Services before the workloads that
# resolve them; routes last, once their backends exist. Every kind here is listed for pruning.
KIND_ORDER: tuple[KindRef, ...] = (
    KindRef("v1", "Namespace"),
    KindRef("v1", "ResourceQuota"),
    KindRef("v1", "LimitRange"),
    KindRef("networking.k8s.io/v1", "NetworkPolicy"),
    KindRef("v1", "ServiceAccount"),
    KindRef("rbac.authorization.k8s.io/v1", "Role"),
    KindRef("rbac.authorization.k8s.io/v1", "RoleBinding"),
    KindRef("v1", "Secret"),
    KindRef("v1", "ConfigMap"),
    KindRef("v1", "PersistentVolume"),  # cluster-scoped: not deleted with the namespace
    KindRef("v1", "PersistentVolumeClaim"),
    KindRef("v1", "Service"),
    KindRef("apps/v1", "Deployment"),
    KindRef("networking.k8s.io/v1", "Ingress"),
)
_KIND_RANK: Mapping[str, int] = {ref.kind: rank for rank, ref in enumerate(KIND_ORDER)}


def kind_rank(kind: str) -> int:
    """Position of a kind in :data:`KIND_ORDER`; a kind not listed ranks after all listed ones."""
    return _KIND_RANK.get(kind, len(_KIND_RANK))


def apply_order(obj: Mapping[str, Any]) -> tuple[int, str, str, str]:
    """Sort key: known kinds in :data:`KIND_ORDER`, unknown kinds after (by kind), then by
    namespace and name, so any set of objects has exactly one order."""
    meta = obj.get("metadata") or {}
    kind = obj["kind"]
    return (kind_rank(kind), kind, meta.get("namespace") or "", meta["name"])


def in_apply_order(objects: Iterable[_Object]) -> list[_Object]:
    """The objects sorted by :func:`apply_order` (a new list)."""
    return sorted(objects, key=apply_order)


# --- labels and annotations ------------------------------------------------------------------


def platform_labels(project: str) -> dict[str, str]:
    """The labels every object of a project carries: pruning finds our objects by them."""
    return {MANAGED_BY_LABEL: MANAGED_BY, PROJECT_LABEL: project}


def label_selector(labels: Mapping[str, str]) -> str:
    """``k=v,k2=v2``: the API's equality-based selector for listing objects by labels."""
    return ",".join(f"{key}={value}" for key, value in labels.items())


MANAGED_SELECTOR = label_selector({MANAGED_BY_LABEL: MANAGED_BY})


def match_labels(labels: Mapping[str, str]) -> dict[str, Any]:
    """A ``LabelSelector`` (of pods, of namespaces) selecting what carries all these labels."""
    return {"matchLabels": dict(labels)}


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def is_project_object(obj: Mapping[str, Any], project: str) -> bool:
    """Whether the object carries :func:`platform_labels` of this project."""
    labels = labels_of(obj)
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY and labels.get(PROJECT_LABEL) == project


def project_of(obj: Mapping[str, Any]) -> str:
    """The project an object belongs to: its label, else its namespace, else its own name."""
    meta = obj.get("metadata") or {}
    return labels_of(obj).get(PROJECT_LABEL) or meta.get("namespace") or meta["name"]


# --- network policies ------------------------------------------------------------------------

NETWORKING_API = "networking.k8s.io/v1"


def tcp_ports(*ports: int | str) -> list[dict[str, Any]]:
    """``NetworkPolicyPort`` entries for TCP ports, by number or by a container port's name."""
    return [{"protocol": "TCP", "port": port} for port in ports]


def egress_to_cidr(cidr: str, *ports: int | str) -> dict[str, Any]:
    """An egress rule to an address block outside the cluster (a database, the API server, an
    object store) on these TCP ports only."""
    return {"to": [{"ipBlock": {"cidr": cidr}}], "ports": tcp_ports(*ports)}


def network_policy(
    metadata: dict[str, Any],
    pod_selector: dict[str, Any],
    *,
    ingress: list[dict[str, Any]] | None = None,
    egress: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``NetworkPolicy`` over the pods ``pod_selector`` (a ``LabelSelector``, ``{}`` for all)
    selects. A direction is in ``policyTypes`` exactly when its rules are given: ``[]`` denies
    it entirely, ``None`` leaves it to the other policies (so default-deny is
    ``ingress=[], egress=[]`` and each opening names one direction only)."""
    spec: dict[str, Any] = {
        "podSelector": pod_selector,
        "policyTypes": [
            kind for kind, rules in (("Ingress", ingress), ("Egress", egress)) if rules is not None
        ],
    }
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {
        "apiVersion": NETWORKING_API,
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": spec,
    }


# --- security contexts -----------------------------------------------------------------------


def restricted_pod_security(uid: int | None = None) -> dict[str, Any]:
    """A pod ``securityContext`` that Pod Security admission's ``restricted`` level accepts: never
    root, the runtime's seccomp profile. With ``uid``, that fixed user and group run every
    container and own the mounted volumes (``fsGroup``); without, the caller sets them elsewhere
    (KubeSpawner's ``uid``/``gid``/``fs_gid``)."""
    context: dict[str, Any] = {"runAsNonRoot": True}
    if uid is not None:
        context |= {"runAsUser": uid, "runAsGroup": uid, "fsGroup": uid}
    context["seccompProfile"] = {"type": "RuntimeDefault"}
    return context


def restricted_container_security(
    uid: int,
    *,
    gid: int | None = None,
    read_only_root: bool | None = None,
    explicit_unprivileged: bool = False,
) -> dict[str, Any]:
    """A container ``securityContext`` that ``restricted`` accepts: no escalation, every
    capability dropped, a fixed non-root user, the runtime's seccomp profile.

    ``gid`` sets ``runAsGroup`` when the pod does not; ``read_only_root`` writes
    ``readOnlyRootFilesystem`` (``True`` where the process writes only to its volumes);
    ``explicit_unprivileged`` writes the default ``privileged: false`` out, as the deployment's
    pods always have (dropping it would rewrite their committed manifests)."""
    context: dict[str, Any] = {"privileged": False} if explicit_unprivileged else {}
    context |= {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    if read_only_root is not None:
        context["readOnlyRootFilesystem"] = read_only_root
    context |= {"runAsNonRoot": True, "runAsUser": uid}
    if gid is not None:
        context["runAsGroup"] = gid
    context["seccompProfile"] = {"type": "RuntimeDefault"}
    return context


# --- digests ---------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, text as is: equal content, equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def manifest_digest(objects: Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 of the canonical JSON of the objects (in apply order): equal output, equal digest."""
    return "sha256:" + sha256_hex(in_apply_order(objects))


# --- YAML ------------------------------------------------------------------------------------

# libyaml's emitter when present: ten times faster than PyYAML's own on megabytes of manifests.
FAST_SAFE_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _BlockDumper(FAST_SAFE_DUMPER):  # type: ignore[misc, valid-type]
    """Multi-line strings (Dockerfile, configs) as literal blocks, readable in a diff."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def to_yaml(objects: Sequence[Mapping[str, Any]]) -> str:
    """Multi-document YAML in apply order with sorted keys: the same objects, the same bytes."""
    return yaml.dump_all(
        in_apply_order(objects),
        Dumper=_BlockDumper,
        sort_keys=True,
        explicit_start=True,
        default_flow_style=False,
        allow_unicode=True,
        width=10_000,
    )


def object_yaml(obj: Mapping[str, Any]) -> str:
    """One object as a file of its own: sorted keys, block style, no line folding, so diffs stay
    minimal. Its style is the one every GitOps repository already holds: a change of style
    would rewrite every file there once."""
    return yaml.safe_dump(
        obj, sort_keys=True, default_flow_style=False, allow_unicode=True, width=10_000
    )


def object_from_yaml(text: str) -> Any:
    """One YAML document as plain data (raises ``yaml.YAMLError`` when it is not YAML)."""
    return yaml.safe_load(text)


def objects_from_yaml(text: str) -> list[Any]:
    """Every document of a multi-document YAML text, empty documents left out."""
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]
