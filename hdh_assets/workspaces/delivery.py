"""Delivery of rendered workspace manifests to where they run.

The renderer produces, per research project, plain-dict Kubernetes objects carrying the labels
``app.kubernetes.io/managed-by: hdh-platform`` and ``hdh.platform/project: <id>``. A target turns
the *full* desired set into reality and reports what changed:

* :class:`GitOpsTarget` (the default) commits one folder per project to a Git repository that a
  GitOps controller (Argo CD, Flux) syncs; one commit per delivery that changes anything.
* :class:`KubernetesTarget` server-side-applies the objects through a narrow :class:`ClusterApi`
  and prunes what carries our labels but is no longer desired.

Both are convergent: rerunning a delivery after a crash, or with an unchanged desired set,
reaches the same state and reports no change the second time.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml

from hdh_assets.workspaces.kube_objects import (
    KIND_ORDER,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MANAGED_SELECTOR,
    PROJECT_LABEL,
    KindRef,
    ObjectRef,
    annotations_of,
    apply_order,
    in_apply_order,
    is_project_object,
    object_from_yaml,
    object_yaml,
    project_of,
    sha256_hex,
)

DIGEST_ANNOTATION = "hdh.platform/applied-digest"
FIELD_MANAGER = "hdh-platform"

ProjectStatus = Literal["added", "updated", "unchanged", "decommissioned"]
Desired = Mapping[str, Sequence[dict]]

_PROJECT_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class ProjectDelivery:
    """What a delivery did to one project; object entries are ``str(ObjectRef)``."""

    project: str
    status: ProjectStatus
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    repaired: tuple[str, ...] = ()  # Kubernetes only: our fields edited by someone else

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "added": list(self.added),
            "changed": list(self.changed),
            "removed": list(self.removed),
            "repaired": list(self.repaired),
        }


@dataclass(frozen=True)
class DeliveryReport:
    """The outcome of one delivery; ``commit`` is the Git sha when a GitOps commit was made."""

    target: str
    projects: Mapping[str, ProjectDelivery]
    run_id: str | None = None
    commit: str | None = None
    layout_repaired: bool = False  # GitOps: files outside any project (root kustomization) fixed

    @property
    def changed(self) -> bool:
        return self.layout_repaired or any(p.status != "unchanged" for p in self.projects.values())

    def with_status(self, status: ProjectStatus) -> list[str]:
        return sorted(p.project for p in self.projects.values() if p.status == status)

    def summary(self) -> str:
        """``2 projects updated, 1 added, 1 decommissioned`` (the noun goes with the first count)."""
        parts: list[str] = []
        statuses: tuple[ProjectStatus, ...] = ("updated", "added", "decommissioned")
        for status in statuses:
            count = len(self.with_status(status))
            if count:
                noun = ("project " if count == 1 else "projects ") if not parts else ""
                parts.append(f"{count} {noun}{status}")
        if parts:
            return ", ".join(parts)
        return "repository layout repaired" if self.layout_repaired else "no change"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, for Dagster metadata and CLI output."""
        return {
            "target": self.target,
            "run_id": self.run_id,
            "commit": self.commit,
            "summary": self.summary(),
            "projects": {k: self.projects[k].as_dict() for k in sorted(self.projects)},
        }


class DeliveryTarget(Protocol):
    """Where rendered manifests go; both targets take the same calls."""

    def deliver(self, desired: Desired, *, run_id: str | None = None) -> DeliveryReport: ...

    def deliver_partial(
        self, updates: Mapping[str, Sequence[dict] | None], *, run_id: str | None = None
    ) -> DeliveryReport: ...

    def decommission(
        self, projects: Sequence[str], *, run_id: str | None = None
    ) -> DeliveryReport: ...

    def projects(self) -> set[str]: ...


# --- the input contract ----------------------------------------------------------------------


