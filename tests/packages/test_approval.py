"""From checks and decisions to statuses, and from statuses to what each project is served.

The helpers here (files, checks, decisions, vettings) are shared by the other fast package
tests, which build a store without resolving or vetting anything.
"""

from __future__ import annotations

import hashlib

import pytest

from package_manager.approval import (
    approved_packages,
    constraint_lines,
    newly_flagged,
    request_status,
    verdict,
)
from package_manager.decisions import Decision
from package_manager.model import (
    CheckResult,
    Closure,
    PackageRequest,
    ResolvedPackage,
    combine,
)
from package_manager.requests import make_request
from package_manager.service import CHECKS, incompletely_vetted
from package_manager.store import PackageStore, PackageVerdict, RequestVetting

PROJECT = "diabetes-outcomes"
OTHER = "cardio-imaging"


# --- helpers (imported by the other package tests) --------------------------------------------


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def resolved(
    name: str,
    version: str = "1.0.0",
    *,
    ecosystem: str = "pypi",
    digest: str | None = None,
    requested: bool = False,
) -> ResolvedPackage:
    filename = f"{name}-{version}.tar.gz"
    return ResolvedPackage(
        ecosystem=ecosystem,  # type: ignore[arg-type]
        name=name,
        version=version,
        filename=filename,
        url=f"http://upstream.test/{filename}",
        sha256=digest or sha(f"{ecosystem}/{name}/{version}"),
        license="MIT",
        requested=requested,
    )


def checks(status: str = "passed", reason: str = "") -> tuple[CheckResult, ...]:
    """The five checks, all passed but the first (licence) when ``status`` says otherwise."""
    first = CheckResult("licence", status, (reason,) if reason else ())  # type: ignore[arg-type]
    return (first, *(CheckResult(c, "passed") for c in CHECKS[1:]))


def decision(
    package: ResolvedPackage, choice: str = "approve", *, digest: str | None = None
) -> Decision:
    return Decision(
        ecosystem=package.ecosystem,
        name=package.key[1],
        version=package.version,
        sha256=digest or package.sha256,
        decision=choice,  # type: ignore[arg-type]
        reason="reviewed",
        decided_by="referent",
        decided_at="2026-01-06T09:00:00Z",
    )


def request(requirement: str, project: str = PROJECT, ecosystem: str = "pypi") -> PackageRequest:
    return make_request(
        project,
        requirement,
        ecosystem=ecosystem,
        reason="needed for the analysis",
        requested_by="amina.benali@univ-exemple.fr",
        requested_at="2026-01-05T10:00:00Z",
    )


def vetting_of(
    request_id: str, members: list[tuple[ResolvedPackage, str]], *, inputs: str | None = None
) -> RequestVetting:
    """A stored vetting whose members have these statuses (by the licence check)."""
    verdicts = tuple(
        verdict(p, checks(s, f"{p.name}: {s}" if s != "passed" else ""), {}) for p, s in members
    )
    closure = Closure(request_id, members[0][0].ecosystem, tuple(p for p, _ in members), "", "", "")
    return RequestVetting(
        request_id,
        request_status(closure, verdicts),
        verdicts,
        vetted_at="2026-01-05T11:00:00Z",
        extra={"inputs": inputs} if inputs else {},
    )


def save(store: PackageStore, filed: PackageRequest, members: list[tuple[ResolvedPackage, str]]):
    """Store the closure and the vetting of a request, as the vetting run would."""
    vetting = vetting_of(filed.request_id, members)
    closure = Closure(
        filed.request_id,
        filed.ecosystem,
        tuple(p for p, _ in members),
        "uv test",
        "cp311",
        "http://upstream.test/simple/",
    )
    store.save_closure(closure)
    store.save_vetting(vetting)
    return vetting


# --- verdict ----------------------------------------------------------------------------------


