"""Names that imitate a popular or already-approved package go to a referent.

Typosquats rely on a slip of the keyboard ("reqeusts"), a dropped separator ("python-dateutil" vs
"pythondateutil") or a look-alike character ("rn" for "m", "0" for "o"). A popular name itself
passes: being near another popular name is the ordinary state of a crowded namespace.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from package_manager.model import CheckResult, Ecosystem, canonical_name

CHECK = "typosquatting"
DATA_DIR = Path(__file__).resolve().parent / "data"
CRAN_POPULAR_FILE = DATA_DIR / "popular-cran.txt"

_SEPARATORS = re.compile(r"[-_.]+")
# Look-alikes folded to one character; "rn" first, since it reads as "m".
_CONFUSABLES = (("rn", "m"), ("vv", "w"), ("0", "o"), ("1", "l"), ("i", "l"), ("5", "s"))


def guarddog_top_pypi_path() -> Path:
    """guarddog's bundled list of the most downloaded PyPI projects, found without importing it.

    Importing guarddog tries to refresh its lists over the network; the file is all we need.
    """
    spec = importlib.util.find_spec("guarddog")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("guarddog is not installed: no popular PyPI names list")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "analyzer" / "metadata" / "resources" / "top_pypi_packages.json"


@cache
def popular_names(ecosystem: Ecosystem) -> frozenset[str]:
    """Popular names, canonical for the ecosystem (PEP 503 for PyPI, exact for CRAN)."""
    if ecosystem == "pypi":
        data = json.loads(guarddog_top_pypi_path().read_text(encoding="utf-8"))
        names: Iterable[str] = data["packages"] if isinstance(data, dict) else data
    else:
        lines = CRAN_POPULAR_FILE.read_text(encoding="utf-8").splitlines()
        names = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return frozenset(canonical_name(ecosystem, n) for n in names)


def damerau_levenshtein(a: str, b: str, limit: int) -> int:
    """Optimal string alignment distance, giving up (returning limit + 1) once it exceeds limit."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1]


def skeleton(name: str) -> str:
    """The name without case, separators or look-alike differences."""
    folded = _SEPARATORS.sub("", name.lower())
    for seen, meant in _CONFUSABLES:
        folded = folded.replace(seen, meant)
    return folded


@dataclass(frozen=True)
class Lookalike:
    name: str
    why: str  # "edit distance 1" or "same name once separators and look-alikes are folded"
    source: str  # "popular" or "approved"


def lookalikes(
    name: str, candidates: Iterable[str], max_distance: int, source: str
) -> list[Lookalike]:
    """Candidates the name could be mistaken for (the name itself excluded)."""
    mine, key = name.lower(), skeleton(name)  # a case-only difference is a look-alike too
    found: list[Lookalike] = []
    for other in candidates:
        if other == name:
            continue
        theirs = other.lower()
        if skeleton(other) == key:
            found.append(
                Lookalike(other, "same name once separators and look-alikes are folded", source)
            )
            continue
        distance = damerau_levenshtein(mine, theirs, max_distance)
        if distance <= max_distance:
            found.append(Lookalike(other, f"edit distance {distance}", source))
    return found


def check_typosquatting(
    ecosystem: Ecosystem,
    name: str,
    popular: Iterable[str],
    approved: Iterable[str],
    max_distance: int,
) -> CheckResult:
    """passed for a popular or approved name, or one far from them all; else needs_review."""
    canonical = canonical_name(ecosystem, name)
    popular_set = {canonical_name(ecosystem, n) for n in popular}
    approved_set = {canonical_name(ecosystem, n) for n in approved}
    evidence: dict[str, object] = {
        "name": canonical,
        "max_distance": max_distance,
        "compared_with": {"popular": len(popular_set), "approved": len(approved_set)},
    }
    # A CRAN name differing only by case ("rcpp") is a look-alike, not the popular package itself.
    if canonical in popular_set or canonical in approved_set:
        which = "popular" if canonical in popular_set else "already approved"
        return CheckResult(CHECK, "passed", (f"{canonical} is itself a {which} package",), evidence)
    found = [
        *lookalikes(canonical, popular_set, max_distance, "popular"),
        *lookalikes(canonical, approved_set - popular_set, max_distance, "approved"),
    ]
    if not found:
        return CheckResult(
            CHECK, "passed", ("no popular or approved package has a similar name",), evidence
        )
    evidence["similar"] = [{"name": f.name, "why": f.why, "list": f.source} for f in found[:20]]
    names = ", ".join(sorted({f.name for f in found})[:5])
    return CheckResult(
        CHECK,
        "needs_review",
        (f"{canonical} looks like {names}: check it is the package the project meant",),
        evidence,
    )
