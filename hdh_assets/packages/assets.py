"""Package assets (group ``packages``): from a member's request to the project's own index.

``package_requests`` (one dynamic partition per request) records who asked for what and why;
``package_closures`` resolves the full dependency closure against the upstream index;
``package_vetting`` vets every member (licence, known vulnerabilities, malicious code,
typosquatting, provenance) and applies the referents' decisions; ``project_package_index``
(one partition per project) serves exactly the approved closures: a devpi constrained index for
Python and a CRAN-like repository for R. The logic lives in :mod:`package_manager`; these are
its thin Dagster wrappers.
"""

import dagster as dg
import polars as pl

from hdh_assets import owners
from hdh_assets.validation import documented_columns
from hdh_assets.workspaces.assets import PROJECTS
from package_manager import service
from package_manager.model import PackageRequest, UpstreamUnavailable
from package_manager.settings import PackageSettings
from package_manager.store import RequestVetting
from resources.platform import HomeResource

REQUESTS = dg.DynamicPartitionsDefinition(name="package_requests")
REQUESTS_KEY = dg.AssetKey(["packages", "package_requests"])
CLOSURES_KEY = dg.AssetKey(["packages", "package_closures"])
VETTING_KEY = dg.AssetKey(["packages", "package_vetting"])
INDEX_KEY = dg.AssetKey(["packages", "project_package_index"])
OWNERS = [owners.PLATFORM, owners.DATA_REFERENTS]
PREVIEW_ROWS = 50
REQUEST_COLUMNS = {
    "project": ("string", "the project asking (its workspace spec id)"),
    "ecosystem": ("string", "pypi or cran"),
    "package": ("string", "the package asked for"),
    "version": ("string", "the exact version asked for, or newest"),
    "reason": ("string", "what the project needs it for"),
    "requested_by": ("string", "the member who asked"),
    "requested_at": ("string", "when (UTC)"),
}
CLOSURE_COLUMNS = {
    "package": ("string", "a member of the closure, as the index spells it"),
    "version": ("string", "the version resolved"),
    "file": ("string", "the exact archive (wheel, sdist or R source package)"),
    "sha256": ("string", "the archive's hash, checked on download"),
    "licence": ("string", "the licence as declared by the archive's metadata"),
    "requested": ("string", "yes for the package asked for, empty for dependencies"),
}
VETTING_COLUMNS = {
    "package": ("string", "a member of the closure"),
    "version": ("string", "its version"),
    "status": ("string", "approved, needs_review or refused (after decisions)"),
    "licence": ("string", "the licence check's status"),
    "vulnerabilities": ("string", "the known-vulnerabilities check's status"),
    "malicious_code": ("string", "the malicious-code check's status"),
    "typosquatting": ("string", "the typosquatting check's status"),
    "provenance": ("string", "the provenance (hash) check's status"),
    "reasons": ("string", "why it is not approved, or the decision taken"),
}
INDEX_COLUMNS = {
    "ecosystem": ("string", "pypi (the devpi index) or cran (the R repository)"),
    "package": ("string", "an approved package the project is served"),
    "version": ("string", "its approved version"),
    "sha256": ("string", "the exact file served"),
    "licence": ("string", "its licence as an SPDX expression"),
    "approved_by": ("string", "every check passed, or the referent who decided and why"),
}


def _request(hdh_home: HomeResource, request_id: str) -> PackageRequest:
    try:
        return service.request_of(hdh_home.home, request_id)
    except LookupError as missing:
        raise dg.Failure(description=str(missing)) from None


def _frame(rows: list[dict], columns: dict[str, tuple[str, str]]) -> pl.DataFrame:
    """What the lake keeps of one partition (every column a string, as documented)."""
    schema = dict.fromkeys(columns, pl.String)
    return pl.DataFrame(
        [{c: None if r.get(c) is None else str(r[c]) for c in columns} for r in rows],
        schema=schema,
    )