def validate_desired(desired: Desired) -> dict[str, list[dict]]:
    """Check the renderer's contract and return sorted deep copies.

    Pruning finds our objects by their labels, so an object without them would leak forever;
    an object claimed by two projects would flip between them; a project id is a folder name.
    """
    seen: dict[ObjectRef, str] = {}
    checked: dict[str, list[dict]] = {}
    for project, objects in desired.items():
        if not _PROJECT_ID.match(project):
            raise ValueError(f"project id {project!r} is not a DNS label")
        for obj in objects:
            ref = _check_object(project, obj)
            if ref in seen:
                raise ValueError(f"{ref} is desired by both {seen[ref]!r} and {project!r}")
            seen[ref] = project
        checked[project] = sorted((copy.deepcopy(o) for o in objects), key=apply_order)
    return checked


def _check_object(project: str, obj: Mapping[str, Any]) -> ObjectRef:
    meta = obj.get("metadata") or {}
    if not obj.get("apiVersion") or not obj.get("kind") or not meta.get("name"):
        raise ValueError(f"object of project {project!r} lacks apiVersion, kind or name: {obj!r}")
    ref = ObjectRef.of(obj)
    if "/" in ref.name or ref.name in (".", ".."):
        raise ValueError(f"{ref}: the name is not a path segment")
    if not is_project_object(obj, project):
        raise ValueError(
            f"{ref} must be labelled {MANAGED_BY_LABEL}={MANAGED_BY} and {PROJECT_LABEL}={project}"
        )
    return ref


def object_digest(obj: Mapping[str, Any]) -> str:
    """SHA-256 of the object as we want it, ignoring our own digest annotation."""
    plain = copy.deepcopy(dict(obj))
    annotations = plain.get("metadata", {}).get("annotations") or {}
    annotations.pop(DIGEST_ANNOTATION, None)
    if "annotations" in plain.get("metadata", {}) and not annotations:
        del plain["metadata"]["annotations"]
    return sha256_hex(plain)


def _project_status(existed: bool, changes: Sequence[Sequence[str]]) -> ProjectStatus:
    if not existed:
        return "added"
    return "updated" if any(changes) else "unchanged"


# --- GitOps ----------------------------------------------------------------------------------

KUSTOMIZATION = "kustomization.yaml"


def manifest_file_name(obj: Mapping[str, Any]) -> str:
    ref = ObjectRef.of(obj)
    return f"{ref.kind}-{ref.name}.yaml".lower()


def _kustomization(resources: Sequence[str]) -> str:
    return object_yaml(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": list(resources),
        }
    )


def project_files(project: str, objects: Sequence[dict]) -> dict[str, str]:
    """File name -> content of a project's folder, ``kustomization.yaml`` included."""
    files: dict[str, str] = {}
    for obj in in_apply_order(objects):
        name = manifest_file_name(obj)
        if name in files or name == KUSTOMIZATION:
            raise ValueError(f"project {project!r}: two objects would be written to {name}")
        files[name] = object_yaml(obj)
    files[KUSTOMIZATION] = _kustomization(list(files))
    return files


