"""Known vulnerabilities: the local OSV service, pip-audit run for real against it, CRAN lookups."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from package_manager.model import ResolvedPackage
from package_manager.vetting.osv_server import (
    OsvServer,
    database_fingerprint,
    in_range,
    r_version_key,
)
from package_manager.vetting.policy import load_policy
from package_manager.vetting.vulnerabilities import (
    NO_DATABASE,
    advisory_severity,
    check_vulnerabilities,
    check_vulnerabilities_batch,
    cvss3_base_score,
)

POLICY = load_policy()

ADVISORIES = {
    "HDH-2026-0001": {
        "schema_version": "1.6.0",
        "id": "HDH-2026-0001",
        "modified": "2026-11-01T00:00:00Z",
        "summary": "hdh-vulnerable executes code from a crafted file",
        "aliases": ["CVE-2026-90001"],
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "hdh-vulnerable"},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.0.1"}]}
                ],
                "versions": ["1.0.0"],
            }
        ],
        "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
    },
    "HDH-2026-0002": {
        "id": "HDH-2026-0002",
        "modified": "2026-11-02T00:00:00Z",
        "summary": "hdh-minor leaks a temporary file name",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "hdh_minor"},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "2.0"}, {"fixed": "2.1"}]}
                ],
            }
        ],
        "database_specific": {"severity": "LOW"},
    },
    "HDH-2026-0003": {
        "id": "HDH-2026-0003",
        "modified": "2026-11-03T00:00:00Z",
        "summary": "hdhR evaluates remote code in read_config()",
        "affected": [
            {
                "package": {"ecosystem": "CRAN", "name": "hdhR"},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "1.0"}, {"fixed": "1.2-10"}]}
                ],
            }
        ],
        "database_specific": {"severity": "HIGH"},
    },
}


def _pkg(ecosystem: str, name: str, version: str) -> ResolvedPackage:
    filename = f"{name}-{version}.tar.gz"
    return ResolvedPackage(
        ecosystem, name, version, filename, f"http://up.invalid/{filename}", "0" * 64
    )  # type: ignore[arg-type]


@pytest.fixture
def osv_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "osv"
    folder.mkdir()
    for vuln_id, advisory in ADVISORIES.items():
        (folder / f"{vuln_id}.json").write_text(json.dumps(advisory))
    return folder


@pytest.fixture
def osv(osv_folder: Path) -> Iterator[OsvServer]:
    with OsvServer(osv_folder) as server:
        yield server


def test_r_versions_compare_numerically() -> None:
    assert r_version_key("1.2-10") > r_version_key("1.2-9")
    assert r_version_key("1.10.0") > r_version_key("1.9.9")
    assert r_version_key("0.9-1") < r_version_key("1.0")
    events = [{"introduced": "1.0"}, {"fixed": "1.2-10"}]
    assert in_range("CRAN", "1.2-9", events)
    assert not in_range("CRAN", "1.2-10", events)
    assert not in_range("CRAN", "0.9-1", events)
    assert in_range("PyPI", "2.0", [{"introduced": "1.0"}, {"last_affected": "2.0"}])
    assert not in_range("PyPI", "2.0.1", [{"introduced": "1.0"}, {"last_affected": "2.0"}])


def test_severity_from_label_or_cvss() -> None:
    assert cvss3_base_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H") == 9.8
    assert cvss3_base_score("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N") == 6.4
    assert cvss3_base_score("CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N") == 1.8
    assert advisory_severity(ADVISORIES["HDH-2026-0001"]) == "critical"
    assert advisory_severity(ADVISORIES["HDH-2026-0002"]) == "low"
    assert advisory_severity({"id": "X"}) is None


def test_fingerprint_changes_with_the_database(osv_folder: Path) -> None:
    first = database_fingerprint(osv_folder)
    assert database_fingerprint(osv_folder) == first
    (osv_folder / "HDH-2026-0002.json").write_text(json.dumps({"id": "HDH-2026-0002"}))
    second = database_fingerprint(osv_folder)
    assert second != first
    (osv_folder / "HDH-2026-0004.json").write_text(json.dumps({"id": "HDH-2026-0004"}))
    assert database_fingerprint(osv_folder) not in (first, second)


def test_the_service_answers_like_osv(osv: OsvServer, osv_folder: Path) -> None:
    def query(body: dict) -> requests.Response:
        return requests.post(osv.query_url, data=json.dumps(body), timeout=10)

    hit = query({"package": {"name": "hdh-vulnerable", "ecosystem": "PyPI"}, "version": "1.0.0"})
    assert [v["id"] for v in hit.json()["vulns"]] == ["HDH-2026-0001"]
    # PEP 503 names, and an empty object when nothing is known (what pip-audit expects)
    assert query(
        {"package": {"name": "HDH_Vulnerable", "ecosystem": "PyPI"}, "version": "1.0.0"}
    ).json()
    assert (
        query(
            {"package": {"name": "hdh-vulnerable", "ecosystem": "PyPI"}, "version": "1.0.1"}
        ).json()
        == {}
    )
    assert query({"package": {"name": "hdhR", "ecosystem": "CRAN"}}).json()["vulns"][0]["id"] == (
        "HDH-2026-0003"
    )
    assert query({"version": "1"}).status_code == 400

    batch = requests.post(
        f"{osv.base_url}/v1/querybatch",
        json={
            "queries": [
                {"package": {"name": "hdh-minor", "ecosystem": "PyPI"}, "version": "2.0.5"},
                {"package": {"name": "hdh-minor", "ecosystem": "PyPI"}, "version": "2.1"},
            ]
        },
        timeout=10,
    ).json()
    assert batch["results"][0]["vulns"][0]["id"] == "HDH-2026-0002"
    assert batch["results"][1] == {}

    assert requests.get(f"{osv.base_url}/v1/vulns/HDH-2026-0001", timeout=10).json()["aliases"]
    assert requests.get(f"{osv.base_url}/v1/vulns/NOPE", timeout=10).status_code == 404

    # the service follows the folder: a new advisory is served without a restart
    osv.app.state.db.recheck_seconds = 0
    advisory = {
        "id": "HDH-2026-0005",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "late"}, "versions": ["0.1"]}],
    }
    (osv_folder / "HDH-2026-0005.json").write_text(json.dumps(advisory))
    late = query({"package": {"name": "late", "ecosystem": "PyPI"}, "version": "0.1"})
    assert late.json()["vulns"][0]["id"] == "HDH-2026-0005"
    health = requests.get(f"{osv.base_url}/health", timeout=10).json()
    assert health["fingerprint"] == database_fingerprint(osv_folder)


def test_the_service_runs_as_a_module(osv_folder: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "package_manager.vetting.osv_server", str(osv_folder)]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
        env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except requests.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert health["advisories"] == 3
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_cran_versions_are_matched_by_the_platform(osv: OsvServer) -> None:
    vulnerable = check_vulnerabilities(_pkg("cran", "hdhR", "1.2-9"), POLICY, osv.query_url)
    assert vulnerable.status == "refused"  # HIGH: refused by the default policy
    assert vulnerable.evidence["vulnerabilities"][0]["fixed_in"] == ["1.2-10"]
    assert check_vulnerabilities(_pkg("cran", "hdhR", "1.2-10"), POLICY, osv.query_url).status == (
        "passed"
    )
    assert check_vulnerabilities(_pkg("cran", "hdhR", "1.10-0"), POLICY, osv.query_url).status == (
        "passed"
    )


def test_without_a_database_the_check_is_not_run() -> None:
    for package in (_pkg("pypi", "hdh-vulnerable", "1.0.0"), _pkg("cran", "hdhR", "1.2-9")):
        result = check_vulnerabilities(package, POLICY, None)
        assert (result.status, result.reasons) == ("not_run", (NO_DATABASE,))


@pytest.mark.slow
def test_pip_audit_flags_the_vulnerable_version_only(osv: OsvServer) -> None:
    """pip-audit itself, run once over all pins, against the local service."""
    packages = [
        _pkg("pypi", "hdh-vulnerable", "1.0.0"),
        _pkg("pypi", "hdh-vulnerable", "1.0.1"),
        _pkg("pypi", "hdh_minor", "2.0.5"),
        _pkg("pypi", "requests", "2.32.3"),
    ]
    started = time.monotonic()
    results = check_vulnerabilities_batch(packages, POLICY, osv.query_url)
    print(f"\npip-audit over {len(packages)} pins: {time.monotonic() - started:.2f}s")

    flagged = results[packages[0].key]
    assert flagged.status == "refused"  # CVSS 9.8: critical
    finding = flagged.evidence["vulnerabilities"][0]
    assert {finding["id"], *finding["aliases"]} == {"HDH-2026-0001", "CVE-2026-90001"}
    assert finding["fixed_in"] == ["1.0.1"]
    assert finding["severity"] == "critical"
    assert "1.0.1" in flagged.reasons[0]

    assert results[packages[1].key].status == "passed"
    minor = results[packages[2].key]
    assert minor.status == "needs_review"  # LOW: below the policy's refusing severities
    assert minor.evidence["vulnerabilities"][0]["fixed_in"] == ["2.1"]
    assert results[packages[3].key].status == "passed"


@pytest.mark.slow
def test_an_unreachable_database_is_not_run_never_passed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/v1/query"
    python = check_vulnerabilities(_pkg("pypi", "hdh-vulnerable", "1.0.0"), POLICY, url)
    assert python.status == "not_run"
    assert "pip-audit failed" in python.reasons[0]
    cran = check_vulnerabilities(_pkg("cran", "hdhR", "1.2-9"), POLICY, url)
    assert cran.status == "not_run"
    assert "unreachable" in cran.reasons[0]
