"""The data referents' package reviews: every package request, its closure with each check's
evidence, and a decision form for the members the checks left for review.

These pages are part of the staff area: the same sign-in, server-side session and CSRF-protected
forms as the DPO's pages (``dpo``), but they need the data referent role. A decision goes through
``service.decide`` as ``referent:<username>`` into the hash-chained decision log; the platform's
sensor then vets the requests it touches again, so until it has run the page shows the decision
recorded next to the standing of the last vetting. The page reads the package manager's files
only: it neither resolves nor vets. Log lines name request ids and outcomes, never who asked or
why.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from auth.roles import DATA_REFERENT
from package_manager import service
from package_manager.decisions import Decision, DecisionError
from package_manager.model import (
    CheckResult,
    Closure,
    PackageRequest,
    ResolvedPackage,
    canonical_name,
)
from package_manager.store import PackageStore, PackageVerdict, RequestVetting
from portal.dpo import DpoPages
from portal.dpo_auth import PACKAGES_PATH
from portal.dpo_sessions import DpoSession
from resources.home import HdhHome

log = logging.getLogger("hdh.portal.packages")
DECIDE_FIELDS = ("name", "version", "sha256", "decision", "reason")
DECISIONS = ("approve", "refuse")
REASON_MAX = 1000
MAX_EVIDENCE_ROWS = 100
# The waiting ones first: they are what a referent comes here for.
STATUS_ORDER = ("needs_review", "pending", "refused", "approved")
STATUS_TITLES = {
    "needs_review": "Waiting for a referent's review",
    "pending": "Not vetted yet",
    "refused": "Refused",
    "approved": "Approved",
}
CHECK_TITLES = {
    "licence": "Licence",
    "vulnerabilities": "Known vulnerabilities",
    "malicious_code": "Malicious code (guarddog)",
    "typosquatting": "Similar names (typosquatting)",
    "provenance": "Provenance (hashes)",
}
# The package manager's files being unreadable (damaged, or a folder missing): a 503, not a 500.
_UNREADABLE = (OSError, ValueError, KeyError, TypeError)


def referent_actor(session: DpoSession) -> str:
    """The decision log's name for a referent."""
    return f"referent:{session.username}"


def request_path(request_id: str) -> str:
    return f"{PACKAGES_PATH}/{quote(request_id, safe='')}"


# -- evidence as the page shows it -------------------------------------------------------


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _text(value: Any) -> str:
    if value is None:
        return "none"
    if _scalar(value):
        return str(value)
    if isinstance(value, list) and all(_scalar(v) for v in value):
        return ", ".join(_text(v) for v in value) or "none"
    return json.dumps(value, sort_keys=True, default=str)


def _table(records: list[dict]) -> dict[str, Any]:
    columns: list[str] = []
    for record in records:
        columns += [k for k in record if k not in columns]
    shown = records[:MAX_EVIDENCE_ROWS]
    return {
        "kind": "table",
        "columns": [c.replace("_", " ") for c in columns],
        "rows": [[_text(r.get(c)) for c in columns] for r in shown],
        "more": len(records) - len(shown),
    }


def evidence_item(key: str, value: Any) -> dict[str, Any]:
    """One piece of evidence: text, a list, key-value pairs, a table of records (advisories,
    findings, similar names), or JSON for anything else."""
    item: dict[str, Any] = {"key": key, "label": key.replace("_", " ")}
    if _scalar(value):
        return item | {"kind": "text", "text": _text(value)}
    if isinstance(value, list) and all(_scalar(v) for v in value):
        return item | {"kind": "text", "text": _text(value)}
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return item | _table(value)
    if isinstance(value, dict) and all(_scalar(v) for v in value.values()):
        return item | {"kind": "pairs", "pairs": [(str(k), _text(v)) for k, v in value.items()]}
    return item | {"kind": "json", "text": json.dumps(value, indent=1, sort_keys=True, default=str)}


def check_view(check: CheckResult) -> dict[str, Any]:
    return {
        "check": check.check,
        "title": CHECK_TITLES.get(check.check, check.check),
        "status": check.status,
        "reasons": list(check.reasons),
        "evidence": [evidence_item(k, v) for k, v in check.evidence.items()],
    }