def _write_atomically(path: Path, content: str) -> None:
    """Temp file + fsync + rename: a crash leaves the old or the new file, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _describe_file(path: Path) -> str:
    """``str(ObjectRef)`` of a manifest file, or its name when it is not one of ours."""
    try:
        return str(ObjectRef.of(object_from_yaml(path.read_text(encoding="utf-8"))))
    except (yaml.YAMLError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return path.name


@dataclass
class GitOpsTarget:
    """A Git repository with one folder per project, synced into the cluster by a controller.

    The repository is owned by the platform: every top-level folder is a project, and any
    uncommitted leftover (a delivery that crashed mid-write, a hand edit) is discarded at the
    start of each delivery with ``git reset --hard`` and ``git clean``. Committed history is
    the only state; that is what makes a rerun converge and still produce a single commit.
    """

    repo: Path
    author_name: str = "hdh-platform"
    author_email: str = "hdh-platform@localhost"
    branch: str = "main"

    @classmethod
    def for_home(cls, home_root: Path, **kwargs: Any) -> GitOpsTarget:
        """The default repository, ``HDH_HOME/gitops``."""
        return cls(Path(home_root) / "gitops", **kwargs)

    def deliver(self, desired: Desired, *, run_id: str | None = None) -> DeliveryReport:
        """Make the repository hold exactly ``desired`` (all projects); one commit if it changed."""
        checked = validate_desired(desired)
        with self._exclusive():
            return self._deliver(checked, run_id)

    def deliver_partial(
        self, updates: Mapping[str, Sequence[dict] | None], *, run_id: str | None = None
    ) -> DeliveryReport:
        """Replace (or, with ``None``, decommission) some projects; the others stay as committed."""
        with self._exclusive():
            desired: dict[str, Sequence[dict]] = dict(self._read_delivered())
            for project, objects in updates.items():
                if objects is None:
                    desired.pop(project, None)
                else:
                    desired[project] = objects
            return self._deliver(validate_desired(desired), run_id)

    def decommission(self, projects: Sequence[str], *, run_id: str | None = None) -> DeliveryReport:
        return self.deliver_partial(dict.fromkeys(projects), run_id=run_id)

    def projects(self) -> set[str]:
        """The projects of the last commit (a crashed run's leftovers are not delivered)."""
        if self.head() is None:
            return set()
        listed = self._git("ls-tree", "-d", "--name-only", "HEAD").stdout
        return set(listed.split())

    def delivered(self) -> dict[str, list[dict]]:
        """The projects and objects of the last commit."""
        with self._exclusive():
            return self._read_delivered()

    def head(self) -> str | None:
        """The sha of the last delivery, None before the first one."""
        if not (self.repo / ".git").exists():
            return None
        done = self._git("rev-parse", "--verify", "-q", "HEAD", check=False)
        return done.stdout.strip() or None

    # -- steps --

    def _deliver(self, desired: dict[str, list[dict]], run_id: str | None) -> DeliveryReport:
        existing = self._project_dirs()
        projects: dict[str, ProjectDelivery] = {}
        for project, objects in desired.items():
            projects[project] = self._write_project(project, objects, project in existing)
        for project in sorted(existing - desired.keys()):
            projects[project] = self._remove_project(project)
        layout = self._write_if_changed(self.repo / KUSTOMIZATION, _kustomization(sorted(desired)))
        self._git("add", "-A")
        if not self._git("status", "--porcelain").stdout.strip():
            return DeliveryReport("gitops", projects, run_id)
        report = DeliveryReport("gitops", projects, run_id, layout_repaired=layout)
        self._git("commit", "-q", "-F", "-", input=commit_message(report))
        return DeliveryReport(
            "gitops", projects, run_id, commit=self.head(), layout_repaired=layout
        )

    def _write_project(self, project: str, objects: list[dict], existed: bool) -> ProjectDelivery:
        folder = self.repo / project
        folder.mkdir(exist_ok=True)
        files = project_files(project, objects)
        refs = {manifest_file_name(o): str(ObjectRef.of(o)) for o in objects}
        added, changed = [], []
        for name, content in files.items():
            path = folder / name
            old = path.read_text(encoding="utf-8") if path.is_file() else None
            if old != content:
                if name != KUSTOMIZATION:
                    (added if old is None else changed).append(refs[name])
                _write_atomically(path, content)
        removed = [self._remove_stale(p) for p in sorted(folder.iterdir()) if p.name not in files]
        removed = [r for r in removed if r]
        status = _project_status(existed, (added, changed, removed))
        return ProjectDelivery(project, status, tuple(added), tuple(changed), tuple(removed))

    def _remove_stale(self, path: Path) -> str | None:
        """Remove what is no longer desired; report it when it was an object."""
        if path.is_dir():
            shutil.rmtree(path)
            return None
        described = _describe_file(path) if path.suffix == ".yaml" else None
        path.unlink()
        return described

    def _remove_project(self, project: str) -> ProjectDelivery:
        folder = self.repo / project
        removed = [
            _describe_file(p)
            for p in sorted(folder.glob("*.yaml"))
            if p.name != KUSTOMIZATION and p.is_file()
        ]
        shutil.rmtree(folder)
        return ProjectDelivery(project, "decommissioned", removed=tuple(removed))

    def _write_if_changed(self, path: Path, content: str) -> bool:
        if path.is_file() and path.read_text(encoding="utf-8") == content:
            return False
        _write_atomically(path, content)
        return True

    def _project_dirs(self) -> set[str]:
        return {p.name for p in self.repo.iterdir() if p.is_dir() and p.name != ".git"}

    def _read_delivered(self) -> dict[str, list[dict]]:
        """Objects per project as committed (the worktree equals HEAD after the lock's reset)."""
        delivered: dict[str, list[dict]] = {}
        for project in sorted(self._project_dirs()):
            folder = self.repo / project
            objects = [
                object_from_yaml(path.read_text(encoding="utf-8"))
                for path in folder.glob("*.yaml")
                if path.name != KUSTOMIZATION
            ]
            delivered[project] = in_apply_order(objects)
        return delivered

    # -- the repository --

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialise deliveries, then discard whatever an interrupted one left behind."""
        self._ensure_repo()
        with (self.repo / ".git" / "hdh-delivery.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._discard_uncommitted()
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _ensure_repo(self) -> None:
        if (self.repo / ".git").is_dir():
            return
        if self.repo.is_dir() and any(self.repo.iterdir()):
            # Taking it over would ``git clean`` whatever it holds.
            raise RuntimeError(f"{self.repo} is not empty and not a Git repository")
        self.repo.mkdir(parents=True, exist_ok=True)
        self._git("init", "-q", "-b", self.branch)

    def _discard_uncommitted(self) -> None:
        # Under our lock no other git process runs on this repository, so an index.lock is
        # the remains of a git command killed mid-way (it would block every later command).
        (self.repo / ".git" / "index.lock").unlink(missing_ok=True)
        if self.head() is None:
            self._git("read-tree", "--empty")
        else:
            self._git("reset", "-q", "--hard", "HEAD")
        self._git("clean", "-q", "-ffdx")

    def _git(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run git in the repository; identity per command, so no global config is needed."""
        env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_OVERRIDES}
        command = [
            "git",
            "-c",
            f"user.name={self.author_name}",
            "-c",
            f"user.email={self.author_email}",
            "-C",
            str(self.repo),
            *args,
        ]
        done = subprocess.run(
            command, input=input, capture_output=True, text=True, env=env, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
        return done


# Variables that would point git at another repository or override the platform's identity.
_GIT_ENV_OVERRIDES = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
    }
)


