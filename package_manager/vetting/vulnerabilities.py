"""Known vulnerabilities, from a configured OSV-format database, never from silence.

Python packages are audited by pip-audit (``--strict`` so a package it cannot audit fails the run
instead of being skipped). CRAN packages, which pip-audit does not know, are looked up in the same
service and matched with R's version order. No database, or a database that cannot be reached,
gives ``not_run``: an audit that did not happen is never a pass.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests

from package_manager.model import CheckResult, ResolvedPackage, canonical_name
from package_manager.vetting.osv_server import affects, fixed_versions
from package_manager.vetting.policy import Policy

CHECK = "vulnerabilities"
NO_DATABASE = "no vulnerability database configured"
PIP_AUDIT_TIMEOUT = 600

Key = tuple[str, str, str]


class AuditError(RuntimeError):
    """The audit could not be carried out (tool failure, unreachable database)."""


def base_url(osv_source: str) -> str:
    """Accept the service root or pip-audit's query URL (``.../v1/query``)."""
    url = osv_source.rstrip("/")
    return url.removesuffix("/v1/query").removesuffix("/v1")


def pip_audit_command(
    requirements: Path, osv_source: str, cache_dir: Path, output: Path
) -> list[str]:
    """pip-audit 2.10 over exact pins, against the configured OSV service, as JSON."""
    return [
        str(Path(sys.executable).with_name("pip-audit")),
        "--strict",
        "--no-deps",
        "--disable-pip",
        "-r",
        str(requirements),
        "-s",
        "osv",
        "--osv-url",
        f"{base_url(osv_source)}/v1/query",
        "-f",
        "json",
        "-o",
        str(output),
        "--progress-spinner",
        "off",
        "--cache-dir",
        str(cache_dir),
        "--timeout",
        "30",
    ]


