"""The first hash seen for a file is kept; different bytes later are refused, even under races."""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
from pathlib import Path

from package_manager.model import ResolvedPackage
from package_manager.vetting.provenance import ProvenanceLedger, check_provenance

PACKAGE = ResolvedPackage(
    ecosystem="pypi",
    name="Demo_Pkg",
    version="1.0",
    filename="demo_pkg-1.0-py3-none-any.whl",
    url="http://upstream.invalid/demo_pkg-1.0-py3-none-any.whl",
    sha256="a" * 64,
)


def test_first_sight_passes_and_is_recorded(tmp_path: Path) -> None:
    ledger = ProvenanceLedger(tmp_path / "ledger.sqlite")
    assert ledger.first_seen(PACKAGE) is None
    assert check_provenance(PACKAGE, ledger).status == "passed"
    assert ledger.first_seen(PACKAGE) == "a" * 64
    again = check_provenance(PACKAGE, ledger)
    assert again.status == "passed"
    # PEP 503: the same project under another spelling shares the entry
    assert ledger.first_seen(dataclasses.replace(PACKAGE, name="demo-pkg")) == "a" * 64


def test_a_different_hash_later_is_refused_with_both_hashes(tmp_path: Path) -> None:
    ledger = ProvenanceLedger(tmp_path / "ledger.sqlite")
    check_provenance(PACKAGE, ledger)
    changed = dataclasses.replace(PACKAGE, sha256="B" * 64, url="http://mirror.invalid/x.whl")
    result = check_provenance(changed, ledger)
    assert result.status == "refused"
    assert result.evidence["sha256"] == "b" * 64
    assert result.evidence["first_sha256"] == "a" * 64
    assert result.evidence["first_url"] == PACKAGE.url
    # the ledger keeps the first hash: the original file still passes
    assert (
        check_provenance(PACKAGE, ProvenanceLedger(tmp_path / "ledger.sqlite")).status == "passed"
    )


def test_another_file_of_the_same_version_is_its_own_entry(tmp_path: Path) -> None:
    ledger = ProvenanceLedger(tmp_path / "ledger.sqlite")
    check_provenance(PACKAGE, ledger)
    sdist = dataclasses.replace(PACKAGE, filename="demo_pkg-1.0.tar.gz", sha256="c" * 64)
    assert check_provenance(sdist, ledger).status == "passed"


def test_the_downloaded_bytes_must_match_the_announced_hash(tmp_path: Path) -> None:
    archive = tmp_path / PACKAGE.filename
    archive.write_bytes(b"wheel bytes")
    actual = hashlib.sha256(b"wheel bytes").hexdigest()
    ledger = ProvenanceLedger(tmp_path / "ledger.sqlite")
    package = dataclasses.replace(PACKAGE, sha256=actual)
    assert check_provenance(package, ledger, archive).status == "passed"
    archive.write_bytes(b"tampered bytes")
    result = check_provenance(package, ledger, archive)
    assert result.status == "refused"
    assert result.evidence["downloaded_sha256"] == hashlib.sha256(b"tampered bytes").hexdigest()


def test_without_a_ledger_the_check_is_not_run() -> None:
    result = check_provenance(PACKAGE, None)
    assert result.status == "not_run"


def _race(args: tuple[str, str]) -> str:
    ledger_path, sha = args
    package = dataclasses.replace(PACKAGE, sha256=sha)
    return check_provenance(package, ProvenanceLedger(ledger_path)).status


def test_concurrent_writers_agree_on_one_first_hash(tmp_path: Path) -> None:
    """Eight processes race to record different hashes for the same file: exactly one wins."""
    ledger_path = str(tmp_path / "ledger.sqlite")
    ProvenanceLedger(ledger_path)
    hashes = [f"{i:x}" * 64 for i in range(8)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        statuses = pool.map(_race, [(ledger_path, h) for h in hashes])
    assert statuses.count("passed") == 1
    assert statuses.count("refused") == 7
    winner = hashes[statuses.index("passed")]
    assert ProvenanceLedger(ledger_path).first_seen(PACKAGE) == winner
