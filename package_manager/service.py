"""The package manager's operations, shared by the assets, the sensors, the CLI and the portal.

Each function takes the platform's home (and reads :class:`PackageSettings` from the
environment unless given), so the Dagster wrappers stay thin and tests call these directly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from package_manager.approval import (
    approved_packages,
    constraint_lines,
    newly_flagged,
    request_status,
    verdict,
)
from package_manager.decisions import Decision
from package_manager.model import (
    Closure,
    PackageRequest,
    ResolvedPackage,
    UpstreamUnavailable,
    canonical_name,
)
from package_manager.requests import LoadedRequests, load_requests
from package_manager.settings import PackageSettings
from package_manager.store import PackageStore, PackageVerdict, RequestVetting, write_json
from resources.home import HdhHome

STATUSES = ("approved", "needs_review", "refused", "pending")
REVET_TAG = "hdh/revet"  # a run that re-runs every check instead of reusing stored results
CHECKS = ("licence", "vulnerabilities", "malicious_code", "typosquatting", "provenance")


def package_store(home: HdhHome) -> PackageStore:
    return PackageStore(home.packages)


def _specs_folder() -> Path | None:
    from hdh_assets.workspaces.config import specs_dir

    folder = specs_dir()
    return folder if folder.is_dir() else None


def all_requests(home: HdhHome) -> LoadedRequests:
    return load_requests(_specs_folder(), package_store(home).filed_requests)


def request_of(home: HdhHome, request_id: str) -> PackageRequest:
    loaded = all_requests(home)
    if request_id not in loaded.requests:
        raise LookupError(f"no package request {request_id!r} (filed or in the specs folder)")
    return loaded.requests[request_id]


def request_metadata(request: PackageRequest) -> dict:
    return {
        "project": request.project,
        "ecosystem": request.ecosystem,
        "package": request.name,
        "version": request.version or "newest",
        "reason": request.reason,
        "requested_by": request.requested_by,
        "requested_at": request.requested_at,
    }


def _project_known(project: str) -> str | None:
    """Why the project cannot receive packages, or None when it has a valid spec."""
    from hdh_assets.workspaces.config import spec_of
    from hdh_assets.workspaces.specs import SpecError

    try:
        spec_of(project)
    except LookupError:
        return f"project {project!r} has no workspace spec"
    except SpecError as refused:
        return f"project {project!r}'s spec is refused: {refused}"
    return None


# -- closure --


def resolve(
    request: PackageRequest, home: HdhHome, settings: PackageSettings | None = None
) -> Closure:
    """The request's closure, stored; raises :class:`UpstreamUnavailable` to be retried."""
    settings = settings or PackageSettings.from_env()
    store = package_store(home)
    upstream = settings.upstream(request.ecosystem)
    if not upstream:  # a configuration to fix, not a reason to refuse the request
        variable = "HDH_PYPI_UPSTREAM" if request.ecosystem == "pypi" else "HDH_CRAN_UPSTREAM"
        raise UpstreamUnavailable(f"no upstream {request.ecosystem} index configured ({variable})")
    unknown_project = _project_known(request.project)
    if unknown_project:
        closure = Closure(
            request.request_id, request.ecosystem, (), "", "", upstream, unknown_project
        )
    elif request.ecosystem == "pypi":
        from package_manager.python_closure import resolve_python

        closure = resolve_python(request, upstream, work_dir=store.work, store=store.files)
    else:
        from package_manager.r_closure import resolve_r

        closure = resolve_r(request, upstream, work_dir=store.work, store=store.files)
    store.save_closure(closure)
    return closure


def archive_path(package: ResolvedPackage, store: PackageStore) -> Path:
    """The vetted bytes of a closure member (fetched once, checked against its sha256)."""
    if package.ecosystem == "pypi":
        from package_manager.python_closure import fetch_archive

        return fetch_archive(package, store.files)
    from package_manager.r_closure import fetch_r_archive

    return fetch_r_archive(package, store.files)


# -- vetting --


