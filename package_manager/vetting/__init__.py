"""Vetting: every package of a closure through every check, each returning a ``CheckResult``.

Checks: licence, vulnerabilities, malicious_code, typosquatting, provenance. A check that cannot
run (no database, a tool failing, an unexpected error) returns ``not_run``, which ``combine`` never
treats as a pass. The batch form runs the slow tools once per batch: one pip-audit run over all
PyPI pins, one guarddog process over all PyPI archives.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from package_manager.model import CheckResult, Ecosystem, ResolvedPackage, canonical_name
from package_manager.vetting.licence import check_licence, normalise_licence
from package_manager.vetting.malicious import check_malicious, check_malicious_batch
from package_manager.vetting.osv_server import database_fingerprint
from package_manager.vetting.policy import Policy, PolicyError, load_policy
from package_manager.vetting.provenance import ProvenanceLedger, check_provenance
from package_manager.vetting.typosquatting import check_typosquatting, popular_names
from package_manager.vetting.vulnerabilities import check_vulnerabilities_batch

__all__ = [
    "CHECKS",
    "Policy",
    "PolicyError",
    "ProvenanceLedger",
    "VettingContext",
    "database_fingerprint",
    "load_policy",
    "normalise_licence",
    "vet_package",
    "vet_packages",
]

CHECKS = ("licence", "vulnerabilities", "malicious_code", "typosquatting", "provenance")
Key = tuple[Ecosystem, str, str]


@dataclass(frozen=True)
class VettingContext:
    """What the checks need besides the package: the policy and the platform's own state.

    ``osv_source``: the OSV service root or its ``/v1/query`` URL; None means no database (the
    vulnerability check is then ``not_run``). ``popular``: names per ecosystem (default: guarddog's
    top PyPI list and the platform's CRAN list). ``approved``: names already approved per ecosystem.
    ``ledger``: the provenance ledger (None: provenance ``not_run``).
    """

    policy: Policy
    osv_source: str | None = None
    popular: Mapping[Ecosystem, frozenset[str]] = field(default_factory=dict)
    approved: Mapping[Ecosystem, frozenset[str]] = field(default_factory=dict)
    ledger: ProvenanceLedger | None = None

    def popular_names(self, ecosystem: Ecosystem) -> frozenset[str]:
        return self.popular[ecosystem] if ecosystem in self.popular else popular_names(ecosystem)

    def approved_names(self, ecosystem: Ecosystem) -> frozenset[str]:
        names = self.approved.get(ecosystem, frozenset())
        return frozenset(canonical_name(ecosystem, n) for n in names)


def _guarded(check: str, run: Callable[[], CheckResult]) -> CheckResult:
    """A check that crashes is reported as not run, with the error, and never as a pass."""
    try:
        return run()
    except Exception as exc:
        detail = traceback.format_exception_only(exc)[-1].strip()
        return CheckResult(check, "not_run", (f"the check failed: {detail}",), {"error": detail})


def _local_checks(
    package: ResolvedPackage, archive: Path, ctx: VettingContext
) -> dict[str, CheckResult]:
    """The checks that need no external tool."""
    policy = ctx.policy
    return {
        "licence": _guarded("licence", lambda: check_licence(package.license, policy, archive)),
        "typosquatting": _guarded(
            "typosquatting",
            lambda: check_typosquatting(
                package.ecosystem,
                package.name,
                ctx.popular_names(package.ecosystem),
                ctx.approved_names(package.ecosystem),
                policy.typosquatting_max_distance,
            ),
        ),
        "provenance": _guarded(
            "provenance", lambda: check_provenance(package, ctx.ledger, archive)
        ),
    }


def _ordered(results: dict[str, CheckResult]) -> list[CheckResult]:
    return [results[name] for name in CHECKS]


def vet_package(package: ResolvedPackage, archive: Path, ctx: VettingContext) -> list[CheckResult]:
    """Every check on one package and its downloaded archive, in ``CHECKS`` order."""
    results = _local_checks(package, archive, ctx)
    results["vulnerabilities"] = _guarded(
        "vulnerabilities",
        lambda: check_vulnerabilities_batch([package], ctx.policy, ctx.osv_source)[package.key],
    )
    results["malicious_code"] = _guarded(
        "malicious_code", lambda: check_malicious(package, archive, ctx.policy)
    )
    return _ordered(results)


def vet_packages(
    items: list[tuple[ResolvedPackage, Path]], ctx: VettingContext
) -> dict[Key, list[CheckResult]]:
    """Every check on many packages; pip-audit and guarddog run once for the whole batch."""
    packages = [p for p, _ in items]
    try:
        vulns = check_vulnerabilities_batch(packages, ctx.policy, ctx.osv_source)
    except Exception as exc:
        vulns = {p.key: _guarded("vulnerabilities", _raiser(exc)) for p in packages}
    try:
        malicious = check_malicious_batch(items, ctx.policy)
    except Exception as exc:
        malicious = {p.key: _guarded("malicious_code", _raiser(exc)) for p in packages}
    out: dict[Key, list[CheckResult]] = {}
    for package, archive in items:
        results = _local_checks(package, archive, ctx)
        results["vulnerabilities"] = vulns[package.key]
        results["malicious_code"] = malicious[package.key]
        out[package.key] = _ordered(results)
    return out


def _raiser(exc: Exception) -> Callable[[], CheckResult]:
    def run() -> CheckResult:
        raise exc

    return run
