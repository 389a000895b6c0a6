"""Per-project indexes on devpi-server, end to end with a real pip in a fresh virtualenv.

What matters: a project's pip installs its pinned closure, and nothing else, even a package whose
vetted archive sits in the shared ``root/approved`` pool for another project; no upstream is
reachable through any index; and one approval uploads only what is new.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from package_manager.model import Closure, PackageRequest
from package_manager.python_closure import fetch_archive, resolve_python
from package_manager.python_index import DevpiIndexes, DevpiServer, constraints_text
from synthetic.python_packages import SyntheticPackage, wheel
from tests.packages.upstream import Upstream


def request(name: str, project: str) -> PackageRequest:
    return PackageRequest(project, "pypi", name, None, "analysis", "alice", "2026-12-01T10:00:00Z")


def test_constraints_list_each_pin_then_block_the_rest() -> None:
    text = constraints_text(
        [("HDH_Tabular", "1.1.0"), ("hdh-core", "1.2.0"), ("hdh-core", "1.2.0")]
    )
    assert text == "hdh-core==1.2.0\nhdh-tabular==1.1.0\n*\n"
    assert constraints_text([]) == "*\n"
    with pytest.raises(ValueError, match="hdh-core pinned twice"):
        constraints_text([("hdh-core", "1.2.0"), ("hdh_core", "1.0.0")])


def test_project_names_cannot_escape_the_projects_user() -> None:
    indexes = DevpiIndexes("http://127.0.0.1:9")
    assert indexes.project_url("p-1") == "http://127.0.0.1:9/projects/p-1/+simple/"
    for name in ("../root/approved", "a/b", "", "-x"):
        with pytest.raises(ValueError):
            indexes.project_url(name)


def clean_env(home: Path) -> dict[str, str]:
    """No PIP_* of the machine's: only the project index may be used."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "VIRTUAL_ENV"))}
    return env | {"HOME": str(home), "PIP_CONFIG_FILE": os.devnull}


