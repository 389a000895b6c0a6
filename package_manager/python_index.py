"""Per-project Python indexes on devpi-server: one vetted pool, one constrained view per project.

Every vetted archive goes, byte for byte, into ``root/approved``: a non-mirroring stage index with
no bases, so nothing from any upstream can ever be reached through it. Each project gets its own
index ``projects/<project>`` of type ``constrained`` (devpi-constrained) over ``root/approved``;
its constraints are one ``name==version`` line per approved pin and a final ``*`` line, which
hides every name not listed. A project member's pip therefore sees exactly the project's pins, even
though other projects' approved archives sit in the same pool.

devpi-constrained 2.1.0 enforces the ``*`` line (unlisted names are hidden) but not the version of a
listed name whose file names spell it differently (``hdh_core-1.0.0-...whl`` for ``hdh-core``, i.e.
every name with a ``-``): its link filter compares the unnormalised name, stops answering, and devpi
then lets every remaining file through. :func:`serve` runs devpi-server with a corrected filter
in place of the plugin's, so a pin ``hdh-core==1.2.0`` serves no other hdh-core file.

The server is driven through its HTTP API (login, JSON index configuration, multipart upload)
rather than the ``devpi`` client: one approval is one or two small requests.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import httpx
import pkginfo
from packaging.utils import canonicalize_name

from package_manager.processes import (
    ServerTimeoutError,
    answers,
    stop_process_group,
    wait_until,
)

APPROVED = "root/approved"
PROJECTS_USER = "projects"
_PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def devpi_binary(name: str) -> str:
    """A devpi command installed beside this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (pip install devpi-server)")
    return found


class DevpiServer:
    """One devpi-server process over a server directory, started and stopped by its own pid."""

    def __init__(
        self,
        serverdir: Path,
        port: int,
        *,
        host: str = "127.0.0.1",
        root_password: str = "",
        log: Path | None = None,
    ) -> None:
        self.serverdir = serverdir
        self.port = port
        self.host = host
        self.root_password = root_password
        self.log = log or serverdir.with_name(serverdir.name + ".log")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def initialise(self) -> None:
        """``devpi-init`` once: a server directory without ``root/pypi`` (no mirror at all)."""
        if (self.serverdir / ".nodeinfo").exists():
            return
        self.serverdir.mkdir(parents=True, exist_ok=True)
        command = [devpi_binary("devpi-init"), "--serverdir", str(self.serverdir), "--no-root-pypi"]
        command += ["--root-passwd", self.root_password]
        subprocess.run(command, check=True, capture_output=True, env=_server_env())

    def start(self, timeout: float = 90) -> DevpiServer:
        """Start (with exact pins, see :func:`serve`) in its own process group; wait for answers."""
        if self.process is not None and self.process.poll() is None:
            return self
        self.initialise()
        command = [sys.executable, "-m", __name__, "--serverdir", str(self.serverdir)]
        command += ["--host", self.host, "--port", str(self.port), "--offline-mode"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_server_env(),
                start_new_session=True,
            )
        try:
            wait_until(
                lambda: answers(self.url + "/+api"),
                timeout=timeout,
                what=f"devpi-server on {self.url}",
                process=self.process,
                log=self.log,
                interval=0.3,
            )
        except ServerTimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, to the process group this object started (never by name)."""
        process, self.process = self.process, None
        if process is not None:
            stop_process_group(process)

    def __enter__(self) -> DevpiServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _server_env() -> dict[str, str]:
    """The server needs no pip or devpi settings of the machine's."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "DEVPI_"))}


def constraints_text(pins: Iterable[tuple[str, str]]) -> str:
    """One ``name==version`` line per pin (canonical names, sorted), then ``*``: all else hidden."""
    pinned: dict[str, str] = {}
    for name, version in pins:
        key = canonicalize_name(name)
        if pinned.get(key, version) != version:
            raise ValueError(f"{key} pinned twice: {pinned[key]} and {version}")
        pinned[key] = version
    return "".join(f"{name}=={version}\n" for name, version in sorted(pinned.items())) + "*\n"


