"""A small OSV-format vulnerability database for the synthetic upstream: one advisory file each.

The demo and the end-to-end tests vet against it: ``hdh-vulnerable`` 1.0.0 has a critical
advisory fixed in 1.0.1, and the R package ``hdhstats`` gets one only when ``with_r=True`` (what
a database update brings, to show re-vetting flag an approved package).
"""

from __future__ import annotations

import json
from pathlib import Path

CRITICAL_CVSS = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"


def _advisory(vuln_id: str, ecosystem: str, name: str, fixed: str, summary: str) -> dict:
    return {
        "schema_version": "1.6.0",
        "id": vuln_id,
        "modified": "2026-11-01T00:00:00Z",
        "summary": summary,
        "affected": [
            {
                "package": {"ecosystem": ecosystem, "name": name},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}
                ],
            }
        ],
        "severity": [{"type": "CVSS_V3", "score": CRITICAL_CVSS}],
    }


def write_advisories(folder: Path, *, with_r: bool = False) -> list[Path]:
    """Write the database into ``folder`` (replacing what it held); returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.json"):
        old.unlink()
    advisories = [
        _advisory(
            "HDH-2026-0001",
            "PyPI",
            "hdh-vulnerable",
            "1.0.1",
            "hdh-vulnerable executes code from a crafted file",
        )
    ]
    if with_r:
        advisories.append(
            _advisory(
                "HDH-2026-0101",
                "CRAN",
                "hdhstats",
                "9.0.0",
                "hdhstats evaluates formulas read from untrusted files",
            )
        )
    paths = []
    for advisory in advisories:
        path = folder / f"{advisory['id']}.json"
        path.write_text(json.dumps(advisory, indent=1))
        paths.append(path)
    return paths