@contextlib.contextmanager
def vulnerability_service(settings: PackageSettings) -> Iterator[tuple[str | None, str | None]]:
    """(OSV URL, database fingerprint) for one vetting: the configured service, or the export
    folder served on loopback for the duration; (None, None) when nothing is configured."""
    from package_manager.vetting.osv_server import OsvServer, database_fingerprint

    if settings.osv_export is not None:
        with OsvServer(settings.osv_export) as server:
            yield server.base_url, database_fingerprint(settings.osv_export)
    elif settings.osv_url:
        yield settings.osv_url, f"url:{settings.osv_url}"
    else:
        yield None, None


def vetting_inputs_fingerprint(home: HdhHome, settings: PackageSettings | None = None) -> str:
    """What the re-vetting sensor compares: the policy file's digest and the vulnerability
    database's (the export's content digest, or for a remote service the digest of its
    answers about every package vetted so far)."""
    settings = settings or PackageSettings.from_env()
    database = "none"
    if settings.osv_export is not None:
        from package_manager.vetting.osv_server import database_fingerprint

        database = database_fingerprint(settings.osv_export)
    elif settings.osv_url:
        packages = {
            v.package.key for r in package_store(home).vettings().values() for v in r.verdicts
        }
        database = _answers_fingerprint(settings.osv_url, sorted(packages))
    return f"{database[:32]}-{_policy_digest(settings)}"


def _answers_fingerprint(osv_url: str, keys: list[tuple[str, str, str]]) -> str:
    import httpx

    ecosystems = {"pypi": "PyPI", "cran": "CRAN"}
    queries = [
        {"package": {"ecosystem": ecosystems[eco], "name": name}, "version": version}
        for eco, name, version in keys
    ]
    root = osv_url.removesuffix("/v1/query").rstrip("/")
    answer = httpx.post(f"{root}/v1/querybatch", json={"queries": queries}, timeout=60)
    answer.raise_for_status()
    return hashlib.sha256(answer.content).hexdigest()


def vetted_against_other(home: HdhHome, fingerprint: str) -> dict[str, str]:
    """Requests vetted against other vulnerability data or another policy than now, with
    when each was last vetted (a re-vetting run's key: each vetting is re-vetted once)."""
    return {
        request_id: vetting.vetted_at or ""
        for request_id, vetting in package_store(home).vetting_summaries().items()
        if vetting.extra.get("inputs") != fingerprint
    }


def _cache_path(store: PackageStore, package: ResolvedPackage) -> Path:
    name = canonical_name(package.ecosystem, package.name)
    return (
        store.root
        / "checks"
        / package.ecosystem
        / name
        / f"{package.version}-{package.sha256[:16]}.json"
    )


def _policy_digest(settings: PackageSettings) -> str:
    return hashlib.sha256(settings.policy_path.read_bytes()).hexdigest()[:16]


