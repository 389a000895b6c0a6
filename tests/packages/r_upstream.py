"""Helpers of the R package tests: the synthetic upstream served over HTTP, and real R runs.

The upstream is a plain static folder (like any CRAN mirror), served on a free loopback port by
the standard library, recording every path asked for so tests can count downloads.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from package_manager.r_closure import RSCRIPT_MISSING
from tests.dicomweb.servers import free_port


def require_rscript() -> str:
    """Rscript's path; a missing R fails the test with what to install (never a skip)."""
    path = shutil.which("Rscript")
    if path is None:
        pytest.fail(RSCRIPT_MISSING)
    return path


@dataclass
class ServedFolder:
    """A static folder on a loopback port, and the request paths it answered."""

    url: str
    requests: list[str] = field(default_factory=list)


class _RecordingHandler(SimpleHTTPRequestHandler):
    def __init__(self, *args, served: ServedFolder, **kwargs) -> None:
        self.served = served
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: object) -> None:
        self.served.requests.append(self.path)


@contextmanager
def serve_folder(folder: Path) -> Iterator[ServedFolder]:
    """Serve ``folder`` over HTTP until the block ends."""
    port = free_port()
    served = ServedFolder(f"http://127.0.0.1:{port}")
    handler = partial(_RecordingHandler, directory=str(folder), served=served)
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def archive_requests(served: ServedFolder) -> list[str]:
    """The archive downloads among the requests (index fetches left out)."""
    return [path for path in served.requests if path.endswith(".tar.gz")]


def run_r(code: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """R code in a fresh ``Rscript --vanilla`` (no user profile, no site library changes)."""
    return subprocess.run(
        [require_rscript(), "--vanilla", "-e", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


INSTALL_R = """
args <- commandArgs(TRUE)
package <- args[1]; repo <- args[2]; lib <- args[3]
result <- tryCatch({
  install.packages(package, repos = repo, lib = lib, type = "source", quiet = TRUE)
  "returned"
}, warning = function(w) paste("warning:", conditionMessage(w)))
cat("RESULT", result, "\\n")
installed <- package %in% rownames(installed.packages(lib.loc = lib))
cat("INSTALLED", installed, "\\n")
if (installed) {
  library(package, lib.loc = lib, character.only = TRUE)
  cat("VERSION", get(paste0(package, "_version"))(), "\\n")
}
"""


def r_install(package: str, repo_url: str, lib: Path) -> subprocess.CompletedProcess[str]:
    """``install.packages`` of one package from a repository into ``lib``; a warning (how
    install.packages reports a package it cannot install) ends the install and is printed, then
    whether the package is installed and, if it is, the version its loaded code reports."""
    lib.mkdir(parents=True, exist_ok=True)
    return run_r(INSTALL_R, package, repo_url, str(lib))