def test_checks_alone_decide_when_there_is_no_decision() -> None:
    package = resolved("pandas")
    assert verdict(package, checks("passed"), {}).status == "approved"
    assert verdict(package, checks("needs_review"), {}).status == "needs_review"
    assert verdict(package, checks("refused"), {}).status == "refused"
    not_run = verdict(package, checks("not_run", "OSV not configured"), {})
    assert not_run.status == "needs_review"  # a check not run never passes
    assert verdict(package, (), {}).status == "needs_review"  # nothing checked: not approved
    assert combine([]) == "needs_review"


def test_a_decision_overrides_the_checks_for_its_exact_file_only() -> None:
    package = resolved("Zope.Interface", "7.0")
    approve = decision(package, "approve")
    assert approve.name == "zope-interface"  # decisions hold the canonical name
    decisions = {approve.package_key: approve}

    approved = verdict(package, checks("needs_review", "licence unknown"), decisions)
    assert (approved.automatic, approved.status) == ("needs_review", "approved")
    assert approved.decision is not None and approved.decision["decided_by"] == "referent"
    assert approved.reasons == ["licence unknown", "approved by referent: reviewed"]

    # the same name and version with other bytes: the decision does not apply
    other_bytes = resolved("Zope.Interface", "7.0", digest=sha("rebuilt"))
    assert verdict(other_bytes, checks("needs_review"), decisions).status == "needs_review"
    assert verdict(other_bytes, checks("needs_review"), decisions).decision is None
    # nor to another version, nor to the other ecosystem
    assert verdict(resolved("zope.interface", "7.1"), checks("needs_review"), decisions).status == (
        "needs_review"
    )
    cran = resolved("Zope.Interface", "7.0", ecosystem="cran", digest=package.sha256)
    assert verdict(cran, checks("needs_review"), decisions).status == "needs_review"


def test_a_refusal_overrides_passing_checks() -> None:
    package = resolved("pandas")
    refuse = decision(package, "refuse")
    refused = verdict(package, checks("passed"), {refuse.package_key: refuse})
    assert (refused.automatic, refused.status) == ("approved", "refused")
    assert refused.reasons == ["refused by referent: reviewed"]


def test_a_verdict_round_trips_through_json() -> None:
    package = resolved("pandas")
    d = decision(package)
    original = verdict(package, checks("needs_review", "why"), {d.package_key: d})
    assert PackageVerdict.from_json(original.to_json()) == original
    assert original.to_json()["reasons"] == original.reasons


# --- request_status ---------------------------------------------------------------------------


def _closure(error: str | None = None) -> Closure:
    return Closure("r", "pypi", (), "uv", "cp311", "http://upstream.test/simple/", error)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ((), "pending"),
        (("passed",), "approved"),
        (("passed", "passed", "passed"), "approved"),
        (("passed", "needs_review"), "needs_review"),
        (("passed", "not_run"), "needs_review"),
        (("needs_review", "refused", "passed"), "refused"),
    ],
)
def test_a_request_is_approved_only_when_every_member_is(
    statuses: tuple[str, ...], expected: str
) -> None:
    verdicts = [verdict(resolved(f"p{i}"), checks(s), {}) for i, s in enumerate(statuses)]
    assert request_status(_closure(), verdicts) == expected


def test_a_closure_error_refuses_the_request_whatever_the_members() -> None:
    approved = [verdict(resolved("pandas"), checks("passed"), {})]
    assert request_status(_closure("unsatisfiable"), approved) == "refused"
    assert request_status(_closure("not found"), []) == "refused"


def test_a_referents_approval_completes_a_request() -> None:
    waiting, fine = resolved("hdh-unknown-licence"), resolved("hdh-core")
    d = decision(waiting)
    verdicts = [
        verdict(waiting, checks("needs_review"), {d.package_key: d}),
        verdict(fine, checks("passed"), {d.package_key: d}),
    ]
    assert request_status(_closure(), verdicts) == "approved"


# --- approved_packages ------------------------------------------------------------------------