def vet(
    request: PackageRequest,
    home: HdhHome,
    *,
    revet: bool = False,
    settings: PackageSettings | None = None,
) -> tuple[RequestVetting, list[PackageVerdict]]:
    """Vet every member of the request's closure (each file once: results are kept per file,
    for the same vulnerability database and policy) and apply the decisions in force.
    Returns the vetting and the members that were approved and are not any more."""
    from package_manager.vetting import (
        ProvenanceLedger,
        VettingContext,
        load_policy,
        vet_packages,
    )

    settings = settings or PackageSettings.from_env()
    store = package_store(home)
    closure = store.closure(request.request_id)
    if closure is None:
        raise LookupError(f"request {request.request_id} has no closure yet: resolve it first")
    before = store.vetting(request.request_id)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if closure.error:
        vetting = RequestVetting(request.request_id, "refused", (), closure.error, None, now)
        store.save_vetting(vetting)
        return vetting, newly_flagged(before, vetting)
    with vulnerability_service(settings) as (osv_url, fingerprint):
        stamp = {"database": fingerprint, "policy": _policy_digest(settings)}
        checks: dict[tuple, list] = {}
        to_vet = []
        for package in closure.packages:
            cached = _cache_path(store, package)
            if not revet and cached.exists():
                data = json.loads(cached.read_text())
                if data["stamp"] == stamp:
                    checks[package.key] = data["checks"]
                    continue
            to_vet.append((package, archive_path(package, store)))
        if to_vet:
            ctx = VettingContext(
                policy=load_policy(settings.policy_path),
                osv_source=osv_url,
                approved=approved_names(store),
                ledger=ProvenanceLedger(store.provenance_path),
            )
            for package, results in zip(
                [p for p, _ in to_vet], _ordered(vet_packages(to_vet, ctx), to_vet), strict=True
            ):
                data = [r.to_json() for r in results]
                write_json(_cache_path(store, package), {"stamp": stamp, "checks": data})
                checks[package.key] = data
    from package_manager.model import CheckResult

    decisions = store.decisions.latest()
    verdicts = tuple(
        verdict(p, (CheckResult.from_json(c) for c in checks[p.key]), decisions)
        for p in closure.packages
    )
    vetting = RequestVetting(
        request.request_id,
        request_status(closure, verdicts),
        verdicts,
        None,
        fingerprint,
        now,
        extra={"inputs": f"{(fingerprint or 'none')[:32]}-{stamp['policy']}"},
    )
    store.save_vetting(vetting)
    flagged = newly_flagged(before, vetting)
    if flagged:
        _flag(store, request, flagged, now)
    return vetting, flagged


def _ordered(results: dict, items: list[tuple[ResolvedPackage, Path]]) -> list:
    return [results[package.key] for package, _ in items]


def _flag(store: PackageStore, request: PackageRequest, flagged: list[PackageVerdict], now: str):
    flags = store.flags(request.project)
    for v in flagged:
        flags.append(
            {
                "at": now,
                "request_id": request.request_id,
                "package": v.package.name,
                "version": v.package.version,
                "status": v.status,
                "message": f"{v.package.name} {v.package.version} was approved and is now "
                f"{v.status}: {'; '.join(v.reasons)[:300]}",
            }
        )
    store.save_flags(request.project, flags)


def approved_names(store: PackageStore) -> dict[str, frozenset[str]]:
    """Names already approved anywhere, per ecosystem: typosquatting compares new names with
    them too."""
    names: dict[str, set[str]] = {}
    for vetting in store.vetting_summaries().values():
        for v in vetting.verdicts:
            if v.status == "approved":
                names.setdefault(v.package.ecosystem, set()).add(v.package.name)
    return {eco: frozenset(n) for eco, n in names.items()}


def incompletely_vetted(vetting: RequestVetting) -> list[str]:
    """Members missing one of the five checks (a refused request has no members to vet)."""
    return [
        f"{v.package.name} {v.package.version}: {', '.join(sorted(set(CHECKS) - {c.check for c in v.checks}))}"
        for v in vetting.verdicts
        if set(CHECKS) - {c.check for c in v.checks}
    ]


def decide(
    home: HdhHome,
    *,
    ecosystem: str,
    name: str,
    version: str,
    decision: str,
    reason: str,
    decided_by: str,
    sha256: str | None = None,
) -> list[Decision]:
    """A referent's decision on the vetted file of that name and version the referent saw
    (``sha256``), or on every vetted file of that name and version (usually one)."""
    store = package_store(home)
    wanted = (ecosystem, canonical_name(ecosystem, name), version)  # type: ignore[arg-type]
    files = {
        v.package.sha256
        for vetting in store.vettings().values()
        for v in vetting.verdicts
        if v.package.key == wanted and (sha256 is None or v.package.sha256 == sha256)
    }
    if not files:
        which = f" with sha256 {sha256}" if sha256 else ""
        raise LookupError(
            f"no vetted {ecosystem} package {name} {version}{which}: nothing to decide on"
        )
    return [
        store.decisions.record(
            ecosystem=ecosystem,  # type: ignore[arg-type]
            name=name,
            version=version,
            sha256=sha256,
            decision=decision,  # type: ignore[arg-type]
            reason=reason,
            decided_by=decided_by,
        )
        for sha256 in sorted(files)
    ]


