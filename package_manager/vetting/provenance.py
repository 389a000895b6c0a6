"""The first hash ever seen for a file is the one it must keep.

An index that serves different bytes under a name, version and filename already published is either
broken or compromised; either way the package is refused and a person looks at both hashes. The
ledger is an SQLite file so that concurrent Dagster runs record and compare atomically.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from package_manager.files import file_sha256
from package_manager.model import CheckResult, ResolvedPackage, canonical_name

CHECK = "provenance"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS first_seen (
    ecosystem TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    filename TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    url TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    PRIMARY KEY (ecosystem, name, version, filename)
)
"""


class ProvenanceLedger:
    """(ecosystem, name, version, filename) -> the first sha256 seen, where and when."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def record(self, package: ResolvedPackage) -> tuple[str, str, str]:
        """Record the hash if first seen; return (the first hash, its url, when it was seen).

        ``BEGIN IMMEDIATE`` takes the write lock before reading, so two writers racing on the same
        file both end up comparing with whichever hash was committed first.
        """
        key = (
            package.ecosystem,
            canonical_name(package.ecosystem, package.name),
            package.version,
            package.filename,
        )
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT OR IGNORE INTO first_seen VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*key, package.sha256.lower(), package.url, now),
                )
                row = db.execute(
                    "SELECT sha256, url, seen_at FROM first_seen"
                    " WHERE ecosystem=? AND name=? AND version=? AND filename=?",
                    key,
                ).fetchone()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return row[0], row[1], row[2]

    def first_seen(self, package: ResolvedPackage) -> str | None:
        """The recorded hash, without recording anything."""
        key = (
            package.ecosystem,
            canonical_name(package.ecosystem, package.name),
            package.version,
            package.filename,
        )
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT sha256 FROM first_seen WHERE ecosystem=? AND name=? AND version=? AND filename=?",
                key,
            ).fetchone()
        return row[0] if row else None


def check_provenance(
    package: ResolvedPackage, ledger: ProvenanceLedger | None, archive: Path | None = None
) -> CheckResult:
    """passed on first sight or the same hash; refused on a different hash; not_run without ledger.

    With the downloaded archive, its bytes must also match the hash the resolver announced.
    """
    if ledger is None:
        return CheckResult(CHECK, "not_run", ("no provenance ledger configured",), {})
    if not package.sha256:
        return CheckResult(CHECK, "not_run", ("the resolver gave no sha256 for this file",), {})
    if archive is not None:
        actual = file_sha256(archive)
        if actual != package.sha256.lower():
            return CheckResult(
                CHECK,
                "refused",
                (f"the downloaded {package.filename} does not match the index's sha256",),
                {
                    "filename": package.filename,
                    "sha256": package.sha256.lower(),
                    "downloaded_sha256": actual,
                },
            )
    first, first_url, seen_at = ledger.record(package)
    evidence = {
        "filename": package.filename,
        "sha256": package.sha256.lower(),
        "url": package.url,
        "first_sha256": first,
        "first_url": first_url,
        "first_seen_at": seen_at,
    }
    if first == package.sha256.lower():
        return CheckResult(
            CHECK, "passed", (f"{package.filename} has the hash first seen on {seen_at}",), evidence
        )
    return CheckResult(
        CHECK,
        "refused",
        (
            f"{package.filename} changed since {seen_at}: sha256 {package.sha256.lower()} "
            f"differs from the first seen {first}",
        ),
        evidence,
    )
