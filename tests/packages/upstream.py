"""The tests' upstream Python index: the platform's pypiserver helper on a free loopback port."""

from __future__ import annotations

from pathlib import Path

from package_manager.upstream import PypiServer
from package_manager.upstream import start_pypiserver as _start
from tests.dicomweb.servers import free_port

Upstream = PypiServer


def start_pypiserver(
    folder: Path, description: dict | None = None, seconds: float = 60
) -> Upstream:
    """Serve ``folder`` on a port never handed out before in this run."""
    return _start(folder, free_port(), description, seconds)