def commit_message(report: DeliveryReport) -> str:
    """Summary line, then what changed per project, then the run as a Git trailer."""
    lines = [f"provision: {report.summary()}", ""]
    for project in sorted(report.projects):
        delivery = report.projects[project]
        if delivery.status == "unchanged":
            continue
        lines.append(f"{project} ({delivery.status})")
        for sign, refs in (("+", delivery.added), ("~", delivery.changed), ("-", delivery.removed)):
            lines.extend(f"  {sign} {ref}" for ref in refs)
    if report.layout_repaired:
        lines.append(f"{KUSTOMIZATION}: rewritten")
    if report.run_id:
        lines += ["", f"Run-Id: {report.run_id}"]
    return "\n".join(lines).rstrip() + "\n"


# --- Kubernetes ------------------------------------------------------------------------------


class ClusterApi(Protocol):
    """The little of the Kubernetes API a delivery needs (a fake in tests, the client for real)."""

    def apply(self, obj: dict, *, field_manager: str) -> dict:
        """Server-side apply, forcing conflicts; returns the object as stored."""
        ...

    def list_managed(self, kind_ref: KindRef, label_selector: str) -> list[dict]:
        """All objects of a kind, in every namespace, matching the selector."""
        ...

    def delete(self, obj_ref: ObjectRef) -> None:
        """Delete one object; an object already gone is not an error."""
        ...


