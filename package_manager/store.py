"""The package manager's state under ``HDH_HOME/packages``: one folder, plain JSON files.

``requests/`` what members filed, ``closures/`` and ``vetting/`` one file per request,
``files/`` every archive once by its sha256 (the exact bytes vetted are the bytes served),
``decisions.jsonl`` the referents' audited decisions, ``provenance.sqlite`` the first hash seen
of every file, ``flags/`` what a project must hear (an approved package newly vulnerable),
``devpi/`` and ``r-repos/`` the project indexes' data.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from package_manager.decisions import DecisionLog
from package_manager.model import CheckResult, Closure, ResolvedPackage, Status


def write_json(path: Path, data: Any) -> None:
    """Atomically: a reader (the portal, the CLI) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


@dataclass(frozen=True)
class PackageVerdict:
    """One closure member after vetting and the referents' decisions."""

    package: ResolvedPackage
    checks: tuple[CheckResult, ...]
    automatic: Status  # what the checks alone say
    status: Status  # after a referent's decision, if any
    decision: dict | None = None  # the decision in force (who, when, why)

    @property
    def reasons(self) -> list[str]:
        reasons = [r for c in self.checks if c.status != "passed" for r in c.reasons]
        if self.decision:
            reasons.append(
                f"{self.decision['decision']}d by {self.decision['decided_by']}: "
                f"{self.decision['reason']}"
            )
        return reasons

    def to_json(self) -> dict[str, Any]:
        return {
            "package": self.package.to_json(),
            "checks": [c.to_json() for c in self.checks],
            "automatic": self.automatic,
            "status": self.status,
            "decision": self.decision,
            "reasons": self.reasons,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PackageVerdict:
        return cls(
            package=ResolvedPackage.from_json(data["package"]),
            checks=tuple(CheckResult.from_json(c) for c in data["checks"]),
            automatic=data["automatic"],
            status=data["status"],
            decision=data.get("decision"),
        )


@dataclass(frozen=True)
class RequestVetting:
    """A request's standing: refused if its closure could not be computed or any member is
    refused, approved only when every member is, otherwise waiting for a referent."""

    request_id: str
    status: Status
    verdicts: tuple[PackageVerdict, ...] = ()
    reason: str | None = None  # why a request is refused as a whole (no closure)
    vulnerability_database: str | None = None  # fingerprint vetted against
    vetted_at: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "status": self.status,
            "verdicts": [v.to_json() for v in self.verdicts],
            "reason": self.reason,
            "vulnerability_database": self.vulnerability_database,
            "vetted_at": self.vetted_at,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestVetting:
        return cls(
            request_id=data["request_id"],
            status=data["status"],
            verdicts=tuple(PackageVerdict.from_json(v) for v in data.get("verdicts") or ()),
            reason=data.get("reason"),
            vulnerability_database=data.get("vulnerability_database"),
            vetted_at=data.get("vetted_at"),
            extra=data.get("extra") or {},
        )


def _summary(vetting: RequestVetting) -> dict[str, Any]:
    return {
        "status": vetting.status,
        "vetted_at": vetting.vetted_at,
        "inputs": vetting.extra.get("inputs"),
        "members": [{"package": v.package.to_json(), "status": v.status} for v in vetting.verdicts],
    }


class PackageStore:
    def __init__(self, root: Path):
        self.root = root

    @property
    def filed_requests(self) -> Path:
        return self.root / "requests"

    @property
    def files(self) -> Path:
        return self.root / "files"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def decisions(self) -> DecisionLog:
        return DecisionLog(self.root / "decisions.jsonl")

    @property
    def provenance_path(self) -> Path:
        return self.root / "provenance.sqlite"

    @property
    def devpi_dir(self) -> Path:
        return self.root / "devpi"

    @property
    def r_repos(self) -> Path:
        return self.root / "r-repos"

    def _request_file(self, kind: str, request_id: str) -> Path:
        return self.root / kind / f"{request_id}.json"

    # -- closures and vetting, one file per request --
    def save_closure(self, closure: Closure) -> None:
        write_json(self._request_file("closures", closure.request_id), closure.to_json())

    def closure(self, request_id: str) -> Closure | None:
        path = self._request_file("closures", request_id)
        return Closure.from_json(json.loads(path.read_text())) if path.exists() else None

    def save_vetting(self, vetting: RequestVetting) -> None:
        write_json(self._request_file("vetting", vetting.request_id), vetting.to_json())
        with self._summary_lock():
            summaries = self._read_summaries()
            summaries[vetting.request_id] = _summary(vetting)
            write_json(self._summary_path, summaries)

    @property
    def _summary_path(self) -> Path:
        return self.root / "vetting-summary.json"

    @contextlib.contextmanager
    def _summary_lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".vetting-summary.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _read_summaries(self) -> dict[str, dict]:
        if self._summary_path.exists():
            return json.loads(self._summary_path.read_text())
        # first use: built once from the vettings themselves
        return {rid: _summary(v) for rid, v in self.vettings().items()}

    def vetting_summaries(self) -> dict[str, RequestVetting]:
        """Every request's standing and its members' statuses, without the checks' evidence:
        what serving and the sensors need, read from one small file instead of every vetting."""
        return {
            request_id: RequestVetting(
                request_id=request_id,
                status=entry["status"],
                verdicts=tuple(
                    PackageVerdict(
                        ResolvedPackage.from_json(m["package"]), (), m["status"], m["status"]
                    )
                    for m in entry["members"]
                ),
                vetted_at=entry.get("vetted_at"),
                extra={"inputs": entry.get("inputs")},
            )
            for request_id, entry in self._read_summaries().items()
        }

    def vetting(self, request_id: str) -> RequestVetting | None:
        path = self._request_file("vetting", request_id)
        return RequestVetting.from_json(json.loads(path.read_text())) if path.exists() else None

    def vettings(self) -> dict[str, RequestVetting]:
        folder = self.root / "vetting"
        paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
        return {p.stem: RequestVetting.from_json(json.loads(p.read_text())) for p in paths}

    # -- what a project must hear about --
    def flags(self, project: str) -> list[dict]:
        path = self.root / "flags" / f"{project}.json"
        return json.loads(path.read_text()) if path.exists() else []

    def save_flags(self, project: str, flags: list[dict]) -> None:
        write_json(self.root / "flags" / f"{project}.json", flags)