def pip(venv: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [str(venv / "bin" / "pip"), *args, "--isolated", "--disable-pip-version-check"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def install(venv: Path, index: str, name: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return pip(venv, "install", "--no-cache-dir", "--index-url", index, name, env=env)


def closure_of(name: str, project: str, upstream: Upstream, work: Path) -> Closure:
    closure = resolve_python(request(name, project), upstream.url, work_dir=work)
    assert closure.error is None, closure.error
    return closure


def approve(indexes: DevpiIndexes, closure: Closure, store: Path) -> list[tuple[str, str]]:
    """What the approval step does: upload the exact vetted files, return the pins."""
    for package in closure.packages:
        indexes.upload(fetch_archive(package, store))
    return [(p.name, p.version) for p in closure.packages]


@pytest.mark.slow
def test_layout_is_idempotent_and_reaches_no_upstream(devpi: DevpiServer) -> None:
    with DevpiIndexes(devpi.url) as indexes:
        indexes.ensure_layout()
        indexes.ensure_layout()
        approved = indexes.client.get("/root/approved").json()["result"]
    assert approved["type"] == "stage"
    assert approved["bases"] == []
    assert approved["volatile"] is False
    users = httpx.get(devpi.url + "/", headers={"Accept": "application/json"}).json()["result"]
    assert "pypi" not in users["root"]["indexes"]  # no mirror exists to be reached at all
    assert httpx.get(devpi.url + "/root/approved/+simple/requests/").status_code == 404


@pytest.mark.slow
def test_upload_is_idempotent_and_refuses_other_bytes(devpi: DevpiServer, tmp_path: Path) -> None:
    first_name, first = wheel(SyntheticPackage("hdh-upload-probe", "1.0.0", license="MIT"))
    path = tmp_path / first_name
    path.write_bytes(first)
    with DevpiIndexes(devpi.url) as indexes:
        indexes.ensure_layout()
        assert indexes.upload(path) is True
        assert indexes.upload(path) is False
        _, other = wheel(SyntheticPackage("hdh-upload-probe", "1.0.0", license="BSD-3-Clause"))
        assert other != first
        path.write_bytes(other)
        with pytest.raises(RuntimeError, match="HTTP 409"):
            indexes.upload(path)
    page = httpx.get(devpi.url + "/root/approved/+simple/hdh-upload-probe/").text
    assert hashlib.sha256(first).hexdigest() in page


@pytest.mark.slow
def test_an_expired_login_is_renewed(devpi: DevpiServer, tmp_path: Path) -> None:
    name, data = wheel(SyntheticPackage("hdh-relogin-probe", "1.0.0", license="MIT"))
    path = tmp_path / name
    path.write_bytes(data)
    with DevpiIndexes(devpi.url) as indexes:
        indexes.ensure_layout()
        expired = base64.b64encode(b"root:not-a-valid-token").decode()
        indexes.client.headers["X-Devpi-Auth"] = expired
        assert indexes.upload(path) is True
        assert indexes.client.headers["X-Devpi-Auth"] != expired  # it logged in again
    served = httpx.get(devpi.url + "/root/approved/+simple/hdh-relogin-probe/").text
    link = served.split('href="')[1].split("#")[0]
    content = httpx.get(
        httpx.URL(devpi.url + "/root/approved/+simple/hdh-relogin-probe/").join(link)
    )
    assert content.content == data  # the whole file, also when sent a second time


@pytest.mark.slow
def test_a_project_installs_exactly_its_pins(
    devpi: DevpiServer, python_upstream: Upstream, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    with DevpiIndexes(devpi.url) as indexes:
        indexes.ensure_layout()
        tabular = closure_of("hdh-tabular", "p1", python_upstream, tmp_path / "work")
        pins_p1 = approve(indexes, tabular, store)
        # Vetted for other reasons and in the pool, but pinned by nobody / by project p2 only.
        approve(indexes, closure_of("reqests", "p2", python_upstream, tmp_path / "work"), store)
        pins_p2 = approve(
            indexes, closure_of("hdh-gpl", "p2", python_upstream, tmp_path / "work"), store
        )
        old_core = tmp_path / "hdh_core-1.0.0-py3-none-any.whl"
        old_core.write_bytes((python_upstream.folder / old_core.name).read_bytes())
        indexes.upload(old_core)  # another version of a pinned name is in the pool too
        indexes.set_project("p1", pins_p1)
        indexes.set_project("p2", pins_p2)
        assert indexes.project_pins("p1") == [
            "hdh-core==1.2.0",
            "hdh-numbers==1.0.0",
            "hdh-tabular==1.1.0",
            "*",
        ]
        p1 = indexes.project_url("p1")

    core_files = httpx.get(p1 + "hdh-core/").text  # the pin, not every hdh-core in the pool
    assert "hdh_core-1.2.0-py3-none-any.whl" in core_files
    assert "hdh_core-1.0.0" not in core_files
    pool = httpx.get(devpi.url + "/root/approved/+simple/reqests/")
    assert pool.status_code == 200 and "reqests-2.31.0-py3-none-any.whl" in pool.text
    assert httpx.get(p1 + "reqests/").status_code == 404

    venv = tmp_path / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    env = clean_env(tmp_path / "home")

    installed = install(venv, p1, "hdh-tabular", env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    listed = pip(venv, "list", "--format", "json", env=env)
    versions = {p["name"]: p["version"] for p in json.loads(listed.stdout)}
    assert versions["hdh-tabular"] == "1.1.0"
    assert versions["hdh-numbers"] == "1.0.0"
    assert versions["hdh-core"] == "1.2.0"
    imported = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import hdh_tabular, hdh_core; print(hdh_core.__version__)",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert imported.stdout.strip() == "1.2.0", imported.stderr

    refused = install(venv, p1, "reqests", env)  # in the pool, not pinned for p1
    assert refused.returncode != 0
    assert "No matching distribution found for reqests" in refused.stderr
    other_project = install(venv, p1, "hdh-gpl", env)  # pinned for p2 only
    assert other_project.returncode != 0
    assert "No matching distribution found for hdh-gpl" in other_project.stderr
    other_version = install(venv, p1, "hdh-core==1.0.0", env)  # in the pool, another pin
    assert other_version.returncode != 0
    never = install(venv, p1, "requests", env)  # from no upstream, ever
    assert never.returncode != 0

    p2 = p1.replace("/p1/", "/p2/")
    assert install(venv, p2, "hdh-gpl", env).returncode == 0


@pytest.mark.slow
def test_one_approval_updates_a_project_incrementally(devpi: DevpiServer, tmp_path: Path) -> None:
    """Each approval uploads only the new file (the others are already there, identical) and the
    project serves it at once; benchmarks/packages.py measures how long that takes."""
    with DevpiIndexes(devpi.url) as indexes:
        indexes.ensure_layout()
        pins, paths = [], []
        for i in range(5):
            name, data = wheel(SyntheticPackage(f"hdh-increment-{i}", "1.0.0", license="MIT"))
            path = tmp_path / name
            path.write_bytes(data)
            paths.append(path)
            uploaded = [indexes.upload(p) for p in paths]
            assert uploaded == [False] * i + [True], uploaded
            pins.append((f"hdh-increment-{i}", "1.0.0"))
            indexes.set_project("p-increment", pins)
            page = httpx.get(indexes.project_url("p-increment") + f"hdh-increment-{i}/")
            assert name in page.text
