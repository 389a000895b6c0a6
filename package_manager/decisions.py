"""The referents' decisions on packages vetting could not approve on its own: an audit trail.

Each decision is one line appended to ``decisions.jsonl`` (who, when, which exact file by its
sha256, approve or refuse, and why), chained by the hash of the line before it, so a line
edited or removed afterwards is detected (:func:`verify_chain`). The newest decision on a file
wins. A decision is about bytes: the same name and version served later with another hash is a
different file and is vetted afresh.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from package_manager.model import Ecosystem, canonical_name

Verdict = Literal["approve", "refuse"]
GENESIS = "0" * 64


class DecisionError(ValueError):
    """A decision that cannot be recorded; the message says why."""


@dataclass(frozen=True)
class Decision:
    ecosystem: Ecosystem
    name: str  # canonical
    version: str
    sha256: str
    decision: Verdict
    reason: str
    decided_by: str
    decided_at: str
    previous: str = GENESIS  # hash of the line before: the chain

    @property
    def package_key(self) -> tuple[str, str, str, str]:
        return (self.ecosystem, self.name, self.version, self.sha256)


def _line_hash(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()


class DecisionLog:
    """Append-only, locked against concurrent writers (the portal and the CLI)."""

    def __init__(self, path: Path):
        self.path = path

    def record(
        self,
        *,
        ecosystem: Ecosystem,
        name: str,
        version: str,
        sha256: str,
        decision: Verdict,
        reason: str,
        decided_by: str,
    ) -> Decision:
        if decision not in ("approve", "refuse"):
            raise DecisionError(f"decision {decision!r} is neither approve nor refuse")
        if not reason.strip():
            raise DecisionError(f"a decision on {name} {version} needs a reason (it is audited)")
        if not decided_by.strip():
            raise DecisionError("a decision needs the referent who takes it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+") as log:
            fcntl.flock(log, fcntl.LOCK_EX)
            log.seek(0)
            lines = log.read().splitlines()
            previous = _line_hash(lines[-1]) if lines else GENESIS
            entry = Decision(
                ecosystem=ecosystem,
                name=canonical_name(ecosystem, name),
                version=version,
                sha256=sha256,
                decision=decision,
                reason=reason.strip(),
                decided_by=decided_by.strip(),
                decided_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                previous=previous,
            )
            log.write(json.dumps(asdict(entry), sort_keys=True) + "\n")
            log.flush()
        return entry

    def entries(self) -> list[Decision]:
        """Every decision, oldest first; a line that is not one raises, naming it."""
        if not self.path.exists():
            return []
        decisions = []
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            if not line:
                continue
            try:
                decisions.append(Decision(**json.loads(line)))
            except (ValueError, TypeError) as error:
                raise DecisionError(
                    f"{self.path.name}: line {number} is not a decision ({error.__class__.__name__})"
                ) from None
        return decisions

    def latest(self) -> dict[tuple[str, str, str, str], Decision]:
        """The decision in force for each exact file."""
        return {entry.package_key: entry for entry in self.entries()}

    def verify_chain(self) -> list[str]:
        """Lines whose chain link is broken (an earlier line edited or removed); empty if whole."""
        problems, previous = [], GENESIS
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        for number, line in enumerate(lines, start=1):
            if json.loads(line).get("previous") != previous:
                problems.append(f"{self.path}: line {number} does not follow line {number - 1}")
            previous = _line_hash(line)
        return problems
