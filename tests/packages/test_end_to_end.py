"""Request -> closure -> vetting -> decision -> project index -> install, through Dagster runs.

Everything real: pypiserver and an HTTP CRAN-like repository as upstreams (synthetic archives),
the OSV service over a folder of advisories, uv, pip-audit, guarddog, R, devpi-server with the
constrained index, and the assets run by the platform's instance as package_requests_sensor
would run them. Then a fresh virtual environment's pip and a fresh R install from the project's
indexes: what was approved installs, nothing else does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from hdh_assets.definitions import build_definitions
from hdh_assets.packages.assets import INDEX_KEY, REQUESTS, VETTING_KEY
from hdh_cli.instance import platform_instance
from hdh_cli.main import cli
from hdh_cli.packages import process_here
from package_manager import service
from package_manager.model import UpstreamUnavailable
from package_manager.python_index import DevpiServer
from package_manager.r_repository import serve_repositories
from package_manager.requests import file_request, make_request
from resources.home import HdhHome
from sensors.packages import package_requests_sensor, vulnerability_database_sensor
from synthetic.advisories import write_advisories
from synthetic.r_packages import build_r_upstream
from tests.dicomweb.servers import free_port
from tests.packages.r_upstream import r_install, serve_folder
from tests.packages.test_python_index import clean_env, install
from tests.packages.upstream import Upstream

pytestmark = pytest.mark.slow
PROJECT = "diabetes-outcomes"
OTHER = "cardio-imaging"

# what each request must come to, and a word its reason must hold
EXPECTED = {
    ("pypi", "hdh-tabular", None): ("approved", None),
    ("pypi", "hdh-unknown-licence", None): ("needs_review", "licence"),
    ("pypi", "hdh-setup-fetch", None): ("needs_review", "guarddog"),
    ("pypi", "reqests", None): ("needs_review", "requests"),
    ("pypi", "hdh-vulnerable", "1.0.0"): ("refused", "HDH-2026-0001"),
    ("pypi", "hdh-windows-only", None): ("refused", "no installable file"),
    ("pypi", "hdh-conflict-a", None): ("refused", "unsatisfiable"),
    ("pypi", "hdh-does-not-exist", None): ("refused", "not found"),
    ("pypi", "hdh-tabular", "9.9.9"): ("refused", "no matching version"),
    ("cran", "hdhsurv", None): ("approved", None),
    ("cran", "dplyt", None): ("needs_review", "dplyr"),
    ("cran", "hdhmissingdep", None): ("refused", "hdhnowhere"),
}


@pytest.fixture(scope="module")
def cran_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("cran-upstream")
    build_r_upstream(folder)
    with serve_folder(folder) as served:
        yield served.url


@pytest.fixture
def platform(
    hdh_home: HdhHome,
    python_upstream: Upstream,
    cran_upstream: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict]:
    """The package manager configured like a deployment, its index servers running."""
    osv = tmp_path / "osv"
    write_advisories(osv)
    devpi_port, r_port = free_port(), free_port()
    monkeypatch.setenv("HDH_PYPI_UPSTREAM", python_upstream.url)
    monkeypatch.setenv("HDH_CRAN_UPSTREAM", cran_upstream)
    monkeypatch.setenv("HDH_OSV_EXPORT", str(osv))
    monkeypatch.setenv("HDH_DEVPI_URL", f"http://127.0.0.1:{devpi_port}")
    monkeypatch.setenv("HDH_R_REPOS_URL", f"http://127.0.0.1:{r_port}")
    store = service.package_store(hdh_home)
    with (
        DevpiServer(store.devpi_dir, devpi_port, log=tmp_path / "devpi.log"),
        serve_repositories(store.r_repos, port=r_port),
    ):
        yield {"home": hdh_home, "osv": osv, "store": store}


def _file_all(home: HdhHome, project: str) -> dict[tuple, str]:
    ids = {}
    for ecosystem, name, version in EXPECTED:
        requirement = f"{name}=={version}" if version else name
        filed = make_request(
            project,
            requirement,
            ecosystem=ecosystem,
            reason="needed for the survival analysis",
            requested_by="amina.benali@univ-exemple.fr",
        )
        file_request(filed, service.package_store(home).filed_requests)
        ids[(ecosystem, name, version)] = filed.request_id
    return ids


def _pip_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    return venv


def test_requests_are_vetted_decided_served_and_installed(platform: dict, tmp_path: Path):
    home, store = platform["home"], platform["store"]
    instance = platform_instance(home)
    defs = build_definitions(home)
    ids = _file_all(home, PROJECT)

    # The sensor turns each filed request into a partition and asks for its vetting run.
    tick = package_requests_sensor(dg.build_sensor_context(instance=instance, definitions=defs))
    assert sorted(r.partition_key for r in tick.run_requests) == sorted(ids.values())
    assert set(instance.get_dynamic_partitions(REQUESTS.name)) == set(ids.values())

    processed = process_here(home, instance, sorted(ids.values()), defs=defs)
    assert processed.runs and all(r.success for r in processed.runs), processed.runs
    for key, (status, word) in EXPECTED.items():
        vetting = store.vetting(ids[key])
        assert vetting is not None and vetting.status == status, (key, vetting)
        if word:
            text = json.dumps(vetting.to_json())
            assert word in text, (key, word, text[:2000])
    # every member of every vetted closure went through the five checks
    for vetting in store.vettings().values():
        for verdict in vetting.verdicts:
            assert {c.check for c in verdict.checks} == set(service.CHECKS)

    # The runs are the platform's: materialisations with the evidence as metadata.
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=VETTING_KEY, asset_partitions=[ids[("pypi", "reqests", None)]]
        ),
        limit=1,
    ).records[0]
    metadata = record.asset_materialization.metadata
    assert metadata["status"].value == "needs_review"
    assert "typosquatting" in metadata["verdicts"].value
    index = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=INDEX_KEY, asset_partitions=[PROJECT]), limit=1
    ).records
    assert index, "the project's index was not rebuilt after its requests were approved"
    approved = index[0].asset_materialization.metadata["approved"].value
    assert "hdh-tabular" in approved and "every check passed" in approved and "MIT" in approved

    # A referent approves the package with no licence, with a reason: audited, re-vetted.
    result = CliRunner().invoke(
        cli,
        [
            "packages",
            "approve",
            "hdh-unknown-licence",
            "1.0.0",
            "--reason",
            "licence confirmed by the authors in writing",
            "--by",
            "referent",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert store.vetting(ids[("pypi", "hdh-unknown-licence", None)]).status == "approved"
    decisions = store.decisions.entries()
    assert [(d.name, d.decided_by, d.decision) for d in decisions] == [
        ("hdh-unknown-licence", "referent", "approve")
    ]
    assert store.decisions.verify_chain() == []

    # hdh packages list --json: one entry per member of each closure, with status and reasons
    listed = CliRunner().invoke(cli, ["packages", "list", "--json", "--project", PROJECT])
    rows = json.loads(listed.output)["packages"]
    assert {(r["name"], r["status"]) for r in rows} >= {
        ("hdh-tabular", "approved"),
        ("hdh-numbers", "approved"),
        ("hdh-core", "approved"),
        ("hdh-unknown-licence", "approved"),
        ("reqests", "needs_review"),
        ("hdhsurv", "approved"),
        ("hdhstats", "approved"),
    }
    assert all(
        set(r) >= {"project", "ecosystem", "name", "version", "status", "reasons"} for r in rows
    )

    # The project's Python index serves exactly the approved closures.
    state = service.project_state(PROJECT, home)
    venv = _pip_venv(tmp_path)
    env = clean_env(tmp_path)
    ok = install(venv, state.python_url, "hdh-tabular", env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert install(venv, state.python_url, "hdh-unknown-licence", env).returncode == 0
    for refused in ("reqests", "hdh-vulnerable==1.0.0", "hdh-setup-fetch", "hdh-gpl"):
        failed = install(venv, state.python_url, refused, env)
        assert failed.returncode != 0, f"{refused} installed from the project index"
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import hdh_tabular, hdh_numbers, hdh_core"],
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr

    # And R installs the approved closure from the project's repository, and nothing else.
    lib = tmp_path / "rlib"
    good = r_install("hdhsurv", state.r_url, lib)
    assert "INSTALLED TRUE" in good.stdout, good.stdout + good.stderr
    bad = r_install("dplyt", state.r_url, tmp_path / "rlib2")
    assert "INSTALLED FALSE" in bad.stdout, bad.stdout + bad.stderr

    # Another project asked for nothing: its index serves nothing.
    other = service.publish_project(OTHER, home)
    assert other.served and other.served_python == set()

    # The vulnerability database changes: an approved R package is newly vulnerable.
    write_advisories(platform["osv"], with_r=True)
    revet = vulnerability_database_sensor(
        dg.build_sensor_context(instance=instance, definitions=defs)
    )
    assert {r.tags.get(service.REVET_TAG) for r in revet.run_requests} == {"true"}
    surv = ids[("cran", "hdhsurv", None)]
    assert surv in {r.partition_key for r in revet.run_requests}
    process_here(home, instance, [surv], revet=True, recheck=True, defs=defs)
    assert store.vetting(surv).status == "refused"
    flags = store.flags(PROJECT)
    assert any(f["package"] == "hdhstats" and "HDH-2026-0101" in f["message"] for f in flags), flags
    # and the project's repository no longer offers it
    gone = r_install("hdhsurv", state.r_url, tmp_path / "rlib3")
    assert "INSTALLED FALSE" in gone.stdout, gone.stdout


def test_an_unreachable_upstream_waits_and_decides_nothing(
    hdh_home: HdhHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HDH_PYPI_UPSTREAM", f"http://127.0.0.1:{free_port()}/simple/")
    monkeypatch.setenv("HDH_UPSTREAM_RETRIES", "2")
    monkeypatch.setenv("HDH_UPSTREAM_RETRY_SECONDS", "0")
    filed = make_request(
        PROJECT, "hdh-tabular", ecosystem="pypi", reason="tables", requested_by="amina"
    )
    file_request(filed, service.package_store(hdh_home).filed_requests)
    with pytest.raises(UpstreamUnavailable):
        service.resolve(filed, hdh_home)
    assert service.package_store(hdh_home).closure(filed.request_id) is None
    # through Dagster: the closure step asks to be retried, and no vetting is recorded
    instance = platform_instance(hdh_home)
    instance.add_dynamic_partitions(REQUESTS.name, [filed.request_id])
    defs = build_definitions(hdh_home)
    job = defs.resolve_job_def("vet_package_requests")
    result = job.execute_in_process(
        instance=instance, partition_key=filed.request_id, raise_on_error=False
    )
    assert not result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 2, "the closure step did not wait and retry as configured"
    assert service.package_store(hdh_home).vetting(filed.request_id) is None
