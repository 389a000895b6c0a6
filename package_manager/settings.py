"""Where the package manager resolves from, what it vets against and where it serves.

``HDH_PYPI_UPSTREAM``: the PEP 503 simple index requests are resolved against (a proxy of PyPI
in production). ``HDH_CRAN_UPSTREAM``: the CRAN-like repository R requests are resolved against.
``HDH_OSV_URL``: an OSV-format vulnerability service; or ``HDH_OSV_EXPORT``: a folder of OSV
advisories (one JSON file each) that the platform serves to its own checks; with neither, the
folder recorded in ``HDH_HOME/packages/settings.json`` (``make demo`` records its own). With
none, the vulnerability check is "not run" and nothing is approved automatically. ``HDH_PACKAGE_POLICY``:
the referents' written policy (default ``workspaces/package-policy.yaml``).
``HDH_DEVPI_URL`` and ``HDH_R_REPOS_URL``: where ``hdh packages serve`` serves the project
indexes (defaults on loopback, ports 3141 and 3142). ``HDH_UPSTREAM_RETRIES`` and
``HDH_UPSTREAM_RETRY_SECONDS`` (5, 60): how often and how far apart a request waiting for an
unreachable upstream is retried before its run fails (nothing is decided meanwhile).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_POLICY = Path("workspaces") / "package-policy.yaml"
DEVPI_PORT = 3141
R_REPOS_PORT = 3142
RECORDED_SETTINGS = Path("packages") / "settings.json"  # inside HDH_HOME


@dataclass(frozen=True)
class PackageSettings:
    pypi_upstream: str | None
    cran_upstream: str | None
    osv_url: str | None
    osv_export: Path | None
    policy_path: Path
    devpi_url: str
    r_repos_url: str
    # An upstream that does not answer: the closure step is retried this often, this far apart.
    upstream_retries: int = 5
    upstream_retry_seconds: float = 60

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PackageSettings:
        env = os.environ if environ is None else environ
        export = env.get("HDH_OSV_EXPORT")
        if not export and not env.get("HDH_OSV_URL"):
            export = recorded_osv_export(env)
        return cls(
            pypi_upstream=env.get("HDH_PYPI_UPSTREAM") or None,
            cran_upstream=env.get("HDH_CRAN_UPSTREAM") or None,
            osv_url=env.get("HDH_OSV_URL") or None,
            osv_export=Path(export).resolve() if export else None,
            policy_path=policy_path(env),
            devpi_url=(env.get("HDH_DEVPI_URL") or f"http://127.0.0.1:{DEVPI_PORT}").rstrip("/"),
            r_repos_url=(env.get("HDH_R_REPOS_URL") or f"http://127.0.0.1:{R_REPOS_PORT}").rstrip(
                "/"
            ),
            upstream_retries=int(env.get("HDH_UPSTREAM_RETRIES") or 5),
            upstream_retry_seconds=float(env.get("HDH_UPSTREAM_RETRY_SECONDS") or 60),
        )

    def upstream(self, ecosystem: str) -> str | None:
        return self.pypi_upstream if ecosystem == "pypi" else self.cran_upstream


def recorded_osv_export(env: Mapping[str, str]) -> str | None:
    """The vulnerability database recorded in the platform's home (``make demo`` records its
    own), so the daemon vets against the same one; None when nothing is recorded."""
    home = Path(env.get("HDH_HOME") or ".hdh").expanduser().resolve()
    recorded = home / RECORDED_SETTINGS
    if not recorded.exists():
        return None
    folder = json.loads(recorded.read_text()).get("osv_export")
    return str(home / folder) if folder else None


def record_osv_export(home_root: Path, folder: Path) -> None:
    """Record a vulnerability database inside the home (a path relative to it)."""
    recorded = home_root / RECORDED_SETTINGS
    recorded.parent.mkdir(parents=True, exist_ok=True)
    relative = folder.resolve().relative_to(home_root.resolve())
    recorded.write_text(json.dumps({"osv_export": str(relative)}, indent=1))


def policy_path(env: Mapping[str, str]) -> Path:
    """``HDH_PACKAGE_POLICY``, else the working directory's, else the repository's policy."""
    configured = env.get("HDH_PACKAGE_POLICY")
    if configured:
        return Path(configured).resolve()
    local = DEFAULT_POLICY.resolve()
    return local if local.exists() else REPOSITORY / DEFAULT_POLICY
