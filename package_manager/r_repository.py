"""Per-project CRAN-like repositories holding exactly a project's approved R packages.

A project's R sessions install with ``install.packages(..., repos=<project url>)``: the
repository is the allow-list, so a package is installable if and only if its archive is there.
``set_project`` makes a project's ``src/contrib`` hold exactly the given archives. The index is
written by R (``tools::write_PACKAGES`` the first time, ``update_PACKAGES`` after) in a staging
folder and moved into place after the new archives arrive and before the removed ones go, so at
every moment each archive the index lists is served. Nothing is rewritten when the set has not
changed.

``serve_repositories`` is a read-only static server for ``<project>/src/contrib/<file>`` only:
no directory listings, no other paths, GET and HEAD only.
"""

from __future__ import annotations

import fcntl
import gzip
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from auth.roles import PROJECT_ID
from package_manager.files import file_sha256
from package_manager.r_closure import run_rscript

INDEX_FILES = ("PACKAGES", "PACKAGES.gz", "PACKAGES.rds")
_ARCHIVE_NAME = re.compile(r"^([A-Za-z][A-Za-z0-9.]*[A-Za-z0-9])_([0-9][0-9.-]*)\.tar\.gz$")
# update_PACKAGES reads only the archives the previous index does not describe (by MD5), and
# writes the same index as write_PACKAGES would: 0.3 s instead of 3.9 s for one new archive
# among a thousand.
_INDEX_R = """
args <- commandArgs(TRUE)
if (args[2] == "update") {
  tools::update_PACKAGES(args[1], type = "source", strict = TRUE)
} else invisible(tools::write_PACKAGES(args[1], type = "source"))
"""
_CONTENT_TYPES = {
    "PACKAGES": "text/plain; charset=utf-8",
    "PACKAGES.gz": "application/gzip",
    "PACKAGES.rds": "application/octet-stream",
}


@dataclass(frozen=True)
class RepositoryUpdate:
    """What ``set_project`` changed, and how long the whole rebuild took."""

    project: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    kept: tuple[str, ...]
    index_rewritten: bool
    seconds: float


def check_project(project: str) -> str:
    """Project ids are DNS labels: they name folders and URL segments, never a path."""
    if not PROJECT_ID.match(project):
        raise ValueError(f"not a project id: {project!r}")
    return project


def project_url(base_url: str, project: str) -> str:
    """The ``repos=`` URL of a project's repository (R appends ``/src/contrib``)."""
    return f"{base_url.rstrip('/')}/{check_project(project)}"


def _same_file(a: Path, b: Path) -> bool:
    """Cheap when hardlinked (the usual case), exact otherwise."""
    if a.samefile(b):
        return True
    return a.stat().st_size == b.stat().st_size and file_sha256(a) == file_sha256(b)


def _write_empty_index(folder: Path) -> None:
    """The index of a repository holding nothing; without PACKAGES.rds R reads these."""
    (folder / "PACKAGES").write_bytes(b"")
    (folder / "PACKAGES.gz").write_bytes(gzip.compress(b"", mtime=0))


def _link_or_copy(source: Path, target: Path) -> None:
    """Hardlink (instant, no extra space) or copy across filesystems; atomic at the target."""
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:
        shutil.copyfile(source, partial)
    os.replace(partial, target)


def _state(contrib: Path, names: list[str]) -> str:
    """What the index describes (file identity, size, time): an update interrupted before its
    index was written is finished by the next one, even with the same archives."""
    lines = []
    for name in names:
        stat = (contrib / name).stat()
        lines.append(f"{name}\t{stat.st_ino}\t{stat.st_size}\t{stat.st_mtime_ns}\n")
    return "".join(lines)


def _check_archives(archives: list[Path]) -> dict[str, Path]:
    """Filename -> archive; one version per package (an R library holds one)."""
    by_name: dict[str, Path] = {}
    packages: dict[str, str] = {}
    for archive in archives:
        match = _ARCHIVE_NAME.match(archive.name)
        if match is None:
            raise ValueError(f"not an R source archive name: {archive.name}")
        if not archive.is_file():
            raise FileNotFoundError(archive)
        package = match.group(1)
        if packages.get(package, archive.name) != archive.name:
            raise ValueError(f"two versions of {package}: {packages[package]}, {archive.name}")
        packages[package] = archive.name
        by_name[archive.name] = archive
    return by_name