@dataclass(frozen=True)
class _Outcome:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)


def _digest_of(obj: Mapping[str, Any]) -> str | None:
    return annotations_of(obj).get(DIGEST_ANNOTATION)


def _applied_entry(obj: Mapping[str, Any], manager: str) -> dict | None:
    """Our ``managedFields`` entry: the fields we own by apply, and when we last changed them."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or ():
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            return entry
    return None


def stamped(obj: Mapping[str, Any]) -> dict:
    """The object to apply: a copy carrying the digest of what we want."""
    out = copy.deepcopy(dict(obj))
    meta = out["metadata"]
    meta["annotations"] = {**(meta.get("annotations") or {}), DIGEST_ANNOTATION: object_digest(obj)}
    return out


@dataclass
class KubernetesTarget:
    """Server-side apply of every desired object, then pruning of what we own but no longer want.

    Change detection compares the digest of the desired object with the digest annotation we
    stamped on the previous apply. ``resourceVersion`` moves whenever anyone writes the object
    (a controller updating a Deployment's status) and ``generation`` ignores metadata and is not
    kept by every kind; the digest only moves when *our* intent moves. The apply still happens
    every time: with ``force`` it takes back fields someone edited by hand (their edit took the
    fields from our manager), which shows as our ``managedFields`` entry changing on an
    unchanged digest and is reported as ``repaired``; status writes by controllers do not
    touch that entry, so they are not mistaken for drift.

    Pruning happens only after every apply succeeded, and only touches objects labelled
    ``managed-by=hdh-platform``: a failed run never deletes, and foreign objects are never seen.
    """

    api: ClusterApi
    field_manager: str = FIELD_MANAGER
    kinds: Sequence[KindRef] = KIND_ORDER  # listed for pruning, even when none is desired
    # False: an object whose digest did not move is not applied at all (a run with no change
    # makes no apply). True (the daily drift run): everything is applied with force, which
    # takes back what was edited by hand and reports it as repaired.
    repair: bool = False

    def projects(self) -> set[str]:
        return set(self.delivered_digests())

    def delivered_digests(self) -> dict[str, dict[str, str | None]]:
        """Project -> object -> the digest stamped at its last apply (what ``diff`` compares)."""
        found: dict[str, dict[str, str | None]] = {}
        for ref, obj in self._list_managed({}).items():
            found.setdefault(project_of(obj), {})[str(ref)] = _digest_of(obj)
        return found

    def deliver(self, desired: Desired, *, run_id: str | None = None) -> DeliveryReport:
        """Make the cluster hold exactly ``desired`` among the objects we manage."""
        return self._deliver(validate_desired(desired), scope=None, run_id=run_id)

    def deliver_partial(
        self, updates: Mapping[str, Sequence[dict] | None], *, run_id: str | None = None
    ) -> DeliveryReport:
        """Apply/prune only the named projects (``None`` decommissions); the others are untouched."""
        desired = validate_desired({p: objs for p, objs in updates.items() if objs is not None})
        return self._deliver(desired, scope=set(updates), run_id=run_id)

    def decommission(self, projects: Sequence[str], *, run_id: str | None = None) -> DeliveryReport:
        return self.deliver_partial(dict.fromkeys(projects), run_id=run_id)

    def _deliver(
        self, desired: dict[str, list[dict]], scope: set[str] | None, run_id: str | None
    ) -> DeliveryReport:
        before = self._list_managed(desired)
        if scope is not None:
            before = {ref: obj for ref, obj in before.items() if project_of(obj) in scope}
        outcomes = {project: _Outcome() for project in desired}
        objects = in_apply_order(o for objs in desired.values() for o in objs)
        for obj in objects:
            self._apply(obj, before, outcomes[project_of(obj)])
        wanted = {ObjectRef.of(o) for o in objects}
        stale = {ref: obj for ref, obj in before.items() if ref not in wanted}
        self._prune(stale, {ref.namespace for ref in wanted if ref.namespace}, outcomes)
        existed = {project_of(obj) for obj in before.values()}
        return DeliveryReport("kubernetes", self._projects(outcomes, desired, existed), run_id)

    def _list_managed(self, desired: dict[str, list[dict]]) -> dict[ObjectRef, dict]:
        kinds = set(self.kinds) | {
            ObjectRef.of(o).kind_ref for objs in desired.values() for o in objs
        }
        found: dict[ObjectRef, dict] = {}
        for kind_ref in sorted(kinds):
            for obj in self.api.list_managed(kind_ref, MANAGED_SELECTOR):
                found[ObjectRef.of(obj)] = obj
        return found

    def _apply(self, obj: dict, before: Mapping[ObjectRef, dict], outcome: _Outcome) -> None:
        ref = ObjectRef.of(obj)
        body = stamped(obj)
        previous = before.get(ref)
        if not self.repair and previous is not None and _digest_of(previous) == _digest_of(body):
            return  # our intent did not move: no apply
        applied = self.api.apply(body, field_manager=self.field_manager)
        if previous is None:
            outcome.added.append(str(ref))
        elif _digest_of(previous) != _digest_of(body):
            outcome.changed.append(str(ref))
        elif _applied_entry(previous, self.field_manager) != _applied_entry(
            applied, self.field_manager
        ):
            outcome.repaired.append(str(ref))

    def _prune(
        self, stale: Mapping[ObjectRef, dict], in_use: set[str], outcomes: dict[str, _Outcome]
    ) -> None:
        """Delete in reverse apply order; a namespace being deleted takes its objects along.

        A namespace still holding a desired object is kept even if not desired itself: deleting
        it would take the object (and a PersistentVolumeClaim's data) along.
        """
        doomed = {ref.name for ref in stale if ref.kind == "Namespace"} - in_use
        for obj in sorted(stale.values(), key=apply_order, reverse=True):
            ref = ObjectRef.of(obj)
            if ref.kind == "Namespace" and ref.name not in doomed:
                continue
            if ref.namespace not in doomed:
                self.api.delete(ref)
            outcomes.setdefault(project_of(obj), _Outcome()).removed.append(str(ref))

    @staticmethod
    def _projects(
        outcomes: Mapping[str, _Outcome], desired: Mapping[str, Any], existed: set[str]
    ) -> dict[str, ProjectDelivery]:
        projects = {}
        for project, o in sorted(outcomes.items()):
            removed = tuple(sorted(o.removed))
            if project not in desired:
                projects[project] = ProjectDelivery(project, "decommissioned", removed=removed)
                continue
            changes = (o.added, o.changed, o.removed, o.repaired)
            status = _project_status(project in existed, changes)
            projects[project] = ProjectDelivery(
                project, status, tuple(o.added), tuple(o.changed), removed, tuple(o.repaired)
            )
        return projects


def delivery_target(
    home_root: Path,
    *,
    kubeconfig: Path | None = None,
    context: str | None = None,
    repair: bool = False,
) -> DeliveryTarget:
    """Kubernetes when a kubeconfig is given, else the GitOps repository under ``HDH_HOME``
    (where every delivery rewrites the files, so hand edits are always taken back)."""
    if kubeconfig is None:
        return GitOpsTarget.for_home(home_root)
    from hdh_assets.workspaces.kubernetes_api import KubernetesClusterApi  # imports the client

    api = KubernetesClusterApi.from_kubeconfig(kubeconfig, context=context)
    return KubernetesTarget(api, repair=repair)
