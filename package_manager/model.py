"""The package manager's vocabulary: requests, closures, checks and verdicts.

Plain frozen dataclasses with ``to_json``/``from_json`` so every stage can be stored as a file,
shown as Dagster metadata and printed by ``hdh packages ... --json`` without a translation layer.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Ecosystem = Literal["pypi", "cran"]
ECOSYSTEMS: tuple[Ecosystem, ...] = ("pypi", "cran")

# A check's outcome. "not_run" is never a pass: a package with a check not run waits for review.
CheckStatus = Literal["passed", "needs_review", "refused", "not_run"]
# A package's (and a request's) standing after vetting and the referents' decisions.
Status = Literal["approved", "needs_review", "refused", "pending"]

_PEP503 = re.compile(r"[-_.]+")


def canonical_name(ecosystem: Ecosystem, name: str) -> str:
    """PyPI names compare by PEP 503 (case and separators folded); CRAN names are exact."""
    return _PEP503.sub("-", name).lower() if ecosystem == "pypi" else name


@dataclass(frozen=True)
class PackageRequest:
    """A project member asks for one package (and, through it, its whole closure)."""

    project: str
    ecosystem: Ecosystem
    name: str
    version: str | None  # None: the newest the resolver finds
    reason: str
    requested_by: str
    requested_at: str  # ISO 8601, UTC

    @property
    def request_id(self) -> str:
        """The Dagster partition key: readable, stable, one per project, package and version."""
        version = self.version or "latest"
        return f"{self.project}--{self.ecosystem}--{canonical_name(self.ecosystem, self.name)}--{version}"

    @property
    def requirement(self) -> str:
        if self.version is None:
            return self.name
        return (
            f"{self.name}=={self.version}"
            if self.ecosystem == "pypi"
            else f"{self.name} ({self.version})"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"request_id": self.request_id}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PackageRequest:
        data = {k: v for k, v in data.items() if k != "request_id"}
        return cls(**data)


@dataclass(frozen=True)
class ResolvedPackage:
    """One member of a closure: exactly which file, from where, with which hash."""

    ecosystem: Ecosystem
    name: str  # as the index spells it
    version: str
    filename: str
    url: str  # where the resolver found the file
    sha256: str
    license: str | None = (
        None  # as declared (metadata License-Expression, License, classifiers, DESCRIPTION)
    )
    requires: tuple[str, ...] = ()  # direct dependencies, names only
    requested: bool = False  # the package asked for (the rest came as dependencies)

    @property
    def key(self) -> tuple[Ecosystem, str, str]:
        return (self.ecosystem, canonical_name(self.ecosystem, self.name), self.version)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["requires"] = list(self.requires)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResolvedPackage:
        return cls(**{**data, "requires": tuple(data.get("requires") or ())})


@dataclass(frozen=True)
class Closure:
    """A request's full dependency closure, or the reason there is none."""

    request_id: str
    ecosystem: Ecosystem
    packages: tuple[ResolvedPackage, ...]
    resolver: str  # e.g. "uv 0.13.9" or "R 4.2.2 tools::package_dependencies"
    target: str  # the Python version and platform tags, or the R version, resolved for
    upstream: str  # the index or repository resolved against
    error: str | None = None  # set when the request cannot be satisfied: it is then refused

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["packages"] = [p.to_json() for p in self.packages]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Closure:
        packages = tuple(ResolvedPackage.from_json(p) for p in data.get("packages") or ())
        return cls(**{**data, "packages": packages})


class UpstreamUnavailable(RuntimeError):
    """The upstream index could not be reached: the request waits and is retried, never decided."""


@dataclass(frozen=True)
class CheckResult:
    """One vetting check on one package, with the evidence a referent needs to decide."""

    check: str  # "licence", "vulnerabilities", "malicious_code", "typosquatting", "provenance"
    status: CheckStatus
    reasons: tuple[str, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status,
            "reasons": list(self.reasons),
            "evidence": self.evidence,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckResult:
        return cls(
            data["check"],
            data["status"],
            tuple(data.get("reasons") or ()),
            data.get("evidence") or {},
        )


def combine(checks: tuple[CheckResult, ...] | list[CheckResult]) -> Status:
    """Refused if any check refuses; approved only if every check passed; otherwise review."""
    statuses = {c.status for c in checks}
    if "refused" in statuses:
        return "refused"
    if statuses <= {"passed"} and statuses:
        return "approved"
    return "needs_review"
