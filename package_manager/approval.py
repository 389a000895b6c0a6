"""From checks and decisions to statuses, and from statuses to what each project is served.

Pure functions: no network, no files. A package is approved when every check passed or a
referent approved its exact file; a request is approved when every member of its closure is;
a project is served the union of its approved requests' closures and nothing else.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from package_manager.decisions import Decision
from package_manager.model import (
    CheckResult,
    Closure,
    PackageRequest,
    ResolvedPackage,
    Status,
    canonical_name,
    combine,
)
from package_manager.store import PackageVerdict, RequestVetting


def verdict(
    package: ResolvedPackage,
    checks: Iterable[CheckResult],
    decisions: Mapping[tuple[str, str, str, str], Decision],
) -> PackageVerdict:
    """The checks' outcome, overridden by the decision on this exact file if there is one."""
    checks = tuple(checks)
    automatic = combine(checks)
    key = (*package.key, package.sha256)
    decision = decisions.get(key)
    status: Status = automatic
    if decision is not None:
        status = "approved" if decision.decision == "approve" else "refused"
    return PackageVerdict(
        package=package,
        checks=checks,
        automatic=automatic,
        status=status,
        decision=_decision_json(decision) if decision else None,
    )


def _decision_json(decision: Decision) -> dict:
    return {
        "decision": decision.decision,
        "reason": decision.reason,
        "decided_by": decision.decided_by,
        "decided_at": decision.decided_at,
    }


def request_status(closure: Closure, verdicts: Iterable[PackageVerdict]) -> Status:
    if closure.error:
        return "refused"
    statuses = {v.status for v in verdicts}
    if not statuses:
        return "pending"
    if "refused" in statuses:
        return "refused"
    if statuses == {"approved"}:
        return "approved"
    return "needs_review"


def approved_packages(
    requests: Iterable[PackageRequest], vettings: Mapping[str, RequestVetting], project: str
) -> dict[str, list[ResolvedPackage]]:
    """Per ecosystem, the files a project is served: the members of its approved requests'
    closures, each file once."""
    served: dict[str, dict[tuple, ResolvedPackage]] = defaultdict(dict)
    for request in requests:
        vetting = vettings.get(request.request_id)
        if request.project != project or vetting is None or vetting.status != "approved":
            continue
        for v in vetting.verdicts:
            served[request.ecosystem][(*v.package.key, v.package.sha256)] = v.package
    return {eco: sorted(files.values(), key=lambda p: p.key) for eco, files in served.items()}


def constraint_lines(
    approved: Iterable[ResolvedPackage], stage_versions: Mapping[str, Iterable[str]]
) -> list[str]:
    """devpi-constrained lines for one project, ending with ``*`` (everything unlisted is
    blocked). One line per name: ``name==v`` for one approved version; for several, the
    versions the approved stage holds that are not approved are excluded (``!=``), since a
    specifier cannot say "this or that"."""
    versions: dict[str, set[str]] = defaultdict(set)
    for package in approved:
        versions[canonical_name("pypi", package.name)].add(package.version)
    lines = []
    for name in sorted(versions):
        allowed = versions[name]
        if len(allowed) == 1:
            lines.append(f"{name}=={next(iter(allowed))}")
            continue
        others = sorted(set(stage_versions.get(name, ())) - allowed)
        lines.append(name + (" " + ",".join(f"!={v}" for v in others) if others else ""))
    return [*lines, "*"]


def newly_flagged(before: RequestVetting | None, after: RequestVetting) -> list[PackageVerdict]:
    """Members that were approved and are no longer, after a re-vetting (a new advisory, a
    changed hash): what the projects using them must be told."""
    if before is None:
        return []
    was_approved = {v.package.key for v in before.verdicts if v.status == "approved"}
    return [v for v in after.verdicts if v.package.key in was_approved and v.status != "approved"]