def _table(rows: list[dict], columns: list[str]) -> dg.MarkdownMetadataValue:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join(
        "| " + " | ".join(str(row.get(c, "")).replace("|", "/") for c in columns) + " |\n"
        for row in rows[:PREVIEW_ROWS]
    )
    more = f"\n{len(rows) - PREVIEW_ROWS} more rows" if len(rows) > PREVIEW_ROWS else ""
    return dg.MetadataValue.md(head + body + more)


@dg.asset(
    key=REQUESTS_KEY,
    metadata={
        "dagster/column_schema": documented_columns(REQUEST_COLUMNS),
        "partition_column": "request_id",
    },
    group_name="packages",
    owners=OWNERS,
    kinds={"python", "parquet"},
    partitions_def=REQUESTS,
    description=(
        "A project member's request for one Python or R package: project, package, version, "
        "reason, who asked and when. Filed with `hdh packages request` or in the specs "
        "folder's package-requests/ files; one partition per request, added by "
        "package_requests_sensor. The project must have a workspace spec."
    ),
)
def package_requests(context: dg.AssetExecutionContext, hdh_home: HomeResource):
    request = _request(hdh_home, context.partition_key)
    metadata = service.request_metadata(request)
    return dg.Output(_frame([metadata], REQUEST_COLUMNS), metadata=metadata)


@dg.asset(
    key=CLOSURES_KEY,
    metadata={
        "dagster/column_schema": documented_columns(CLOSURE_COLUMNS),
        "partition_column": "request_id",
    },
    group_name="packages",
    owners=OWNERS,
    kinds={"python", "uv", "r"},
    partitions_def=REQUESTS,
    deps=[REQUESTS_KEY],
    description=(
        "The request's full dependency closure for the platform's Python version and platform "
        "tags (uv's resolver against the upstream index), or over Depends, Imports and "
        "LinkingTo of the upstream CRAN-like repository (R's own packages excluded): every "
        "package, version, file, sha256 and where it came from. An unsatisfiable request is "
        "refused with the reason; an unreachable upstream makes the step wait and retry."
    ),
)
def package_closures(context: dg.AssetExecutionContext, hdh_home: HomeResource):
    request = _request(hdh_home, context.partition_key)
    settings = PackageSettings.from_env()
    try:
        closure = service.resolve(request, hdh_home.home, settings)
    except UpstreamUnavailable as down:
        # the request waits and is retried, never decided on partial evidence
        if context.retry_number >= settings.upstream_retries:
            raise dg.Failure(description=f"upstream still unavailable: {down}") from None
        context.log.warning(f"upstream unavailable, retrying: {down}")
        raise dg.RetryRequested(
            max_retries=settings.upstream_retries,
            seconds_to_wait=settings.upstream_retry_seconds,
        ) from down
    rows = [
        {
            "package": p.name,
            "version": p.version,
            "file": p.filename,
            "sha256": p.sha256,
            "licence": p.license or "",
            "requested": "yes" if p.requested else "",
        }
        for p in closure.packages
    ]
    return dg.Output(
        _frame(rows, CLOSURE_COLUMNS),
        metadata={
            "packages": len(closure.packages),
            "refused": closure.error or "",
            "resolver": closure.resolver,
            "target": closure.target,
            "upstream": closure.upstream,
            "closure": _table(rows, list(rows[0]) if rows else ["package"]),
        },
    )


def _vetting_rows(vetting: RequestVetting) -> list[dict]:
    return [
        {
            "package": v.package.name,
            "version": v.package.version,
            "status": v.status,
            **{c.check: c.status for c in v.checks},
            "reasons": "; ".join(v.reasons)[:300],
        }
        for v in vetting.verdicts
    ]


def _vetting_metadata(vetting: RequestVetting) -> dict:
    rows = _vetting_rows(vetting)
    columns = list(rows[0]) if rows else ["package"]
    counts = {s: sum(v.status == s for v in vetting.verdicts) for s in service.STATUSES}
    return {
        "status": vetting.status,
        "reason": vetting.reason or "",
        **{f"packages_{s}": n for s, n in counts.items()},
        "vulnerability_database": vetting.vulnerability_database or "not configured",
        "verdicts": _table(rows, columns),
    }