def requests_touched_by(home: HdhHome, decisions: Iterable[Decision]) -> set[str]:
    """Requests whose closure holds a file a decision is about and that were last vetted
    before it: they are vetted again (times to the microsecond, so in order)."""
    decided_at: dict[tuple, str] = {}
    for d in decisions:
        decided_at[d.package_key] = max(decided_at.get(d.package_key, ""), d.decided_at)
    if not decided_at:
        return set()
    return {
        request_id
        for request_id, vetting in package_store(home).vetting_summaries().items()
        if any(
            (vetting.vetted_at or "") < decided_at.get((*v.package.key, v.package.sha256), "")
            for v in vetting.verdicts
        )
    }


# -- the project indexes --


@dataclass
class ProjectIndexState:
    project: str
    approved: dict[str, list[ResolvedPackage]]
    constraints: list[str]
    digest: str
    python_url: str
    r_url: str
    served: bool = False
    served_python: set[str] | None = None  # names the Python index lists, when served
    served_r: set[str] = field(default_factory=set)
    flags: list[dict] = field(default_factory=list)


def project_state(
    project: str,
    home: HdhHome,
    requests: Iterable[PackageRequest] | None = None,
    settings: PackageSettings | None = None,
    summaries: dict[str, RequestVetting] | None = None,
) -> ProjectIndexState:
    settings = settings or PackageSettings.from_env()
    store = package_store(home)
    requests = list(all_requests(home).requests.values() if requests is None else requests)
    summaries = store.vetting_summaries() if summaries is None else summaries
    approved = approved_packages(requests, summaries, project)
    python = approved.get("pypi", [])
    stage_versions: dict[str, set[str]] = {}
    for vetting in summaries.values():
        for v in vetting.verdicts:
            if v.status == "approved" and v.package.ecosystem == "pypi":
                stage_versions.setdefault(canonical_name("pypi", v.package.name), set()).add(
                    v.package.version
                )
    constraints = constraint_lines(python, stage_versions)
    # A name with several approved versions excludes the pool's other versions: a version
    # approved for another project later changes what this project's line must exclude.
    names = [canonical_name("pypi", p.name) for p in python]
    several = sorted({name for name in names if names.count(name) > 1})
    digest_input = json.dumps(
        {
            "served": {
                eco: [(p.name, p.version, p.sha256) for p in ps]
                for eco, ps in sorted(approved.items())
            },
            "pool": {name: sorted(stage_versions.get(name, ())) for name in several},
        }
    )
    from package_manager.python_index import project_index_url

    return ProjectIndexState(
        project=project,
        approved=approved,
        constraints=constraints,
        digest=hashlib.sha256(digest_input.encode()).hexdigest()[:16],
        python_url=project_index_url(settings.devpi_url, project),
        r_url=f"{settings.r_repos_url}/{project}",
        flags=store.flags(project),
    )


def _published_path(store: PackageStore, project: str) -> Path:
    return store.root / "indexes" / f"{project}.json"


def stale_indexes(home: HdhHome, requests: Iterable[PackageRequest]) -> dict[str, str]:
    """Projects whose approved set differs from the one last published (those with requests,
    and those published before whose requests are gone): project -> a token naming this
    change (the new set's digest and when the last one was published), for a run key."""
    store = package_store(home)
    requests = list(requests)
    published_dir = store.root / "indexes"
    published_projects = (
        {p.stem for p in published_dir.glob("*.json")} if published_dir.is_dir() else set()
    )
    summaries = store.vetting_summaries()
    stale = {}
    for project in sorted({r.project for r in requests} | published_projects):
        state = project_state(project, home, requests, summaries=summaries)
        path = _published_path(store, project)
        published = json.loads(path.read_text()) if path.exists() else {}
        if published.get("digest") != state.digest:
            stale[project] = f"{state.digest}-{published.get('at', 'never')}"
    return stale


