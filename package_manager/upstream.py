"""A local upstream Python index: pypiserver over a folder of archives.

What the demo resolves against (and the tests), in place of a PyPI proxy. pypiserver runs in its
own process group and is stopped by the pid it was started with. Its fallback (a redirect of
unknown names to pypi.org) is disabled: an unknown name must be a 404, as on a private upstream,
never a request to the internet.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from package_manager.processes import ServerTimeoutError, answers, stop_process_group, wait_until

PYPI_SERVER = Path(sys.executable).parent / "pypi-server"


@dataclass
class PypiServer:
    """A running pypiserver: its folder, its simple-index URL and its process."""

    folder: Path
    port: int
    process: subprocess.Popen
    description: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple/"

    def stop(self) -> None:
        stop_process_group(self.process)

    def __enter__(self) -> PypiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_pypiserver(
    folder: Path, port: int, description: dict | None = None, seconds: float = 60
) -> PypiServer:
    """Serve ``folder`` on loopback and wait until its simple index answers."""
    if not PYPI_SERVER.is_file():
        raise RuntimeError(f"pypiserver is missing ({PYPI_SERVER}): pip install pypiserver==2.4.2")
    log = folder.with_name(folder.name + "-pypiserver.log")
    command = [str(PYPI_SERVER), "run", "-i", "127.0.0.1", "-p", str(port), "--disable-fallback"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command, str(folder)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    upstream = PypiServer(folder, port, process, description or {})
    try:
        wait_until(
            lambda: answers(upstream.url),
            timeout=seconds,
            what=f"pypi-server on {upstream.url}",
            process=process,
            log=log,
            interval=0.1,
        )
    except ServerTimeoutError:
        upstream.stop()
        raise
    return upstream