def test_a_project_is_served_its_approved_requests_closures_only() -> None:
    core = resolved("hdh-core", "1.0.0")
    tabular = resolved("hdh-tabular", "2.0.0", requested=True)
    plot = resolved("hdh-plot", requested=True)
    surv = resolved("hdhsurv", ecosystem="cran", requested=True)
    stats = resolved("hdhstats", ecosystem="cran")
    mine = request("hdh-tabular")
    waiting = request("hdh-plot")
    r_request = request("hdhsurv", ecosystem="cran")
    theirs = request("hdh-numbers", project=OTHER)
    unvetted = request("hdh-nothing-yet")
    numbers = resolved("hdh-numbers", requested=True)
    vettings = {
        mine.request_id: vetting_of(mine.request_id, [(tabular, "passed"), (core, "passed")]),
        waiting.request_id: vetting_of(
            waiting.request_id, [(plot, "needs_review"), (core, "passed")]
        ),
        r_request.request_id: vetting_of(
            r_request.request_id, [(surv, "passed"), (stats, "passed")]
        ),
        theirs.request_id: vetting_of(theirs.request_id, [(numbers, "passed")]),
    }
    assert vettings[waiting.request_id].status == "needs_review"
    requests = [mine, waiting, r_request, theirs, unvetted]

    served = approved_packages(requests, vettings, PROJECT)

    assert {eco: [p.name for p in ps] for eco, ps in served.items()} == {
        "pypi": ["hdh-core", "hdh-tabular"],  # not hdh-plot (waits), not hdh-numbers (other)
        "cran": ["hdhstats", "hdhsurv"],
    }
    assert [p.name for p in approved_packages(requests, vettings, OTHER)["pypi"]] == ["hdh-numbers"]
    assert approved_packages(requests, vettings, "no-such-project") == {}


def test_a_file_shared_by_two_approved_requests_is_served_once() -> None:
    core = resolved("hdh-core")
    first, second = request("hdh-a"), request("hdh-b")
    vettings = {
        first.request_id: vetting_of(
            first.request_id, [(resolved("hdh-a"), "passed"), (core, "passed")]
        ),
        second.request_id: vetting_of(
            second.request_id, [(resolved("hdh-b"), "passed"), (core, "passed")]
        ),
    }
    served = approved_packages([first, second], vettings, PROJECT)
    assert [p.name for p in served["pypi"]] == ["hdh-a", "hdh-b", "hdh-core"]


def test_another_projects_approval_serves_nothing_here() -> None:
    """The vetting is keyed by request id: a request of the other project never leaks, even
    when the vetting store holds an approved vetting for the same package."""
    theirs = request("pandas", project=OTHER)
    mine = request("pandas")
    pandas = resolved("pandas")
    vettings = {
        theirs.request_id: vetting_of(theirs.request_id, [(pandas, "passed")]),
        mine.request_id: vetting_of(mine.request_id, [(pandas, "refused")]),
    }
    assert approved_packages([theirs, mine], vettings, PROJECT) == {}


# --- constraint_lines -------------------------------------------------------------------------


def test_one_approved_version_is_pinned_and_everything_else_is_blocked() -> None:
    lines = constraint_lines(
        [resolved("Scikit_Learn", "1.5.2"), resolved("numpy", "2.1.0")],
        {"scikit-learn": {"1.5.2", "1.4.0"}, "numpy": {"2.1.0"}},
    )
    assert lines == ["numpy==2.1.0", "scikit-learn==1.5.2", "*"]


def test_several_approved_versions_exclude_the_stages_other_versions() -> None:
    approved = [resolved("numpy", "2.1.0"), resolved("numpy", "1.26.4"), resolved("pandas")]
    stage = {"numpy": {"1.26.4", "2.0.0", "2.1.0", "1.10.0"}, "pandas": {"1.0.0"}}
    assert constraint_lines(approved, stage) == [
        "numpy !=1.10.0,!=2.0.0",
        "pandas==1.0.0",
        "*",
    ]
    # the stage holds only the approved versions: no exclusion needed
    assert constraint_lines(approved[:2], {"numpy": {"1.26.4", "2.1.0"}}) == ["numpy", "*"]