class RRepositories:
    """The folder of all projects' repositories: ``root/<project>/src/contrib/``."""

    project_url = staticmethod(project_url)

    def __init__(self, root: Path) -> None:
        self.root = root

    def contrib(self, project: str) -> Path:
        return self.root / check_project(project) / "src" / "contrib"

    def archives(self, project: str) -> list[str]:
        """The archive filenames a project's repository serves now."""
        contrib = self.contrib(project)
        return sorted(p.name for p in contrib.glob("*.tar.gz")) if contrib.exists() else []

    def set_project(self, project: str, archives: list[Path]) -> RepositoryUpdate:
        """Make the project's repository serve exactly ``archives`` (incrementally). Two
        updates of one project (two approvals in parallel runs) take turns."""
        started = time.perf_counter()
        wanted = _check_archives(archives)
        contrib = self.contrib(project)
        contrib.mkdir(parents=True, exist_ok=True)
        with (contrib.parent.parent / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._update(project, contrib, wanted, started)

    def _update(
        self, project: str, contrib: Path, wanted: dict[str, Path], started: float
    ) -> RepositoryUpdate:
        present = {p.name: p for p in contrib.glob("*.tar.gz")}
        added, kept = [], []
        for name, source in sorted(wanted.items()):
            if name in present and _same_file(source, present[name]):
                kept.append(name)
                continue
            _link_or_copy(source, contrib / name)
            added.append(name)
        removed = sorted(set(present) - set(wanted))
        indexed = contrib.parent.parent / ".indexed"
        state = _state(contrib, sorted(wanted))
        recorded = indexed.read_text() if indexed.exists() else None
        rewrite = bool(added or removed) or recorded != state
        if rewrite:
            indexed.unlink(missing_ok=True)
            self._write_index(contrib, sorted(wanted))
            indexed.write_text(state)
        for name in removed:
            (contrib / name).unlink(missing_ok=True)
        return RepositoryUpdate(
            project,
            tuple(added),
            tuple(removed),
            tuple(kept),
            rewrite,
            time.perf_counter() - started,
        )

    def _write_index(self, contrib: Path, names: list[str]) -> None:
        """R writes the index over hardlinks of exactly the wanted archives, beside the
        served folder, starting from copies of the served index (R rewrites files in place: a
        hardlink would change the served one); the three files then replace the served ones."""
        staging_root = contrib.parent.parent
        with tempfile.TemporaryDirectory(dir=staging_root, prefix=".index-") as staging:
            stage = Path(staging)
            for name in names:
                _link_or_copy(contrib / name, stage / name)
            previous = all((contrib / index).exists() for index in INDEX_FILES)
            if previous:
                for index in INDEX_FILES:
                    shutil.copyfile(contrib / index, stage / index)
            if names:
                run_rscript(_INDEX_R, [str(stage), "update" if previous else "write"])
            else:  # R writes no index for an empty folder: an empty one says "nothing here"
                _write_empty_index(stage)
            for index in INDEX_FILES:
                if (stage / index).exists():
                    os.replace(stage / index, contrib / index)
                else:
                    (contrib / index).unlink(missing_ok=True)


def _served_file(root: Path, raw_path: str, prefix: str = "") -> Path | None:
    """The file a request path names, if it is a project's archive or index; else None."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(raw_path).path)
    if prefix:
        if not path.startswith(f"{prefix}/"):
            return None
        path = path[len(prefix) :]
    parts = path.split("/")
    if len(parts) != 5 or parts[0] != "" or parts[2:4] != ["src", "contrib"]:
        return None
    project, filename = parts[1], parts[4]
    if not PROJECT_ID.match(project):
        return None
    if filename not in INDEX_FILES and not _ARCHIVE_NAME.match(filename):
        return None
    candidate = root / project / "src" / "contrib" / filename
    try:
        resolved = candidate.resolve(strict=True)
    except OSError:
        return None
    if not resolved.is_relative_to(root.resolve()) or not resolved.is_file():
        return None
    return resolved


def _handler(root: Path, prefix: str) -> type[BaseHTTPRequestHandler]:
    class RepositoryHandler(BaseHTTPRequestHandler):
        """GET and HEAD of project repository files; everything else is refused."""

        server_version = "hdh-r-repository"
        sys_version = ""

        def _answer(self, body: bool) -> None:
            path = _served_file(root, self.path, prefix)
            if path is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            content_type = _CONTENT_TYPES.get(path.name, "application/x-gzip")
            size = path.stat().st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(size))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if body:
                with path.open("rb") as handle:
                    shutil.copyfileobj(handle, self.wfile)

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def _refuse(self) -> None:
            self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
            self.send_header("Allow", "GET, HEAD")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: R fetches three index variants per install, a log line each is noise."""

    return RepositoryHandler


class RepositoryServer:
    """The running server: ``url`` is the base of ``project_url``. Unpacks as
    ``(server, thread)`` and stops at the end of a ``with`` block."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread, url: str) -> None:
        self.server, self.thread, self.url = server, thread, url

    def __iter__(self) -> Iterator[ThreadingHTTPServer | threading.Thread]:
        return iter((self.server, self.thread))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def __enter__(self) -> RepositoryServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_repositories(
    root: Path, host: str = "127.0.0.1", port: int = 0, *, url: str | None = None
) -> RepositoryServer:
    """Serve every project's repository under ``http://host:port/<project>`` from a daemon
    thread. With ``url`` (e.g. ``http://127.0.0.1:8766/cran``) host, port and a path prefix
    come from it, so the published URLs and the server agree."""
    prefix = ""
    if url is not None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the R repositories are served over plain http: {url}")
        host, port, prefix = parts.hostname, parts.port or 80, parts.path.rstrip("/")
    server = ThreadingHTTPServer((host, port), _handler(root, prefix))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="r-repositories", daemon=True)
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    base = url.rstrip("/") if url is not None else f"http://{bound_host}:{bound_port}"
    return RepositoryServer(server, thread, base)