@dg.asset(
    key=VETTING_KEY,
    metadata={
        "dagster/column_schema": documented_columns(VETTING_COLUMNS),
        "partition_column": "request_id",
    },
    group_name="packages",
    owners=OWNERS,
    kinds={"python", "guarddog", "pip-audit"},
    partitions_def=REQUESTS,
    deps=[CLOSURES_KEY],
    description=(
        "Every member of the request's closure vetted, each check with its evidence: licence "
        "(SPDX expression against the policy file), known vulnerabilities (pip-audit --strict "
        "or OSV queries against the configured database; 'not run' without one), malicious "
        "code (guarddog; the platform's heuristic for R), typosquatting, provenance (a name and "
        "version later served with another hash is refused). What passes everything is "
        "approved; the rest waits for a referent's audited decision. Re-vetted when the "
        "vulnerability database or a decision changes; an approved package that is not any "
        "more is flagged to the projects using it."
    ),
    check_specs=[
        dg.AssetCheckSpec("every_member_fully_vetted", asset=VETTING_KEY),
    ],
)
def package_vetting(context: dg.AssetExecutionContext, hdh_home: HomeResource):
    request = _request(hdh_home, context.partition_key)
    revet = context.run.tags.get(service.REVET_TAG) == "true"
    vetting, flagged = service.vet(request, hdh_home.home, revet=revet)
    for verdict in flagged:
        context.log.warning(
            f"{verdict.package.name} {verdict.package.version} was approved and is now "
            f"{verdict.status}: flagged to project {request.project}"
        )
    incomplete = service.incompletely_vetted(vetting)
    yield dg.Output(
        _frame(_vetting_rows(vetting), VETTING_COLUMNS), metadata=_vetting_metadata(vetting)
    )
    yield dg.AssetCheckResult(
        check_name="every_member_fully_vetted",
        passed=not incomplete,
        metadata={"members": len(vetting.verdicts), "missing_checks": ", ".join(incomplete)},
    )


@dg.asset(
    key=INDEX_KEY,
    metadata={
        "dagster/column_schema": documented_columns(INDEX_COLUMNS),
        "partition_column": "project",
    },
    group_name="packages",
    owners=OWNERS,
    kinds={"devpi", "r"},
    partitions_def=PROJECTS,
    deps=[VETTING_KEY],
    description=(
        "The project's package indexes, serving exactly its approved closures and nothing "
        "else: a devpi-constrained index (final '*' blocks everything unlisted) over the "
        "vetted files, and a CRAN-like repository (tools::write_PACKAGES). Its workspace's "
        "pip and R are configured to these and nothing else. Rebuilt incrementally by "
        "package_requests_sensor when the project's approved set changes."
    ),
    check_specs=[dg.AssetCheckSpec("serves_exactly_the_approved_set", asset=INDEX_KEY)],
)
def project_package_index(context: dg.AssetExecutionContext, hdh_home: HomeResource):
    state = service.publish_project(context.partition_key, hdh_home.home)
    evidence = service.approval_evidence(hdh_home.home)
    rows = [
        {
            "ecosystem": eco,
            "package": p.name,
            "version": p.version,
            "sha256": p.sha256,
            **evidence.get((*p.key, p.sha256), {}),
        }
        for eco, packages in state.approved.items()
        for p in packages
    ]
    yield dg.Output(
        _frame(rows, INDEX_COLUMNS),
        metadata={
            "approved_packages": len(rows),
            "python_index": state.python_url,
            "r_repository": state.r_url,
            "served_now": state.served,
            "approved_set_digest": state.digest,
            "approved": _table(rows, list(INDEX_COLUMNS)),
            "flags": "; ".join(f["message"] for f in state.flags) or "none",
        },
    )
    mismatches = service.served_mismatches(state)
    yield dg.AssetCheckResult(
        check_name="serves_exactly_the_approved_set",
        passed=not mismatches,
        severity=dg.AssetCheckSeverity.ERROR if state.served else dg.AssetCheckSeverity.WARN,
        metadata={"mismatches": "; ".join(mismatches) or "none", "served_now": state.served},
    )


assets = [package_requests, package_closures, package_vetting, project_package_index]