def test_the_same_version_twice_is_one_pin() -> None:
    twice = [resolved("numpy", "2.1.0"), resolved("numpy", "2.1.0", digest=sha("other wheel"))]
    assert constraint_lines(twice, {"numpy": {"2.1.0", "2.0.0"}}) == ["numpy==2.1.0", "*"]


def test_nothing_approved_blocks_everything() -> None:
    assert constraint_lines([], {"numpy": {"2.1.0"}}) == ["*"]


# --- newly_flagged ----------------------------------------------------------------------------


def test_an_approved_member_no_longer_approved_is_flagged() -> None:
    core, tabular = resolved("hdh-core"), resolved("hdh-tabular")
    before = vetting_of("r", [(tabular, "passed"), (core, "passed")])
    after = vetting_of("r", [(tabular, "passed"), (core, "refused")])
    flagged = newly_flagged(before, after)
    assert [(v.package.name, v.status) for v in flagged] == [("hdh-core", "refused")]


def test_nothing_is_flagged_without_a_change_for_the_worse() -> None:
    core, plot = resolved("hdh-core"), resolved("hdh-plot")
    waiting = vetting_of("r", [(core, "passed"), (plot, "needs_review")])
    assert newly_flagged(None, waiting) == []  # first vetting: nothing was served
    assert newly_flagged(waiting, waiting) == []
    # a member that was waiting and is now refused was never served: nothing to tell
    worse = vetting_of("r", [(core, "passed"), (plot, "refused")])
    assert newly_flagged(waiting, worse) == []
    better = vetting_of("r", [(core, "passed"), (plot, "passed")])
    assert newly_flagged(waiting, better) == []


def test_an_approved_member_served_with_other_bytes_is_flagged() -> None:
    """An approved file replaced by other bytes of the same name and version, which then wait
    for review, is flagged to the project."""
    core = resolved("hdh-core")
    swapped = resolved("hdh-core", digest=sha("hdh-core rebuilt by someone else"))
    before = vetting_of("r", [(core, "passed")])
    after = vetting_of("r", [(swapped, "needs_review")])
    flagged = newly_flagged(before, after)
    assert [(v.package.name, v.package.sha256, v.status) for v in flagged] == [
        ("hdh-core", swapped.sha256, "needs_review")
    ]


# --- incompletely_vetted ----------------------------------------------------------------------


def test_a_member_missing_a_check_is_named_with_the_missing_checks() -> None:
    complete = verdict(resolved("hdh-core"), checks(), {})
    partial = verdict(resolved("hdh-plot", "0.3"), checks()[:3], {})
    vetting = RequestVetting("r", "needs_review", (complete, partial))
    assert incompletely_vetted(vetting) == ["hdh-plot 0.3: provenance, typosquatting"]
    assert incompletely_vetted(RequestVetting("r", "refused", (), "not found")) == []


# --- what the store keeps -----------------------------------------------------------------------


def test_closures_and_vettings_round_trip_through_the_store(tmp_path) -> None:
    store = PackageStore(tmp_path / "packages")
    filed = request("hdh-tabular")
    vetting = save(
        store,
        filed,
        [(resolved("hdh-tabular", requested=True), "passed"), (resolved("hdh-core"), "refused")],
    )
    assert store.vetting(filed.request_id) == vetting
    assert store.vettings() == {filed.request_id: vetting}
    closure = store.closure(filed.request_id)
    assert closure is not None and [p.name for p in closure.packages] == ["hdh-tabular", "hdh-core"]
    assert Closure.from_json(closure.to_json()) == closure
    assert store.closure("nothing") is None and store.vetting("nothing") is None
    # written atomically: no temporary file left beside them
    assert sorted(p.name for p in (store.root / "vetting").iterdir()) == [
        f"{filed.request_id}.json"
    ]