def _not_run(check: str, why: str) -> dict[str, Any]:
    return {
        "check": check,
        "title": CHECK_TITLES.get(check, check),
        "status": "not_run",
        "reasons": [why],
        "evidence": [],
    }


# -- members, requests, the audit trail ----------------------------------------------------


def file_key(package: ResolvedPackage) -> tuple[str, str, str, str]:
    """The decision log's key of a closure member: ecosystem, canonical name, version, sha256."""
    return (*package.key, package.sha256)


def _decision_json(decision: Decision) -> dict[str, str]:
    return {
        "decision": decision.decision,
        "reason": decision.reason,
        "decided_by": decision.decided_by,
        "decided_at": decision.decided_at,
    }


def member_file_key(member: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """``file_key`` of a member as the page holds it."""
    name = canonical_name(member["ecosystem"], member["name"])
    return (member["ecosystem"], name, member["version"], member["sha256"])


def _package_view(package: ResolvedPackage) -> dict[str, Any]:
    return {
        "ecosystem": package.ecosystem,
        "name": package.name,
        "version": package.version,
        "filename": package.filename,
        "url": package.url,
        "sha256": package.sha256,
        "license": package.license,
        "requires": list(package.requires),
        "requested": package.requested,
    }


def member_view(verdict: PackageVerdict, latest: Mapping[tuple, Decision]) -> dict[str, Any]:
    """A vetted member: its checks (every one, a missing one shown as not run), its standing,
    the decision in force, and one recorded since that the next vetting will apply."""
    present = {c.check for c in verdict.checks}
    checks = [check_view(c) for c in verdict.checks]
    checks += [_not_run(c, "not in this vetting") for c in service.CHECKS if c not in present]
    newest = latest.get(file_key(verdict.package))
    recorded = _decision_json(newest) if newest is not None else None
    return _package_view(verdict.package) | {
        "automatic": verdict.automatic,
        "status": verdict.status,
        "decision": verdict.decision,
        "recorded": recorded if recorded and recorded != verdict.decision else None,
        "reviewable": verdict.automatic == "needs_review",
        "checks": checks,
    }


def unvetted_member(package: ResolvedPackage) -> dict[str, Any]:
    checks = [_not_run(c, "the request is not vetted yet") for c in service.CHECKS]
    return _package_view(package) | {
        "automatic": "pending",
        "status": "pending",
        "decision": None,
        "recorded": None,
        "reviewable": False,
        "checks": checks,
    }


def members(
    closure: Closure | None, vetting: RequestVetting | None, latest: Mapping[tuple, Decision]
) -> list[dict[str, Any]]:
    """The request's members: the vetted ones, else the closure's (not vetted yet); those
    waiting for a review first, then the package asked for, then by name."""
    if vetting is not None and vetting.verdicts:
        shown = [member_view(v, latest) for v in vetting.verdicts]
    else:
        shown = [unvetted_member(p) for p in closure.packages] if closure else []
    order = {status: rank for rank, status in enumerate(STATUS_ORDER)}
    return sorted(
        shown, key=lambda m: (order.get(m["status"], 9), not m["requested"], m["name"].lower())
    )


def counts(vetting: RequestVetting | None) -> list[tuple[str, int]]:
    """How many members stand at each status, in the page's order."""
    by_status = Counter(v.status for v in vetting.verdicts) if vetting else Counter()
    return [(s, by_status[s]) for s in STATUS_ORDER if by_status[s]]


def request_row(request: PackageRequest, vetting: RequestVetting | None) -> dict[str, Any]:
    return {
        "id": request.request_id,
        "url": request_path(request.request_id),
        "project": request.project,
        "ecosystem": request.ecosystem,
        "name": request.name,
        "version": request.version or "newest",
        "requested_by": request.requested_by,
        "requested_at": request.requested_at,
        "reason": request.reason,
        "status": vetting.status if vetting else "pending",
        "refusal": vetting.reason if vetting else None,
        "vetted_at": vetting.vetted_at if vetting else None,
        "counts": counts(vetting),
    }


def grouped(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by status, the waiting ones first; oldest request first within a group."""
    rows = list(rows)
    groups = []
    for status in (*STATUS_ORDER, *sorted({r["status"] for r in rows} - set(STATUS_ORDER))):
        members_of = sorted(
            (r for r in rows if r["status"] == status), key=lambda r: (r["requested_at"], r["id"])
        )
        if members_of:
            groups.append(
                {"status": status, "title": STATUS_TITLES.get(status, status), "rows": members_of}
            )
    return groups


def audit_trail(store: PackageStore, files: set[tuple]) -> dict[str, Any]:
    """The decision log's entries about these files, oldest first, and whether the log's chain
    holds (a line edited or removed afterwards breaks it)."""
    decisions = store.decisions
    try:
        entries = [
            _decision_json(e) | _entry_file(e)
            for e in decisions.entries()
            if e.package_key in files
        ]
        broken = [p.removeprefix(f"{decisions.path}: ") for p in decisions.verify_chain()]
    except _UNREADABLE:
        log.warning("packages: the decision log cannot be read")
        return {"entries": [], "broken": ["the decision log cannot be read"]}
    return {"entries": entries, "broken": broken}


def _entry_file(decision: Decision) -> dict[str, str]:
    return {"name": decision.name, "version": decision.version, "sha256": decision.sha256}


# -- the pages ---------------------------------------------------------------------------


class PackagePages:
    """``/staff/packages``: the requests; ``/staff/packages/{id}``: one request and its
    decisions. ``home`` None: the package manager is not set up for this portal."""

    def __init__(self, staff: DpoPages, home: HdhHome | None):
        self.staff, self.home = staff, home

    def routes(self) -> list[Route]:
        return [
            Route("/staff", self.staff_home, methods=["GET"]),
            Route(PACKAGES_PATH, self.list_page, methods=["GET"]),
            Route(PACKAGES_PATH + "/{request_id}", self.request_page, methods=["GET"]),
            Route(PACKAGES_PATH + "/{request_id}/decide", self.decide, methods=["POST"]),
        ]

    def _referent(self, request: Request) -> DpoSession | Response:
        """The referent's session, or what to answer instead (sign-in, 403, not set up)."""
        session = self.staff.require(request, DATA_REFERENT)
        if isinstance(session, DpoSession) and self.home is None:
            return self.staff.message(
                503, "The package manager is not set up for this portal.", session
            )
        return session

    def _store(self) -> PackageStore:
        assert self.home is not None
        return service.package_store(self.home)

    def _unreadable(self, session: DpoSession) -> Response:
        return self.staff.message(
            503,
            "The package manager's files cannot be read right now; try again shortly.",
            session,
        )

    async def staff_home(self, request: Request) -> Response:
        return RedirectResponse(PACKAGES_PATH, 303)

    async def list_page(self, request: Request) -> Response:
        session = self._referent(request)
        if isinstance(session, Response):
            return session
        try:
            rows, load_errors = await run_in_threadpool(self._rows)
        except _UNREADABLE as error:
            log.warning("packages: the requests cannot be read (%s)", type(error).__name__)
            return self._unreadable(session)
        return self.staff.page(
            "staff_packages.html",
            200,
            session,
            title="Package reviews",
            groups=grouped(rows),
            total=len(rows),
            load_errors=load_errors,
        )

    def _rows(self) -> tuple[list[dict[str, Any]], int]:
        """One row per request, and how many request files could not be read."""
        loaded = service.all_requests(self.home)
        vettings = self._store().vettings()
        rows = [request_row(r, vettings.get(i)) for i, r in loaded.requests.items()]
        return rows, len(loaded.errors)

    def _request_state(self, request_id: str) -> dict[str, Any] | None:
        """What the request's page shows, read from the package manager's files; None for an
        unknown request."""
        package_request = service.all_requests(self.home).requests.get(request_id)
        if package_request is None:
            return None
        store = self._store()
        closure, vetting = store.closure(request_id), store.vetting(request_id)
        try:
            latest = store.decisions.latest()
        except _UNREADABLE:  # a damaged log: the page still shows, the audit trail says so
            latest = {}
        listed = members(closure, vetting, latest)
        return {
            "title": f"Package request: {package_request.name}",
            "r": request_row(package_request, vetting),
            "closure": closure,
            "members": listed,
            # Read from the log, not from the redirect: a link cannot claim a decision.
            "awaiting_vetting": sum(1 for m in listed if m["recorded"]),
            "audit": audit_trail(store, {member_file_key(m) for m in listed}),
        }

    async def request_page(self, request: Request, **shown: Any) -> Response:
        session = self._referent(request)
        if isinstance(session, Response):
            return session
        request_id = request.path_params["request_id"]
        try:
            state = await run_in_threadpool(self._request_state, request_id)
        except _UNREADABLE as error:
            log.warning("packages: a request cannot be read (%s)", type(error).__name__)
            return self._unreadable(session)
        if state is None:
            return self.staff.message(404, "No such package request.", session)
        return self.staff.page(
            "staff_package_request.html",
            shown.pop("status_code", 200),
            session,
            decide_url=request_path(request_id) + "/decide",
            reason_max=REASON_MAX,
            **state,
            **shown,
        )

    async def decide(self, request: Request) -> Response:
        session = self._referent(request)
        if isinstance(session, Response):
            return session
        fields = await self.staff.posted(request, session, DECIDE_FIELDS)
        if fields is None:
            return await self.request_page(
                request, status_code=403, error="The form expired; nothing was recorded. Try again."
            )
        verdict = await run_in_threadpool(
            self._decidable, request.path_params["request_id"], fields
        )
        if isinstance(verdict, tuple):
            status_code, error = verdict
            # The reason typed comes back in the member's form, not lost.
            refill = {"sha256": fields.get("sha256", ""), "reason": fields.get("reason", "")}
            return await self.request_page(
                request, status_code=status_code, error=error, refill=refill
            )
        return await self._record(request, session, verdict, fields)

    def _decidable(self, request_id: str, fields: dict[str, str]) -> PackageVerdict | tuple:
        """The member to decide on, or (status code, why this decision is not taken here)."""
        if fields.get("decision") not in DECISIONS:
            return 400, "Choose to approve or to refuse."
        reason = fields.get("reason", "").strip()
        if not reason:
            return 422, "A decision needs a reason: it is recorded in the audit trail."
        if len(reason) > REASON_MAX:
            return 422, f"The reason is too long (at most {REASON_MAX} characters)."
        verdict = self._member(request_id, fields)
        if verdict is None:
            return 409, (
                "This file is not a member of the request's last vetting (it may have been "
                "vetted again since the page was shown): nothing was recorded. Look again."
            )
        if verdict.automatic != "needs_review":
            return 409, "Only the members the checks left for review are decided here."
        return verdict

    def _member(self, request_id: str, fields: dict[str, str]) -> PackageVerdict | None:
        """The member the form names, by name, version and the exact file's hash."""
        try:
            vetting = self._store().vetting(request_id)
        except _UNREADABLE:
            return None
        for verdict in vetting.verdicts if vetting else ():
            package = verdict.package
            if (package.name, package.version, package.sha256) == (
                fields.get("name"),
                fields.get("version"),
                fields.get("sha256"),
            ):
                return verdict
        return None

    async def _record(
        self,
        request: Request,
        session: DpoSession,
        verdict: PackageVerdict,
        fields: dict[str, str],
    ) -> Response:
        """Record through the package manager; the sensor vets the touched requests again."""
        request_id = request.path_params["request_id"]
        assert self.home is not None
        try:
            recorded = await run_in_threadpool(
                lambda: service.decide(
                    self.home,
                    ecosystem=verdict.package.ecosystem,
                    name=verdict.package.name,
                    version=verdict.package.version,
                    decision=fields["decision"],
                    reason=fields["reason"].strip(),
                    decided_by=referent_actor(session),
                    sha256=verdict.package.sha256,
                )
            )
        except (DecisionError, LookupError) as refused:
            return await self.request_page(request, status_code=409, error=str(refused))
        log.info(
            "packages: %s recorded on %d file(s) of request %s",
            fields["decision"],
            len(recorded),
            request_id,
        )
        return RedirectResponse(request_path(request_id), 303)