def pin_rounds(pins: Iterable[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """pip-audit refuses a name pinned twice in one file: one round per extra version of a name."""
    rounds: list[list[tuple[str, str]]] = []
    seen: dict[str, int] = {}
    for name, version in sorted(set(pins)):
        index = seen.get(canonical_name("pypi", name), 0)
        seen[canonical_name("pypi", name)] = index + 1
        if index == len(rounds):
            rounds.append([])
        rounds[index].append((name, version))
    return rounds


def run_pip_audit(
    pins: Iterable[tuple[str, str]], osv_source: str
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Audit many ``name==version`` pins in as few pip-audit runs as the names allow."""
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for round_pins in pin_rounds(pins):
        results |= _run_pip_audit_once(round_pins, osv_source)
    return results


def _run_pip_audit_once(
    pins: list[tuple[str, str]], osv_source: str
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    with tempfile.TemporaryDirectory(prefix="hdh-pip-audit-") as tmp:
        reqs, output = Path(tmp, "requirements.txt"), Path(tmp, "audit.json")
        reqs.write_text("".join(f"{name}=={version}\n" for name, version in pins), encoding="utf-8")
        command = pip_audit_command(reqs, osv_source, Path(tmp, "cache"), output)
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=PIP_AUDIT_TIMEOUT
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AuditError(f"pip-audit could not run: {exc}") from exc
        # Exit 1 with a report means "vulnerabilities found"; without a report it is a failure.
        if done.returncode not in (0, 1) or not output.exists() or output.stat().st_size == 0:
            lines = (done.stderr or done.stdout or "no output").strip().splitlines()
            raise AuditError(f"pip-audit failed (exit {done.returncode}): {lines[-1][:500]}")
        report = json.loads(output.read_text(encoding="utf-8"))
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for dep in report.get("dependencies", []):
        if dep.get("skip_reason"):
            raise AuditError(f"pip-audit skipped {dep.get('name')}: {dep['skip_reason']}")
        results[(canonical_name("pypi", dep["name"]), dep["version"])] = dep.get("vulns") or []
    missing = [p for p in pins if (canonical_name("pypi", p[0]), p[1]) not in results]
    if missing:
        raise AuditError(
            f"pip-audit reported nothing for {', '.join(f'{n}=={v}' for n, v in missing)}"
        )
    return results


def fetch_advisory(
    osv_source: str, vuln_id: str, session: requests.Session
) -> dict[str, Any] | None:
    """The full advisory (for its severity); None if the service does not have it."""
    try:
        response = session.get(f"{base_url(osv_source)}/v1/vulns/{vuln_id}", timeout=30)
    except requests.RequestException as exc:
        raise AuditError(f"the vulnerability database is unreachable: {exc}") from exc
    if response.status_code == 404:
        return None
    if not response.ok:
        raise AuditError(
            f"the vulnerability database answered {response.status_code} for {vuln_id}"
        )
    return response.json()


def _first_advisory(
    osv_source: str, ids: list[str], session: requests.Session
) -> dict[str, Any] | None:
    """pip-audit may report an alias (a CVE) as the id: try each name the service may file it under."""
    for vuln_id in ids:
        advisory = fetch_advisory(osv_source, vuln_id, session)
        if advisory is not None:
            return advisory
    return None


def query_cran(name: str, osv_source: str, session: requests.Session) -> list[dict[str, Any]]:
    """All advisories the service has for a CRAN package (versions matched by the caller)."""
    body = {"package": {"name": name, "ecosystem": "CRAN"}}
    try:
        response = session.post(f"{base_url(osv_source)}/v1/query", json=body, timeout=30)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise AuditError(f"the vulnerability database is unreachable: {exc}") from exc
    return (response.json() or {}).get("vulns") or []


_CVSS3 = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "UI": {"N": 0.85, "R": 0.62},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
}


def _roundup(value: float) -> float:
    scaled = round(value * 100000)
    return scaled / 100000.0 if scaled % 10000 == 0 else (math.floor(scaled / 10000) + 1) / 10.0


def cvss3_base_score(vector: str) -> float | None:
    """CVSS v3.x base score from its vector (``CVSS:3.1/AV:N/AC:L/...``); None if malformed."""
    try:
        metrics = dict(part.split(":", 1) for part in vector.split("/")[1:])
        changed = metrics["S"] == "C"
        pr = {"N": 0.85, "L": 0.68 if changed else 0.62, "H": 0.5 if changed else 0.27}[
            metrics["PR"]
        ]
        c, i, a = (_CVSS3["C"][metrics[k]] for k in ("C", "I", "A"))
        av, ac, ui = (
            _CVSS3["AV"][metrics["AV"]],
            _CVSS3["AC"][metrics["AC"]],
            _CVSS3["UI"][metrics["UI"]],
        )
    except (KeyError, ValueError):
        return None
    iss = 1 - (1 - c) * (1 - i) * (1 - a)
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if changed else 6.42 * iss
    if impact <= 0:
        return 0.0
    exploitability = 8.22 * av * ac * pr * ui
    total = 1.08 * (impact + exploitability) if changed else impact + exploitability
    return _roundup(min(total, 10.0))


def _rating(score: float) -> str | None:
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low" if score > 0 else None


_LABELS = {
    "critical": "critical",
    "high": "high",
    "moderate": "medium",
    "medium": "medium",
    "low": "low",
}


def advisory_severity(advisory: dict[str, Any] | None) -> str | None:
    """critical/high/medium/low from the advisory's own label or its CVSS v3 vector; else None."""
    if not advisory:
        return None
    labels = [(advisory.get("database_specific") or {}).get("severity")]
    labels += [
        (a.get("ecosystem_specific") or {}).get("severity") for a in advisory.get("affected") or []
    ]
    for label in labels:
        if isinstance(label, str) and label.lower() in _LABELS:
            return _LABELS[label.lower()]
    for entry in advisory.get("severity") or []:
        if str(entry.get("type", "")).startswith("CVSS_V3"):
            score = cvss3_base_score(str(entry.get("score", "")))
            if score is not None:
                return _rating(score)
    return None


def judge(findings: list[dict[str, Any]], policy: Policy, database: str) -> CheckResult:
    """Refused if any finding is at a refusing severity, review for any other, passed for none."""
    evidence = {"database": database, "vulnerabilities": findings}
    if not findings:
        return CheckResult(
            CHECK, "passed", ("no known vulnerability in the configured database",), evidence
        )
    refusing = [f for f in findings if f["severity"] in policy.refuse_vulnerability_severities]
    ids = ", ".join(f["id"] for f in findings)
    fixes = sorted({v for f in findings for v in f["fixed_in"]})
    hint = f"; fixed in {', '.join(fixes)}" if fixes else "; no fixed version known"
    if refusing:
        return CheckResult(
            CHECK,
            "refused",
            (f"known vulnerabilities {ids} ({refusing[0]['severity']}){hint}",),
            evidence,
        )
    return CheckResult(CHECK, "needs_review", (f"known vulnerabilities {ids}{hint}",), evidence)


def not_run(reason: str) -> CheckResult:
    return CheckResult(CHECK, "not_run", (reason,), {})


def check_vulnerabilities_batch(
    packages: list[ResolvedPackage], policy: Policy, osv_source: str | None
) -> dict[Key, CheckResult]:
    """One pip-audit run for all PyPI packages, one service query per CRAN package."""
    if not osv_source:
        return {p.key: not_run(NO_DATABASE) for p in packages}
    results: dict[Key, CheckResult] = {}
    session = requests.Session()
    pypi = [p for p in packages if p.ecosystem == "pypi"]
    if pypi:
        try:
            audited = run_pip_audit(((p.name, p.version) for p in pypi), osv_source)
            advisories: dict[str, dict[str, Any] | None] = {}
            for package in pypi:
                findings = []
                for vuln in audited[(canonical_name("pypi", package.name), package.version)]:
                    if vuln["id"] not in advisories:
                        advisories[vuln["id"]] = _first_advisory(
                            osv_source, [vuln["id"], *(vuln.get("aliases") or [])], session
                        )
                    advisory = advisories[vuln["id"]]
                    findings.append(
                        {
                            "id": vuln["id"],
                            "aliases": vuln.get("aliases") or [],
                            "summary": vuln.get("description") or "",
                            # pip-audit finds fixes only under the canonical name: add the rest
                            "fixed_in": sorted(
                                {
                                    *(vuln.get("fix_versions") or []),
                                    *fixed_versions(advisory or {}, "PyPI", package.name),
                                }
                            ),
                            "severity": advisory_severity(advisory),
                        }
                    )
                results[package.key] = judge(findings, policy, osv_source)
        except AuditError as exc:
            results |= {p.key: not_run(str(exc)) for p in pypi}
    for package in (p for p in packages if p.ecosystem == "cran"):
        try:
            vulns = query_cran(package.name, osv_source, session)
        except AuditError as exc:
            results[package.key] = not_run(str(exc))
            continue
        findings = [
            {
                "id": v["id"],
                "aliases": v.get("aliases") or [],
                "summary": v.get("summary") or v.get("details") or "",
                "fixed_in": fixed_versions(v, "CRAN", package.name),
                "severity": advisory_severity(v),
            }
            for v in vulns
            if not v.get("withdrawn") and affects(v, "CRAN", package.name, package.version)
        ]
        results[package.key] = judge(findings, policy, osv_source)
    return results


def check_vulnerabilities(
    package: ResolvedPackage, policy: Policy, osv_source: str | None
) -> CheckResult:
    return check_vulnerabilities_batch([package], policy, osv_source)[package.key]