class DevpiIndexes:
    """The approved pool and the per-project constrained indexes of one devpi-server."""

    def __init__(self, url: str, root_password: str = "", *, timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        self.root_password = root_password
        self.client = httpx.Client(
            base_url=self.url, timeout=timeout, headers={"Accept": "application/json"}
        )
        self._logged_in = False

    def close(self) -> None:
        self.client.close()

    def login(self) -> None:
        """Log in as root; devpi answers with a token sent on later calls as X-Devpi-Auth."""
        response = self.client.post(
            "/+login", json={"user": "root", "password": self.root_password}
        )
        _check(response, "login as root")
        token = response.json()["result"]["password"]
        auth = base64.b64encode(f"root:{token}".encode()).decode()
        self.client.headers["X-Devpi-Auth"] = auth
        self._logged_in = True

    def _call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """One API call as root, logging in again once if the token has expired (after 10 h)."""
        if not self._logged_in:
            self.login()
        response = self.client.request(method, path, **kwargs)
        if response.status_code in (401, 403):
            self.login()
            for upload in (kwargs.get("files") or {}).values():
                upload[1].seek(0)  # the first attempt read the file to its end
            response = self.client.request(method, path, **kwargs)
        return response

    def ensure_layout(self) -> None:
        """``root/approved`` (stage, not volatile, no bases) and the ``projects`` user."""
        wanted = {"type": "stage", "bases": [], "volatile": False}
        current = self._call("GET", f"/{APPROVED}")
        if current.status_code == 404:
            _check(self._call("PUT", f"/{APPROVED}", json=wanted), f"create {APPROVED}")
        else:
            _check(current, f"read {APPROVED}")
            config = current.json()["result"]
            if config.get("type") != "stage" or config.get("bases") or config.get("volatile"):
                _check(self._call("PATCH", f"/{APPROVED}", json=wanted), f"configure {APPROVED}")
        if self._call("GET", f"/{PROJECTS_USER}").status_code == 404:
            secret = base64.b64encode(os.urandom(24)).decode()  # nobody logs in as this user
            user = self._call("PUT", f"/{PROJECTS_USER}", json={"password": secret})
            _check(user, f"create user {PROJECTS_USER}")

    def upload(self, path: Path) -> bool:
        """Upload one vetted archive to ``root/approved``; False when the same bytes were there.

        devpi refuses other bytes under an existing file name (a non-volatile index): that raises.
        """
        info = pkginfo.get_metadata(str(path))
        if info is None or not info.name or not info.version:
            raise ValueError(f"{path.name}: no readable name and version")
        fields = {":action": "file_upload", "name": info.name, "version": info.version}
        with path.open("rb") as content:
            response = self._call(
                "POST",
                f"/{APPROVED}/",
                data=fields,
                files={"content": (path.name, content, "application/octet-stream")},
            )
        _check(response, f"upload {path.name}")
        return "identical file" not in response.text

    def set_project(self, project: str, pins: Iterable[tuple[str, str]]) -> None:
        """Make ``projects/<project>`` serve exactly these pins (the whole list, each time)."""
        self.set_constraints(project, constraints_text(pins).splitlines())

    def set_constraints(self, project: str, lines: Iterable[str]) -> None:
        """The project's constraint lines as given (the last must be ``*``), e.g. several
        approved versions of one name as ``name !=v1,!=v2``."""
        lines = list(lines)
        if not lines or lines[-1] != "*":
            raise ValueError(f"constraints of {project} must end with '*' (all else hidden)")
        index = f"/{PROJECTS_USER}/{_project_name(project)}"
        config = {
            "type": "constrained",
            "bases": [APPROVED],
            "constraints": "\n".join(lines) + "\n",
        }
        response = self._call("PUT", index, json=config)
        if response.status_code == 409:  # exists: replace its configuration
            response = self._call("PATCH", index, json=config)
        _check(response, f"configure {index}")

    def project_pins(self, project: str) -> list[str]:
        """The constraint lines a project's index holds now (for checks and display)."""
        response = self.client.get(f"/{PROJECTS_USER}/{_project_name(project)}")
        _check(response, f"read index of {project}")
        return list(response.json()["result"].get("constraints", []))

    def project_url(self, project: str) -> str:
        """The simple-index URL a project member's pip uses."""
        return project_index_url(self.url, project)

    def server_uuid(self) -> str:
        """The server's id (devpi sends it with every answer): another after a fresh start."""
        response = self.client.get("/+api")
        _check(response, "read the server's id")
        return response.headers.get("X-DEVPI-UUID", self.url)

    def served_names(self, project: str) -> set[str]:
        """The names the project's simple index lists now: what its members can install."""
        response = self.client.get(
            f"/{PROJECTS_USER}/{_project_name(project)}/+simple/", headers={"Accept": "text/html"}
        )
        _check(response, f"read the simple index of {project}")
        return {canonicalize_name(n) for n in re.findall(r">([^<>]+)</a>", response.text)}

    def __enter__(self) -> DevpiIndexes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def project_index_url(devpi_url: str, project: str) -> str:
    return f"{devpi_url.rstrip('/')}/{PROJECTS_USER}/{_project_name(project)}/+simple/"


def devpi_answers(url: str) -> bool:
    """Whether a devpi-server answers at ``url`` (its root answers JSON with a version)."""
    return answers(f"{url.rstrip('/')}/+api", timeout=3)


def _project_name(project: str) -> str:
    if not _PROJECT_NAME.match(project):
        raise ValueError(f"not a usable index name: {project!r}")
    return project


def _check(response: httpx.Response, action: str) -> None:
    if response.status_code >= 400:
        raise RuntimeError(f"devpi: {action}: HTTP {response.status_code}: {response.text[:500]}")


# ---------------------------------------------------------------- devpi-server with exact pins


def _link_matches(link: object, project: str, specifier: object) -> bool:
    """Whether one file link belongs to ``project`` at a version the pin allows."""
    from devpi_common.metadata import splitbasename
    from packaging.version import InvalidVersion, Version

    if isinstance(link, tuple):
        name, version = splitbasename(link[0], checkarch=False)[:2]
    else:
        name, version = link.name, link.version
    if canonicalize_name(name) != canonicalize_name(project):
        return False
    try:
        return Version(version) in specifier
    except InvalidVersion:
        return False


def exact_link_filter(self, project: str, links: Iterable[object]) -> Iterator[bool]:
    """devpi-constrained's link filter, answering once for every link, names compared canonically."""
    constraints = self.constraints
    specifier = constraints.get(project)
    if specifier is None:
        specifier = constraints.get(canonicalize_name(project))
    for link in links:
        if specifier is None:
            yield not constraints.constrain_all
        else:
            yield _link_matches(link, project, specifier)


def serve(argv: list[str]) -> int:
    """devpi-server's own entry point, with the ``constrained`` index type's link filter corrected.

    The plugin's class is patched in this process only (devpi refuses a second class registered
    for the same index type); the index type, its configuration and the stored data are unchanged.
    """
    from devpi_constrained.main import ConstrainedStage
    from devpi_server.main import main

    ConstrainedStage.get_simple_links_filter_iter = exact_link_filter
    return main(["devpi-server", *argv])


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