def publish_project(
    project: str, home: HdhHome, settings: PackageSettings | None = None
) -> ProjectIndexState:
    """Make the project's R repository hold exactly its approved R files, and its devpi
    index exactly its approved Python files when the index server answers (``hdh packages
    serve`` publishes every project when it starts, so nothing is lost while it is down)."""
    settings = settings or PackageSettings.from_env()
    store = package_store(home)
    state = project_state(project, home, settings=settings)
    from package_manager.r_repository import RRepositories

    r_files = [archive_path(p, store) for p in state.approved.get("cran", [])]
    RRepositories(store.r_repos).set_project(project, r_files)
    state.served_r = {p.name for p in state.approved.get("cran", [])}
    from package_manager.python_index import DevpiIndexes, devpi_answers

    if devpi_answers(settings.devpi_url):
        with DevpiIndexes(settings.devpi_url) as indexes:
            indexes.ensure_layout()
            uploaded = _uploaded_record(store, indexes)
            done = set(uploaded.read_text().split()) if uploaded.exists() else set()
            for package in state.approved.get("pypi", []):
                if package.sha256 not in done:
                    indexes.upload(archive_path(package, store))
                    with uploaded.open("a") as record:
                        record.write(package.sha256 + "\n")
            indexes.set_constraints(project, state.constraints)
            state.served = True
            state.served_python = indexes.served_names(project)
    write_json(
        _published_path(store, project),
        {
            "digest": state.digest,
            "constraints": state.constraints,
            "served": state.served,
            "at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
    )
    return state


def _uploaded_record(store: PackageStore, indexes) -> Path:
    """The files already in this devpi server's pool (named by its id: a server started afresh
    has another), so a rebuild uploads only what is new."""
    server = hashlib.sha256(indexes.server_uuid().encode()).hexdigest()[:16]
    path = store.root / "indexes" / f"uploaded-{server}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def served_mismatches(state: ProjectIndexState) -> list[str]:
    """What the Python index lists that is not approved, or misses that is."""
    if state.served_python is None:
        return ["the Python index server is not running: hdh packages serve publishes it"]
    approved = {canonical_name("pypi", p.name) for p in state.approved.get("pypi", [])}
    served = {canonical_name("pypi", n) for n in state.served_python}
    return [f"served but not approved: {n}" for n in sorted(served - approved)] + [
        f"approved but not served: {n}" for n in sorted(approved - served)
    ]


def approval_evidence(home: HdhHome) -> dict[tuple, dict[str, str]]:
    """For each approved file: its licence expression and how it was approved."""
    evidence = {}
    for vetting in package_store(home).vettings().values():
        for v in vetting.verdicts:
            if v.status != "approved":
                continue
            licence = next((c for c in v.checks if c.check == "licence"), None)
            expression = (licence.evidence.get("spdx") if licence else None) or ""
            if v.decision:
                how = f"{v.decision['decided_by']}: {v.decision['reason']}"
            else:
                how = "every check passed"
            evidence[(*v.package.key, v.package.sha256)] = {
                "licence": str(expression),
                "approved_by": how,
            }
    return evidence


def package_rows(home: HdhHome) -> list[dict]:
    """One row per member of each request's closure (``hdh packages list --json``)."""
    store = package_store(home)
    loaded = all_requests(home)
    rows = []
    for request_id, request in sorted(loaded.requests.items()):
        vetting = store.vetting(request_id)
        base = {
            "project": request.project,
            "ecosystem": request.ecosystem,
            "request_id": request_id,
        }
        if vetting is None:
            rows.append(
                base
                | {
                    "name": request.name,
                    "version": request.version,
                    "status": "pending",
                    "reasons": ["not vetted yet"],
                }
            )
        elif not vetting.verdicts:
            rows.append(
                base
                | {
                    "name": request.name,
                    "version": request.version,
                    "status": vetting.status,
                    "reasons": [vetting.reason or ""],
                }
            )
        for v in vetting.verdicts if vetting else ():
            rows.append(
                base
                | {
                    "name": v.package.name,
                    "version": v.package.version,
                    "status": v.status,
                    "reasons": v.reasons,
                    "requested": v.package.requested,
                }
            )
    return rows


__all__ = ["UpstreamUnavailable"]
