"""The referents' written vetting policy, loaded from a YAML file they edit and review.

Every threshold a check uses comes from here, so a policy change is a reviewed file change, and a
mistake in the file fails loudly with the file and the entry named instead of vetting with defaults.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

LicenceVerdict = Literal["passed", "needs_review", "refused"]

VULNERABILITY_SEVERITIES = ("critical", "high", "medium", "low")
GUARDDOG_SEVERITIES = ("high", "medium", "low")
DEFAULT_POLICY_PATH = Path(__file__).resolve().parents[2] / "workspaces" / "package-policy.yaml"


class PolicyError(ValueError):
    """The policy file is missing, unreadable or has a wrong entry (the message names both)."""


@dataclass(frozen=True)
class LicencePolicy:
    """SPDX ids or shell-style patterns (``GPL-*``), matched case-insensitively."""

    allowed: tuple[str, ...] = ()
    review: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()

    def verdict(self, licence: str) -> LicenceVerdict:
        """One licence key (or ``KEY WITH EXCEPTION``): refused wins, then allowed, else review."""
        if _matches(licence, self.refused):
            return "refused"
        if _matches(licence, self.allowed):
            return "passed"
        return "needs_review"  # listed for review, or unknown to the policy: a person decides

    def mentions(self, licence: str) -> bool:
        """Whether any list names this licence (a ``WITH`` exception is otherwise judged by its base)."""
        return _matches(licence, (*self.allowed, *self.review, *self.refused))


@dataclass(frozen=True)
class Policy:
    """Everything the checks need to decide; ``source`` names the file it came from."""

    licences: LicencePolicy = field(default_factory=LicencePolicy)
    refuse_vulnerability_severities: tuple[str, ...] = ("critical", "high")
    typosquatting_max_distance: int = 1
    guarddog_high_risk_severities: tuple[str, ...] = ("high",)
    guarddog_always_review_rules: tuple[str, ...] = ()
    guarddog_ignored_rules: tuple[str, ...] = ()
    source: str = "<built-in>"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "licences": {
                "allowed": list(self.licences.allowed),
                "review": list(self.licences.review),
                "refused": list(self.licences.refused),
            },
            "vulnerabilities": {"refuse_severities": list(self.refuse_vulnerability_severities)},
            "typosquatting": {"max_distance": self.typosquatting_max_distance},
            "malicious_code": {
                "high_risk_severities": list(self.guarddog_high_risk_severities),
                "always_review_rules": list(self.guarddog_always_review_rules),
                "ignored_rules": list(self.guarddog_ignored_rules),
            },
        }


def _matches(licence: str, patterns: tuple[str, ...]) -> bool:
    folded = licence.casefold()
    return any(fnmatch.fnmatchcase(folded, p.casefold()) for p in patterns)


def _strings(data: dict[str, Any], key: str, where: str, path: Path) -> tuple[str, ...]:
    value = data.get(key, [])
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise PolicyError(
            f"{path}: {where}.{key} must be a list of non-empty strings, got {value!r}"
        )
    return tuple(v.strip() for v in value)


def _section(data: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise PolicyError(f"{path}: {key} must be a mapping, got {value!r}")
    return value


def _choices(
    values: tuple[str, ...], allowed: tuple[str, ...], where: str, path: Path
) -> tuple[str, ...]:
    folded = tuple(v.lower() for v in values)
    for value in folded:
        if value not in allowed:
            raise PolicyError(f"{path}: {where}: {value!r} is not one of {', '.join(allowed)}")
    return folded


KNOWN_SECTIONS = ("licences", "vulnerabilities", "typosquatting", "malicious_code")


def parse_policy(data: Any, path: Path) -> Policy:
    """Validate the YAML document; every error names the file and the entry."""
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: the policy must be a mapping with {', '.join(KNOWN_SECTIONS)}")
    unknown = sorted(set(data) - set(KNOWN_SECTIONS))
    if unknown:
        raise PolicyError(f"{path}: unknown section(s) {', '.join(map(str, unknown))}")
    lic = _section(data, "licences", path)
    for key in lic:
        if key not in ("allowed", "review", "refused"):
            raise PolicyError(f"{path}: licences.{key} is unknown (allowed, review, refused)")
    licences = LicencePolicy(
        allowed=_strings(lic, "allowed", "licences", path),
        review=_strings(lic, "review", "licences", path),
        refused=_strings(lic, "refused", "licences", path),
    )
    if not licences.allowed:
        raise PolicyError(f"{path}: licences.allowed is empty: every package would need review")
    vuln = _section(data, "vulnerabilities", path)
    refuse = _choices(
        _strings(vuln, "refuse_severities", "vulnerabilities", path),
        VULNERABILITY_SEVERITIES,
        "vulnerabilities.refuse_severities",
        path,
    )
    typo = _section(data, "typosquatting", path)
    distance = typo.get("max_distance", 1)
    if not isinstance(distance, int) or isinstance(distance, bool) or not 0 <= distance <= 3:
        raise PolicyError(
            f"{path}: typosquatting.max_distance must be an integer 0..3, got {distance!r}"
        )
    mal = _section(data, "malicious_code", path)
    return Policy(
        licences=licences,
        refuse_vulnerability_severities=refuse,
        typosquatting_max_distance=distance,
        guarddog_high_risk_severities=_choices(
            _strings(mal, "high_risk_severities", "malicious_code", path),
            GUARDDOG_SEVERITIES,
            "malicious_code.high_risk_severities",
            path,
        ),
        guarddog_always_review_rules=_strings(mal, "always_review_rules", "malicious_code", path),
        guarddog_ignored_rules=_strings(mal, "ignored_rules", "malicious_code", path),
        source=str(path),
    )


def load_policy(path: Path | str = DEFAULT_POLICY_PATH) -> Policy:
    """Read and validate the policy file; a missing or malformed file raises ``PolicyError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc
    return parse_policy(data, path)
