"""Session fixtures: one synthetic upstream index and one devpi-server for the package tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from package_manager.python_index import DevpiServer
from synthetic.python_packages import build_python_upstream
from tests.dicomweb.servers import free_port
from tests.packages.upstream import Upstream, start_pypiserver

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def python_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """The synthetic archives served by pypiserver (read-only for tests)."""
    folder = tmp_path_factory.mktemp("python-upstream") / "packages"
    description = build_python_upstream(folder)
    upstream = start_pypiserver(folder, description)
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture(scope="session")
def devpi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevpiServer]:
    """A devpi-server with a fresh server directory (no root/pypi mirror)."""
    root = tmp_path_factory.mktemp("devpi")
    with DevpiServer(root / "server", free_port(), log=root / "devpi-server.log") as server:
        yield server


@pytest.fixture
def specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated specs folder: copies of the example projects, no request files."""
    root = tmp_path / "workspaces"
    folder = root / "projects"
    folder.mkdir(parents=True)
    for path in (REPO / "workspaces" / "projects").glob("*.yaml"):
        shutil.copy(path, folder / path.name)
    shutil.copy(REPO / "workspaces" / "approvals.yaml", root / "approvals.yaml")
    monkeypatch.setenv("HDH_WORKSPACE_SPECS", str(folder))
    return folder
